"""Crops for single images and HR/LR pairs (aligned by the scale), and the short-side resize of test sets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidImageError

__all__ = ["center_crop", "mod_crop", "paired_center_crop", "paired_random_crop", "random_crop", "resize_short_side"]


def _check(image: Tensor, size: int, name: str = "image") -> tuple[int, int]:
    if not isinstance(image, Tensor) or image.dim() < 2:
        raise InvalidImageError(f"{name} must be a tensor (..., H, W), got {type(image).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidImageError(f"crop size must be a positive integer, got {size!r}")
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise InvalidImageError(f"{name} is {h}x{w}, smaller than the crop size {size}; use a smaller size or a larger image")
    return h, w


def _offset(generator: torch.Generator | None, extent: int) -> int:
    return int(torch.randint(extent + 1, (), generator=generator, device=generator.device if generator else "cpu"))


def center_crop(image: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window (the top-left pixel is rounded down, as in torchvision)."""
    h, w = _check(image, size)
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size]


def random_crop(image: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A ``size x size`` window at a uniformly random position drawn from ``generator``."""
    h, w = _check(image, size)
    top, left = _offset(generator, h - size), _offset(generator, w - size)
    return image[..., top:top + size, left:left + size]


def mod_crop(image: Tensor, scale: int) -> Tensor:
    """Crop the bottom and right so that both sides are multiples of ``scale`` (BasicSR's ``mod_crop``)."""
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


def _check_pair(hr: Tensor, lr: Tensor, lr_size: int, scale: int) -> tuple[int, int]:
    lh, lw = _check(lr, lr_size, "lr")
    if tuple(hr.shape[-2:]) != (lh * scale, lw * scale):
        raise InvalidImageError(
            f"hr is {hr.shape[-2]}x{hr.shape[-1]} but lr is {lh}x{lw} at scale {scale}; "
            f"hr must be exactly {lh * scale}x{lw * scale} (crop hr with mod_crop or check the scale)"
        )
    return lh, lw


def paired_center_crop(hr: Tensor, lr: Tensor, hr_size: int, scale: int) -> tuple[Tensor, Tensor]:
    """Central crops: ``hr_size`` on the HR and ``hr_size / scale`` on the LR, covering the same region."""
    if hr_size % scale:
        raise InvalidImageError(f"hr_size {hr_size} must be a multiple of scale {scale}")
    lr_size = hr_size // scale
    lh, lw = _check_pair(hr, lr, lr_size, scale)
    top, left = (lh - lr_size) // 2, (lw - lr_size) // 2
    return (hr[..., top * scale:(top + lr_size) * scale, left * scale:(left + lr_size) * scale],
            lr[..., top:top + lr_size, left:left + lr_size])


def paired_random_crop(
    hr: Tensor, lr: Tensor, hr_size: int, scale: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random aligned crops (BasicSR's ``paired_random_crop``): the LR offset is drawn, the HR one is ``scale`` times it."""
    if hr_size % scale:
        raise InvalidImageError(f"hr_size {hr_size} must be a multiple of scale {scale}")
    lr_size = hr_size // scale
    lh, lw = _check_pair(hr, lr, lr_size, scale)
    top, left = _offset(generator, lh - lr_size), _offset(generator, lw - lr_size)
    return (hr[..., top * scale:(top + lr_size) * scale, left * scale:(left + lr_size) * scale],
            lr[..., top:top + lr_size, left:left + lr_size])


def resize_short_side(image: Tensor, size: int) -> Tensor:
    """Resize so that the shorter side is ``size`` (bilinear, no antialiasing: albumentations'
    ``SmallestMaxSize`` with OpenCV's INTER_LINEAR, as ResShift's test-set script), keeping the aspect ratio."""
    if image.dim() != 3 and image.dim() != 4:
        raise InvalidImageError(f"image must be (C, H, W) or (B, C, H, W), got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    short = min(h, w)
    new = (size, round(w * size / short)) if h == short else (round(h * size / short), size)
    batch = image if image.dim() == 4 else image[None]
    out = F.interpolate(batch, size=new, mode="bilinear", align_corners=False).clamp(0, 1)
    return out if image.dim() == 4 else out[0]
