"""Errors raised by srkit. Every message names the problem and how to fix it."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType


class SrkitError(Exception):
    """Base class of every error srkit raises on purpose."""


class UnknownNameError(SrkitError, KeyError):
    """A registry lookup (method, sampler, degradation, backend) found no such name."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known) or '(none)'}. "
            f"Third-party {kind}s are found through the entry-point group 'srkit.{kind}s'."
        )
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0])


class ConfigError(SrkitError, ValueError):
    """A configuration value or override is invalid."""


class InvalidImageError(SrkitError, ValueError):
    """An input file or tensor is not a usable image."""


class TileError(SrkitError, ValueError):
    """Tiling parameters do not fit the image or the model's size requirements."""


class WeightsNotFoundError(SrkitError, FileNotFoundError):
    """Weights a model needs could not be found; the message says where srkit looked."""


class UnsupportedError(SrkitError, RuntimeError):
    """The requested operation is not supported by this method (dtype, training, steps, ...)."""


class MissingDependencyError(SrkitError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra that brings it."""


def import_optional(module: str, *, extra: str, needed_for: str) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` saying ``pip install "srkit[extra]"``.

    The core install is inference only (pyproject.toml); training, the SD prompt encoder, metrics and plots
    import their packages through this, so a missing one is one line with the fix, not a traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{needed_for} needs the package {module.split('.')[0]!r}, which cannot be imported ({err}); "
            f'install it with: pip install "srkit[{extra}]"'
        ) from None
