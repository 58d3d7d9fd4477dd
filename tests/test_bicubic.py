"""The bicubic method and the bicubic degradation, through the public registry."""

from __future__ import annotations

import pytest
import torch

import srkit
from srkit.errors import ConfigError, InvalidImageError, UnsupportedError
from srkit.ops.resize import imresize


def _smooth(b: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    yy = torch.linspace(0, 1, h, dtype=torch.float64)[:, None]
    xx = torch.linspace(0, 1, w, dtype=torch.float64)[None, :]
    chans = [
        0.5 + 0.4 * torch.sin(2 * torch.pi * (yy + 0.5 * xx)),
        0.5 + 0.3 * torch.cos(3 * xx - 2 * yy),
        0.2 + 0.6 * yy * xx,
    ]
    img = torch.stack([c.expand(h, w) for c in chans])
    return img.expand(b, 3, h, w).to(dtype).contiguous()


def test_load_and_sr_shape_and_range():
    model = srkit.load("bicubic", device="cpu")
    assert isinstance(model, srkit.SRMethod)
    assert model.descriptor is srkit.describe("bicubic")
    assert model.scale == 4 and model.dtype == torch.float32 and not model.training
    assert list(model.parameters()) == [] and model.state_dict() == {}
    lr = torch.rand(2, 3, 7, 9)
    hr = model.sr(lr)
    assert hr.shape == (2, 3, 28, 36) and hr.dtype == torch.float32
    assert hr.min() >= 0 and hr.max() <= 1
    torch.testing.assert_close(hr, imresize(lr, 4).clamp(0, 1), rtol=0, atol=0)
    assert model.sr(lr[0]).shape == (1, 3, 28, 36)  # a single (3, h, w) image


def test_scale_override():
    model = srkit.load("bicubic", scale=2, device="cpu")
    assert model.scale == 2
    assert model.sr(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)
    with pytest.raises(ConfigError, match="no option"):
        srkit.load("bicubic", scael=2, device="cpu")
    with pytest.raises(UnsupportedError):
        srkit.load("bicubic", scale=0, device="cpu")


def test_float64_path():
    model = srkit.load("bicubic", dtype="float64", device="cpu")
    assert model.dtype == torch.float64
    lr = torch.rand(1, 3, 6, 5, dtype=torch.float64)
    hr = model.sr(lr)
    assert hr.dtype == torch.float64
    torch.testing.assert_close(hr, imresize(lr, 4).clamp(0, 1), rtol=0, atol=0)
    # a float32 input is computed in float64 and handed back as float32
    hr32 = model.sr(lr.float())
    assert hr32.dtype == torch.float32
    torch.testing.assert_close(hr32, imresize(lr.float().double(), 4).clamp(0, 1).float(), rtol=0, atol=0)
    # .to() moves the computation dtype back and forth
    assert model.to(torch.float32).dtype == torch.float32


def test_bfloat16_and_unsupported_dtype():
    model = srkit.load("bicubic", dtype="bf16", device="cpu")
    assert model.dtype == torch.bfloat16
    hr = model.sr(torch.rand(1, 3, 4, 4))
    assert hr.dtype == torch.float32 and hr.shape == (1, 3, 16, 16)


def test_unknown_knob_and_steps():
    model = srkit.load("bicubic", device="cpu")
    with pytest.raises(ConfigError, match="bicubic has no knob 'strength'"):
        model.sr(torch.rand(1, 3, 4, 4), strength=1)
    with pytest.raises(UnsupportedError, match="not iterative"):
        model.sr(torch.rand(1, 3, 4, 4), steps=4)
    with pytest.raises(ConfigError, match="no weights"):
        srkit.load("bicubic", weights="some/file.pth", device="cpu")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degradation_shapes_and_quantisation(scale):
    deg = srkit.build("degradation", "bicubic", scale=scale)
    assert isinstance(deg, srkit.types.Degradation) and deg.scale == scale
    hr = torch.rand(2, 3, 12 * scale, 5 * scale)
    lr = deg(hr)
    assert lr.shape == (2, 3, 12, 5) and lr.dtype == hr.dtype
    assert lr.min() >= 0 and lr.max() <= 1
    levels = lr.double() * 255
    assert (levels - levels.round()).abs().max() < 1e-4  # 8-bit levels
    exact = imresize(hr.double(), 1 / scale).clamp(0, 1)
    assert (lr.double() - exact).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(deg(hr, generator=torch.Generator().manual_seed(0)), lr)  # deterministic


def test_degradation_default_and_unquantised():
    deg = srkit.build("degradation", "bicubic")
    assert deg.scale == 4 and deg.quantize and deg.antialias
    hr = torch.rand(1, 3, 16, 24, dtype=torch.float64)
    raw = srkit.build("degradation", "bicubic", quantize=False)(hr)
    torch.testing.assert_close(raw, imresize(hr, 0.25).clamp(0, 1), rtol=0, atol=0)
    assert deg(hr[0]).shape == (3, 4, 6)


def test_degradation_rejects_non_divisible_sizes():
    deg = srkit.build("degradation", "bicubic", scale=4)
    with pytest.raises(InvalidImageError, match=r"not divisible by scale 4; crop.*hr\[\.\.\., :16, :20\]"):
        deg(torch.rand(1, 3, 18, 21))
    with pytest.raises(ConfigError):
        srkit.build("degradation", "bicubic", scale=0)


def test_down_then_up_smooth_image_psnr():
    hr = _smooth(1, 128, 96)
    lr = srkit.build("degradation", "bicubic", scale=4)(hr)
    sr = srkit.load("bicubic", device="cpu").sr(lr)
    mse = (sr.double() - hr.double()).pow(2).mean()
    psnr = 10 * torch.log10(1 / mse)
    assert psnr > 30
