"""Strict parsing of a command's options (``srkit bench``, ``calibrate``, ``stability``, ``convert``), before any model
is built: every key of the command's YAML has a parser; a value it does not take, or a key the YAML lacks, is one
:class:`~srkit.errors.ConfigError` line naming the key, the value and what it takes.

Hydra types the command line (``5`` is an int, ``true`` a bool, ``no`` a string), so each parser checks the type as
well as the range: ``runs=abc`` and ``mini=maybe`` are errors, not a string that happens to be truthy.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["NotAllowed", "choice", "flag", "folder", "mapping", "name", "names", "parse_options", "path", "text", "whole"]

_FLAG_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
_HYDRA_KEYS = ("defaults", "hydra")  # Hydra's own keys of a YAML read without Hydra (OmegaConf.load), not options

Parser = Callable[[Any], Any]


class NotAllowed(Exception):
    """A value an option does not take; the message says what it takes."""


def flag(value: Any) -> bool:
    word = str(value).lower() if isinstance(value, (bool, int, str)) else None
    if word not in _FLAG_WORDS:
        raise NotAllowed("true or false (yes/no and 1/0 work too)")
    return _FLAG_WORDS[word]


def whole(minimum: int, *, null: str | None = None, multiple: int = 1) -> Parser:
    """Whole numbers >= ``minimum`` (and multiples of ``multiple``); ``null`` says what null means where it is allowed."""
    allowed = f"a whole number >= {minimum}" + (f", a multiple of {multiple}" if multiple > 1 else "")
    allowed += f", or null ({null})" if null else ""

    def parse(value: Any) -> int | None:
        if value is None and null:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum and value % multiple == 0:
            return value
        raise NotAllowed(allowed)

    return parse


def text(*, null: str | None = None) -> Parser:
    """Non-empty text (names, devices); ``null`` says what null means where it is allowed."""
    allowed = "a non-empty value" + (f", or null ({null})" if null else "")

    def parse(value: Any) -> str | None:
        if value is None and null:
            return None
        if isinstance(value, str) and value.strip():
            return value
        raise NotAllowed(allowed)

    return parse


def path(*, null: str | None = None) -> Parser:
    """A file or folder path (not checked for existence); ``null`` says what null means where it is allowed."""
    allowed = "a file or folder path" + (f", or null ({null})" if null else "")

    def parse(value: Any) -> Path | None:
        if value is None and null:
            return None
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        raise NotAllowed(allowed)

    return parse


def folder(holding: str, *, null: str | None = None) -> Parser:
    """An existing folder (``holding``: what it must hold, for the message); ``null`` as for :func:`path`."""
    as_path = path(null=null)

    def parse(value: Any) -> Path | None:
        found = as_path(value)
        if found is not None and not found.is_dir():
            raise NotAllowed(f"an existing folder holding {holding}" + (f", or null ({null})" if null else "") +
                             f"; {found} is not a folder")
        return found

    return parse


def choice(*values: Any, null: str | None = None) -> Parser:
    """One of ``values`` (compared with their type: ``mini_size=256`` is the int 256)."""
    allowed = " | ".join(map(str, values)) + (f", or null ({null})" if null else "")

    def parse(value: Any) -> Any:
        if value is None and null:
            return None
        if not isinstance(value, bool) and value in values:
            return value
        raise NotAllowed(allowed)

    return parse


def name(kind: str, known: Callable[[], Collection[str]] | None = None) -> Parser:
    """One name; with ``known`` (called only when a value is checked), one of them, with a did-you-mean for a typo."""

    def parse(value: Any) -> str:
        if not (isinstance(value, str) and value.strip()):
            raise NotAllowed(f"a {kind} name")
        if known is not None:
            choices = sorted(known())
            if value not in choices:
                close = difflib.get_close_matches(value, choices, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise NotAllowed(f"one of the {kind}s {', '.join(choices)} ({value!r} is none{hint})")
        return value

    return parse


def names(kind: str, known: Callable[[], Collection[str]] | None = None, *, null: str | None = None,
          least: int = 1) -> Parser:
    """A list of at least ``least`` names, each as :func:`name` checks it; a single name is a list of one."""
    allowed = f"a list of {kind} names, e.g. [a,b]" + (f" (at least {least})" if least > 1 else "")
    allowed += f", or null ({null})" if null else ""
    one = name(kind, known)

    def parse(value: Any) -> list[str] | None:
        if value is None and null:
            return None
        items = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
        if items is None or len(items) < least:
            raise NotAllowed(allowed)
        return [one(item) for item in items]

    return parse


def mapping(value: Any) -> dict[str, Any]:
    """A mapping of keyword arguments (``{}``, or ``{key: value, ...}``), as plain Python."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise NotAllowed("a mapping, e.g. {key: value}")
    return dict(value)


def _as_typed(value: Any) -> str:
    """A config value as it is written on the command line."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def parse_options(command: str, cfg: Mapping[str, Any], parsers: Mapping[str, Parser],
                  composed: Collection[str] = ()) -> dict[str, Any]:
    """Every option of ``srkit <command>`` parsed by its parser; ``composed``: keys that config groups add (checked
    by whoever reads them). A key without a parser is an error with a did-you-mean (``+tiel=64`` after a typo)."""
    known = [*parsers, *composed]
    for key in cfg:
        if key not in known and key not in _HYDRA_KEYS:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"+{key}={_as_typed(cfg[key])}: srkit {command} has no option {key!r}.{hint} "
                              f"(`srkit {command} --help` lists the options)")
    options = {}
    for key, parse in parsers.items():
        value = cfg[key]
        try:
            options[key] = parse(value)
        except NotAllowed as allowed:
            raise ConfigError(f"{key}={_as_typed(value)} is not valid: {key} takes {allowed}") from None
    return options
