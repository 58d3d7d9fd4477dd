"""srkit: diffusion super-resolution methods as interchangeable PyTorch plugins.

>>> import srkit
>>> model = srkit.load("bicubic")
>>> hr = model.sr(lr)  # (B, 3, h, w) in [0, 1] -> (B, 3, 4h, 4w) in [0, 1]
"""

from __future__ import annotations

from . import catalog as _catalog  # noqa: F401  (registers the built-in plugins, as data)
from .errors import (
    ConfigError,
    InvalidImageError,
    MissingDependencyError,
    SrkitError,
    TileError,
    UnknownNameError,
    UnsupportedError,
    WeightsNotFoundError,
)
from .registry import REGISTRIES, build, describe, list_methods, load
from .types import MethodDescriptor, SRMethod

__version__ = "0.1.0"

__all__ = [
    "REGISTRIES", "ConfigError", "InvalidImageError", "MethodDescriptor", "MissingDependencyError", "SRMethod", "SrkitError",
    "TileError", "UnknownNameError", "UnsupportedError", "WeightsNotFoundError", "build", "describe",
    "list_methods", "load",
]
