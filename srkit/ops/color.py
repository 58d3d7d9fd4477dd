"""Colour correction of a super-resolved image towards its (upsampled) LR input.

Diffusion SR drifts in colour; the methods' official code corrects it after decoding:

* ``wavelet`` (StableSR's wavelet reconstruction, used by InvSR, CCSR and LPNSR): the output's
  high frequencies + the reference's low frequencies, split by ``levels`` passes of a dilated 3x3
  binomial blur (dilation 1, 2, 4, ...; replicate padding);
* ``adain`` (CCSR's default): per-image, per-channel mean and standard deviation of the output
  matched to the reference's (adaptive instance normalisation);
* ``ycbcr`` (InvSR's option): the output's luma with the reference's chroma (BT.601 full range).

The reference is resized to the output's size (bicubic, as the official code enlarges the LR) when
the sizes differ. Images are (B, 3, H, W) in any range; the result is not clamped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InvalidImageError
from ..types import ColorFix

__all__ = [
    "LOCAL_FIX_REACH", "ColorFix", "adain_color_fix", "check_color_fix", "color_fix", "color_fix_rows", "wavelet_color_fix",
    "wavelet_decompose", "ycbcr_color_fix",
]


# BT.601 full-range RGB -> YCbCr (offsets omitted: they cancel in the round trip).
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _matched(image: Tensor, reference: Tensor) -> Tensor:
    if image.dim() != 4 or reference.dim() != 4 or image.shape[:2] != reference.shape[:2]:
        raise InvalidImageError(
            f"colour correction needs two (B, C, H, W) batches with the same B and C, got {tuple(image.shape)} "
            f"and {tuple(reference.shape)}"
        )
    reference = reference.to(image.dtype)
    if reference.shape[-2:] != image.shape[-2:]:
        reference = F.interpolate(reference, size=image.shape[-2:], mode="bicubic", align_corners=False)
    return reference


def _binomial_blur(image: Tensor, dilation: int) -> Tensor:
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (kernel[:, None] * kernel[None, :]) / 16
    channels = image.shape[1]
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel.expand(channels, 1, 3, 3), dilation=dilation, groups=channels)


def wavelet_decompose(image: Tensor, levels: int = 5) -> tuple[Tensor, Tensor]:
    """(high, low) with high + low == image: ``levels`` blurs of dilation 1, 2, 4, ..."""
    if levels < 1:
        raise ConfigError(f"levels must be >= 1, got {levels}")
    high = torch.zeros_like(image)
    low = image
    for level in range(levels):
        blurred = _binomial_blur(low, 2**level)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(image: Tensor, reference: Tensor, levels: int = 5) -> Tensor:
    """The output's high frequencies with the reference's low frequencies (StableSR's wavelet fix)."""
    reference = _matched(image, reference)
    return wavelet_decompose(image, levels)[0] + wavelet_decompose(reference, levels)[1]


def adain_color_fix(image: Tensor, reference: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-channel mean/std of ``image`` replaced by the reference's (unbiased variance + eps, as officially)."""
    reference = _matched(image, reference)

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.flatten(2)
        return flat.mean(-1)[..., None, None], (flat.var(-1) + eps).sqrt()[..., None, None]

    mean, std = stats(image)
    ref_mean, ref_std = stats(reference)
    return (image - mean) / std * ref_std + ref_mean


def ycbcr_color_fix(image: Tensor, reference: Tensor) -> Tensor:
    """The output's luma Y with the reference's chroma Cb, Cr (BT.601 full range)."""
    reference = _matched(image, reference)
    if image.shape[1] != 3:
        raise InvalidImageError(f"the ycbcr colour fix needs RGB images, got {image.shape[1]} channels")
    forward = torch.tensor(_RGB_TO_YCBCR, dtype=image.dtype, device=image.device)
    luma = torch.einsum("ij,bjhw->bihw", forward[:1], image)
    chroma = torch.einsum("ij,bjhw->bihw", forward[1:], reference)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(forward), torch.cat([luma, chroma], 1))


_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix, "ycbcr": ycbcr_color_fix}


def check_color_fix(kind: str | None) -> ColorFix:
    """``kind`` as a :data:`ColorFix` (``None`` is ``"none"``), or a clear error."""
    kind = "none" if kind is None else kind
    if kind != "none" and kind not in _FIXES:
        raise ConfigError(f"color_fix={kind!r} is not a colour fix; use one of none, {', '.join(_FIXES)}")
    return kind  # type: ignore[return-value]


# How many rows away a fixed pixel's value reaches: the sum of the dilations of the wavelet blurs (1 + 2 + ... + 16
# for StableSR's 5 levels); ycbcr is per pixel. adain is absent: its statistics are the whole image's.
LOCAL_FIX_REACH = {"none": 0, "ycbcr": 0, "wavelet": 2**5 - 1}


def color_fix_rows(
    rows: Iterable[tuple[int, Tensor]],
    reference: Callable[[int, int], Tensor],
    kind: ColorFix,
    *,
    height: int,
    min_rows: int = 64,
) -> Iterator[tuple[int, Tensor]]:
    """:func:`color_fix` applied to an image that arrives as ``(first row, rows)`` bands, top to bottom.

    ``reference(first, last)`` returns the reference's rows ``[first, last)``; ``height`` is the image's. A local fix
    (:data:`LOCAL_FIX_REACH`) is applied to at least ``min_rows`` rows at a time, with the rows it reaches above and
    below as context, so the result equals the fix of the whole image up to float rounding.
    """
    if kind not in LOCAL_FIX_REACH:
        raise ConfigError(f"color_fix={kind!r} needs the whole image; only {', '.join(LOCAL_FIX_REACH)} work band by band")
    reach = LOCAL_FIX_REACH[kind]
    if kind == "none":
        yield from rows
        return
    held: list[Tensor] = []  # rows [held_top, held_top + held rows): context above + rows not yet fixed
    held_top, fixed_to = 0, 0
    for first, band in rows:
        held.append(band)
        held_end = first + band.shape[-2]
        ready = held_end if held_end == height else held_end - reach  # rows whose reach lies inside what is held
        if ready - fixed_to < min_rows and held_end != height:
            continue
        context = torch.cat(held, -2)
        fixed = color_fix(context, reference(held_top, held_end), kind)
        yield fixed_to, fixed[..., fixed_to - held_top : ready - held_top, :]
        keep_from = max(held_top, ready - reach)
        held, held_top, fixed_to = [context[..., keep_from - held_top :, :]], keep_from, ready


def color_fix(image: Tensor, reference: Tensor, kind: ColorFix | None = "wavelet") -> Tensor:
    """Dispatch on ``kind``: ``none``/``None`` returns ``image`` unchanged."""
    kind = check_color_fix(kind)
    return image if kind == "none" else _FIXES[kind](image, reference)
