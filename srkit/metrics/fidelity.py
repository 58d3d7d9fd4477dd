"""Full-reference fidelity: PSNR and SSIM on the Y channel, with the papers' conventions.

The conventions are those of pyiqa's ``psnr``/``ssim`` with ``test_y_channel=True,
color_space='ycbcr'`` (what InvSR's and CCSR's evaluation scripts call), so values equal pyiqa's:

* Y is BT.601 limited range, as MATLAB's ``rgb2ycbcr``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``
  with RGB in [0, 1], i.e. Y in [16, 235] on the 0..255 scale.
* PSNR: Y / 255 in [0, 1] (not rounded), ``10 log10(1 / (MSE + 1e-8))`` per image.
* SSIM: Y rounded to integers in 0..255 (MATLAB's uint8 Y), 11x11 Gaussian window sigma 1.5,
  'valid' filtering (no padding), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, no downsampling
  (pyiqa's ``downsample=False`` default; Wang et al.'s MATLAB script downsamples, pyiqa does not),
  negative contrast-structure terms clamped to 0 as pyiqa does. BasicSR's ``calculate_ssim``
  differs in not rounding Y and not clamping.
* SSIM of the original definition (Wang et al. 2004, their MATLAB ``ssim_index`` on a grey image; pyiqa's
  ``ssim`` default ``color_space='yiq'``): ``color="yiq"`` measures it on the full-range luma
  ``0.299 R + 0.587 G + 0.114 B`` (0..255, rounded) instead of the limited-range BT.601 Y; the two differ by up
  to ~0.035 on real SR outputs, so a table says which it means (metric names ``ssim`` and ``ssim-yiq``;
  ``ssim-yiq`` does not clamp the contrast-structure term, as Wang et al.; pyiqa's default clamps it, ~1e-4 apart).
* ``crop_border`` pixels are removed from every side before measuring (crop = scale in the papers'
  tables, BasicSR's convention; CCSR crops 4, InvSR crops 0).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import InvalidImageError
from ..types import check_image_tensor

# MATLAB rgb2ycbcr, Y row, for RGB in [0, 1] -> Y in [16, 235].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
# NTSC YIQ, Y row (= ITU-R BT.601 luma, full range): Wang et al.'s grey conversion, pyiqa's color_space='yiq'.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
SSIMColor = Literal["ycbcr", "yiq", "rgb"]
_PSNR_EPS = 1e-8  # pyiqa's guard against log(inf) for identical images


def rgb_to_y(rgb: Tensor) -> Tensor:
    """BT.601 limited-range luma (MATLAB ``rgb2ycbcr``) of (B, 3, H, W) RGB in [0, 1], on the 0..255 scale."""
    weights = rgb.new_tensor(_Y_WEIGHTS).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True) + _Y_OFFSET


def _pair(sr: Tensor, hr: Tensor, crop_border: int) -> tuple[Tensor, Tensor]:
    """Validate an (SR, HR) pair, give both a batch axis, cast to float64 and crop the border."""
    sr = check_image_tensor(sr, name="sr")
    hr = check_image_tensor(hr, name="hr")
    if sr.shape != hr.shape:
        raise InvalidImageError(
            f"sr has shape {tuple(sr.shape)} but hr has {tuple(hr.shape)}; full-reference metrics need "
            "equal sizes: crop the HR to scale * LR size (srkit.data pairs are already aligned)"
        )
    if crop_border < 0 or 2 * crop_border >= min(sr.shape[-2:]):
        raise InvalidImageError(
            f"crop_border={crop_border} leaves nothing of a {sr.shape[-2]}x{sr.shape[-1]} image; "
            "use crop_border=scale (the papers' convention) or 0"
        )
    if crop_border:
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    return sr.double(), hr.double()


def psnr(sr: Tensor, hr: Tensor, *, crop_border: int = 4, y_channel: bool = True) -> Tensor:
    """PSNR in dB per image, shape (B,), of images in [0, 1] (on Y by default; RGB if ``y_channel=False``)."""
    sr, hr = _pair(sr, hr, crop_border)
    if y_channel:
        sr, hr = rgb_to_y(sr) / 255, rgb_to_y(hr) / 255
    mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / (mse + _PSNR_EPS))


def gaussian_window(size: int = 11, sigma: float = 1.5, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Normalised 1-D Gaussian; its outer product with itself is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(sr: Tensor, hr: Tensor, *, crop_border: int = 4, color: SSIMColor = "ycbcr", clamp_contrast: bool = True) -> Tensor:
    """SSIM per image, shape (B,), of images in [0, 1] (Wang et al. 2004), on the rounded 0..255 luma of ``color``:
    ``"ycbcr"`` (the SR papers' BT.601 limited-range Y, default), ``"yiq"`` (the original definition's full-range
    luma), or ``"rgb"`` (per RGB channel on the 0..255 scale, averaged). ``clamp_contrast``: negative
    contrast-structure terms count as 0, as pyiqa computes it; the original definition does not clamp."""
    sr, hr = _pair(sr, hr, crop_border)
    if color == "ycbcr":
        sr, hr = rgb_to_y(sr).round(), rgb_to_y(hr).round()
    elif color == "yiq":
        weights = sr.new_tensor(_LUMA_WEIGHTS).view(1, 3, 1, 1)
        sr, hr = ((sr * weights).sum(1, keepdim=True) * 255).round(), ((hr * weights).sum(1, keepdim=True) * 255).round()
    elif color == "rgb":
        sr, hr = sr * 255, hr * 255
    else:
        raise InvalidImageError(f"ssim color must be ycbcr, yiq or rgb, got {color!r}")
    if min(sr.shape[-2:]) < 11:
        raise InvalidImageError(
            f"SSIM needs at least 11x11 pixels after cropping, got {sr.shape[-2]}x{sr.shape[-1]}; "
            "use larger images or a smaller crop_border"
        )
    # The Gaussian window is separable: two 1-D 'valid' passes (weighted shifted sums) over the five statistics.
    g = gaussian_window(dtype=sr.dtype).tolist()
    stats = torch.cat([sr, hr, sr * sr, hr * hr, sr * hr], dim=1)
    h, w = stats.shape[-2] - 10, stats.shape[-1] - 10
    stats = sum(g[i] * stats[..., i : i + h, :] for i in range(11))
    stats = sum(g[i] * stats[..., i : i + w] for i in range(11))
    mu_x, mu_y, xx, yy, xy = stats.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    if clamp_contrast:
        contrast_structure = contrast_structure.clamp(min=0)  # pyiqa clamps it at 0
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * contrast_structure
    return ssim_map.mean(dim=(1, 2, 3))
