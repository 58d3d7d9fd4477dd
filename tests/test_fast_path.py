"""sr(fast=...): the reduced-precision path of the sr() template (autocast, channels-last activations) stays within
its stated distance of the exact path, reruns a non-finite batch exactly, and refuses what it cannot do."""

from __future__ import annotations

import pytest
import torch
from test_resshift import TINY_UNET, TINY_VQ
from test_streaming import LocalNet, assemble, image

import srkit
from srkit.errors import ConfigError, UnsupportedError

# Measured on four srkit-mini photos (Real-ESRGAN LR, 64 px, seed 0), fast (bfloat16) against exact (float32): PSNR
# 37.1-39.1 dB (resshift zoo), 37.7-41.0 dB (lpnsr zoo). The chain carries the rounding through its noise steps.
FAST_PSNR_DB = 35.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * (a.double() - b.double()).square().mean().log10())


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage")
    from srkit.data.mini import mini_pairs

    return [pair.lr[None] for pair in mini_pairs("realesrgan", size=256)[:2]]


@pytest.mark.parametrize("name", ["resshift", "lpnsr"])
def test_the_fast_path_stays_within_its_stated_distance_of_the_exact_path(photos, name):
    model = srkit.load(name, weights="zoo")
    for lr in photos:
        exact, fast = model.sr(lr, seed=0), model.sr(lr, seed=0, fast=True)
        assert fast.dtype == torch.float32 and fast.shape == exact.shape and torch.isfinite(fast).all()
        assert not torch.equal(fast, exact)  # it did run in reduced precision
        assert psnr(fast, exact) > FAST_PSNR_DB


@pytest.fixture(scope="module")
def tiny():
    return srkit.load("resshift", weights="synthetic", unet_config=TINY_UNET, autoencoder_config=TINY_VQ)


def test_a_non_finite_fast_batch_is_rerun_exactly_with_the_same_noise(tiny, monkeypatch):
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exact = tiny.sr(lr, seed=3)
    run = type(tiny)._sr

    def overflowing(self, *args, **kwargs):  # what float16 overflow looks like: inf/NaN out of the networks
        out = run(self, *args, **kwargs)
        return out * torch.nan if torch.is_autocast_enabled("cpu") else out

    monkeypatch.setattr(type(tiny), "_sr", overflowing)
    with pytest.warns(RuntimeWarning, match="fast path gave non-finite values for a batch; it was rerun in float32"):
        again = tiny.sr(lr, seed=3, fast=True)
    assert torch.equal(again, exact)


def test_streamed_rows_take_the_fast_path_as_sr_does():
    model, lr = LocalNet(), image(90, 70, seed=4)
    whole = model.sr(lr, tile=32, tile_overlap=8, fast=True)
    assert not torch.equal(whole, model.sr(lr, tile=32, tile_overlap=8))
    rows = assemble(model.sr_rows(lr, tile=32, tile_overlap=8, fast=True), whole.shape)
    torch.testing.assert_close(rows, whole, rtol=0, atol=2e-6)


def test_the_fast_path_refuses_what_it_cannot_do(tiny):
    lr = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="fast must be true, false, bfloat16 or float16, got 'int8'"):
        tiny.sr(lr, fast="int8")
    wide = srkit.load("resshift", weights="synthetic", unet_config=TINY_UNET, autoencoder_config=TINY_VQ, dtype="float64")
    with pytest.raises(UnsupportedError, match="this model is float64: load it in float32 or leave fast off"):
        wide.sr(lr, fast=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["resshift", "lpnsr"])
@pytest.mark.parametrize("fast", [True, "float16"])
def test_the_fast_path_on_cuda_stays_within_its_stated_distance_of_the_exact_path(photos, name, fast):
    """The bound measured on the CPU, on CUDA: bfloat16 and float16 autocast against the float32 chain."""
    model = srkit.load(name, weights="zoo", device="cuda")
    for lr in photos:
        exact, quick = model.sr(lr.cuda(), seed=0), model.sr(lr.cuda(), seed=0, fast=fast)
        assert quick.dtype == torch.float32 and torch.isfinite(quick).all()
        assert psnr(quick, exact) > FAST_PSNR_DB
