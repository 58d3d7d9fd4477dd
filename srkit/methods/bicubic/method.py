"""Bicubic upsampling (MATLAB ``imresize``), the reference baseline of every SR paper."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...errors import ConfigError
from ...ops.resize import imresize
from ...types import SRMethod
from . import DESCRIPTOR

__all__ = ["Bicubic"]


class Bicubic(SRMethod):
    """MATLAB-compatible bicubic interpolation by an integer ``scale``; no weights, no knobs.

    The module has no parameters; a zero-size non-persistent buffer follows ``.to(device, dtype)``
    so that :attr:`device` and :attr:`dtype` (and thus the computation in :meth:`sr`) follow
    ``srkit.load('bicubic', device=..., dtype=...)``. It is not part of the state dict.
    """

    descriptor = DESCRIPTOR

    def __init__(self, scale: int = 4, antialias: bool = True):
        super().__init__(scale)
        self.antialias = bool(antialias)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        if knobs:
            name = next(iter(knobs))
            raise ConfigError(f"{self.descriptor.name} has no knob {name!r}; it takes no knobs")
        return imresize(lr, scale=self.scale, antialias=self.antialias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, antialias={self.antialias}"
