"""The classic bicubic degradation: MATLAB ``imresize(hr, 1/scale)`` saved as an 8-bit PNG."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError, InvalidImageError
from ..ops.resize import imresize
from ..types import Degradation

__all__ = ["BicubicDownsample"]


class BicubicDownsample(Degradation):
    """HR (..., H, W) in [0, 1] -> LR (..., H / scale, W / scale), as in the papers' test sets.

    The LR is MATLAB's antialiased bicubic downscale, clamped to [0, 1] and, with ``quantize``,
    rounded to 8-bit levels like the LR PNG files the papers distribute (MATLAB's ``im2uint8``
    rounding, half away from zero). Deterministic: ``generator`` is accepted and ignored.
    HR sides must be multiples of ``scale`` (srkit's convention: LR = HR / scale exactly).
    """

    def __init__(self, scale: int = 4, antialias: bool = True, quantize: bool = True):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ConfigError(f"bicubic degradation: scale must be a positive integer, got {scale!r}")
        self.scale = scale
        self.antialias = bool(antialias)
        self.quantize = bool(quantize)

    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(hr, Tensor) or hr.dim() < 2:
            shape = tuple(hr.shape) if isinstance(hr, Tensor) else type(hr).__name__
            raise InvalidImageError(f"bicubic degradation: hr must be a tensor (..., H, W), got {shape}")
        h, w = hr.shape[-2:]
        s = self.scale
        if h % s or w % s:
            raise InvalidImageError(
                f"bicubic degradation: HR size {h}x{w} is not divisible by scale {s}; crop it first, "
                f"e.g. hr[..., :{h - h % s}, :{w - w % s}] (srkit uses LR = HR / scale exactly)"
            )
        lr = imresize(hr, scale=1 / s, size=(h // s, w // s), antialias=self.antialias).clamp(0, 1)
        if self.quantize:
            lr = torch.floor(lr * 255 + 0.5) / 255
        return lr

    def __repr__(self) -> str:
        return f"BicubicDownsample(scale={self.scale}, antialias={self.antialias}, quantize={self.quantize})"
