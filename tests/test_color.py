"""Colour correction: the decompositions are exact and each fix transfers what it claims to."""

from __future__ import annotations

import pytest
import torch

from srkit.errors import ConfigError, InvalidImageError
from srkit.ops.color import (
    _RGB_TO_YCBCR,
    adain_color_fix,
    color_fix,
    wavelet_color_fix,
    wavelet_decompose,
    ycbcr_color_fix,
)


def _image(seed: int, size: int = 48) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_wavelet_decomposition_is_exact_and_low_pass() -> None:
    x = _image(0)
    high, low = wavelet_decompose(x, levels=5)
    torch.testing.assert_close(high + low, x, rtol=0, atol=1e-12)
    assert float(low.std()) < 0.2 * float(x.std())  # five blurs leave the low frequencies only
    constant = torch.full_like(x, 0.3)
    torch.testing.assert_close(wavelet_decompose(constant)[1], constant)


def test_wavelet_fix_removes_a_colour_shift_and_keeps_fine_detail() -> None:
    reference = torch.nn.functional.avg_pool2d(_image(1, 192), 2)  # 96x96
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    detail = 0.05 * (-1.0) ** (yy + xx).double()  # checkerboard: the binomial blur removes it exactly
    shift = torch.tensor([0.1, -0.05, 0.08], dtype=torch.float64)[None, :, None, None]
    fixed = wavelet_color_fix(reference + detail + shift, reference)
    inner = (..., slice(32, 64), slice(32, 64))  # beyond the blurs' reach (1 + 2 + ... + 16 = 31 px) of the border
    torch.testing.assert_close(fixed[inner], (reference + detail)[inner], rtol=0, atol=1e-9)


def test_adain_matches_channel_statistics() -> None:
    image, reference = _image(2), 0.5 * _image(3) + 0.2
    fixed = adain_color_fix(image, reference)
    torch.testing.assert_close(fixed.mean((2, 3)), reference.mean((2, 3)))
    torch.testing.assert_close(fixed.flatten(2).std(-1), reference.flatten(2).std(-1), rtol=1e-3, atol=1e-6)
    # invariant to a per-channel affine change of the input
    torch.testing.assert_close(adain_color_fix(3 * image - 1, reference), fixed, rtol=1e-4, atol=1e-6)


def test_ycbcr_fix_takes_luma_from_the_output_and_chroma_from_the_reference() -> None:
    image, reference = _image(4), _image(5)
    fixed = ycbcr_color_fix(image, reference)
    matrix = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64)
    to_ycbcr = lambda x: torch.einsum("ij,bjhw->bihw", matrix, x)  # noqa: E731
    torch.testing.assert_close(to_ycbcr(fixed)[:, :1], to_ycbcr(image)[:, :1])
    torch.testing.assert_close(to_ycbcr(fixed)[:, 1:], to_ycbcr(reference)[:, 1:])
    torch.testing.assert_close(ycbcr_color_fix(image, image), image)


def test_reference_is_resized_and_dispatch() -> None:
    image, small = _image(6), _image(7, 12)
    assert wavelet_color_fix(image, small).shape == image.shape
    assert color_fix(image, small, "none") is image
    assert color_fix(image, small, None) is image
    torch.testing.assert_close(color_fix(image, small, "adain"), adain_color_fix(image, small))
    with pytest.raises(ConfigError, match="is not a colour fix"):
        color_fix(image, small, "lab")
    with pytest.raises(InvalidImageError, match="same B and C"):
        color_fix(image, small[:1], "wavelet")
