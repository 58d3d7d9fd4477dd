"""Posterior-guided ResShift: Lemma 3.2.1, the guidance direction per step, calibration (Alg. 1), loading, tiling."""

from __future__ import annotations

import pytest
import torch
from test_resshift import TINY_UNET, TINY_VQ

import srkit
from srkit.errors import ConfigError, InvalidImageError, UnsupportedError
from srkit.methods import pg_resshift as pg
from srkit.methods.resshift.method import ResShift
from srkit.samplers.residual_shift import ResidualShiftSampler

UNET = {**TINY_UNET, "attention_resolutions": []}  # the tiny denoiser without its Swin block: 4x faster on CPU


@pytest.fixture(scope="module")
def tiny() -> pg.PosteriorGuidedResShift:
    return srkit.load("pg-resshift", weights="synthetic", device="cpu", unet_config=UNET, autoencoder_config=TINY_VQ)


@pytest.fixture
def cheap_codec(tiny, monkeypatch):
    """Average pooling / nearest upsampling in place of the VQ codec, for tests of the latent chain alone."""
    monkeypatch.setattr(tiny.autoencoder, "encode", lambda x: torch.nn.functional.avg_pool2d(x, 4))
    monkeypatch.setattr(tiny.autoencoder, "decode", lambda z: torch.nn.functional.interpolate(z, scale_factor=4.0))
    return tiny


def _images(seed: int, lr_size: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(1, 3, 4 * lr_size[0], 4 * lr_size[1], generator=g)
    return torch.nn.functional.avg_pool2d(hr, 4), hr


def test_kl_gradient_is_the_autograd_gradient_of_the_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    p_mean, q_mean = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(2))
    p_var, q_var = (torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) + 0.1 for _ in range(2))
    p_mean.requires_grad_(True)
    kl = 0.5 * (torch.log(q_var / p_var) + (p_var + (p_mean - q_mean) ** 2) / q_var - 1)  # D_KL(N(p) || N(q))
    (grad,) = torch.autograd.grad(kl.sum(), p_mean)
    torch.testing.assert_close(pg.kl_gradient(p_mean.detach(), q_mean, q_var), grad, rtol=1e-12, atol=1e-12)


def test_direction_is_the_mean_gap_to_the_guide_step_at_every_step():
    sampler = ResidualShiftSampler(steps=4)
    g = torch.Generator().manual_seed(1)
    x_t, x0, z_c = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for t in range(4):
        mean, _ = sampler.posterior(x_t, t, t - 1, x0)
        direction = pg.kl_direction(sampler, mean, z_c, t=t, t_prev=t - 1, x_t=x_t)
        torch.testing.assert_close(direction, sampler.coef2[t].float().double() * (x0 - z_c), rtol=1e-6, atol=1e-9)


def _x0_distances(model, monkeypatch, lr, hr, **knobs) -> list[float]:
    """Distance to the HR latent of the x0 each step implies after the correction: (mu_new - coef1 x_t) / coef2."""
    distances: list[float] = []
    z_hr = model.encode_guide(hr, hr=True)
    call = pg.PosteriorGuidanceStep.__call__

    def recording(self, mean, *, variance, t, t_prev, x_t, x0_pred):
        out = call(self, mean, variance=variance, t=t, t_prev=t_prev, x_t=x_t, x0_pred=x0_pred)
        x0 = (out - model.sampler.coef1[t].float() * x_t) / model.sampler.coef2[t].float()
        distances.append(float((x0 - z_hr).norm()))
        return out

    with monkeypatch.context() as patch:
        patch.setattr(pg.PosteriorGuidanceStep, "__call__", recording)
        model.sr(lr, seed=7, guide=hr, **knobs)
    assert len(distances) == model.sampler.num_steps
    return distances


def test_hr_guidance_brings_x0_closer_to_the_hr_latent_at_every_step_and_the_sign_flip_pushes_it_away(cheap_codec, monkeypatch):
    tiny = cheap_codec
    lr, hr = _images(2)
    plain = _x0_distances(tiny, monkeypatch, lr, hr, strength=0.0)
    guided = _x0_distances(tiny, monkeypatch, lr, hr, strength=0.5)
    flipped = _x0_distances(tiny, monkeypatch, lr, hr, strength=0.5, mode="non-reference")
    assert all(g < p for g, p in zip(guided, plain)), (guided, plain)
    assert all(f > p for f, p in zip(flipped, plain)), (flipped, plain)


def _planted(model, pairs, alpha: float):
    """A denoiser factory whose x0 lies on the LR->HR line with HR - x0 = alpha (x0 - LR), plus an x_t-dependent wobble."""
    latents = []
    for lr, hr in pairs:
        latents.append((model.condition(model.prepare(lr), None).y, model.encode_guide(hr, hr=True), lr.shape[-2:]))

    def denoiser(chain):
        z_y, z_hr, (height, width) = next((y, h, size) for y, h, size in latents if torch.equal(y, chain.y))
        wobble = 0.02 * float((z_hr - z_y)[..., :height, :width].std())  # small next to the gap
        return lambda x_t, t: z_y + (z_hr - z_y) / (1 + alpha) + wobble * torch.tanh(x_t)

    return denoiser


def test_calibration_recovers_a_planted_alpha_and_writes_the_scale_file(cheap_codec, monkeypatch, tmp_path):
    tiny = cheap_codec
    pairs = [_images(seed, (16, 16)) for seed in (3, 4)]
    monkeypatch.setattr(tiny, "denoiser", _planted(tiny, pairs, alpha=0.7))
    per_step = pg.calibrate(tiny, pairs, mode="non-reference")
    scalar = pg.calibrate(tiny, [(lr[0], hr[0]) for lr, hr in pairs], per_step=False)
    assert per_step.alpha.shape == (4,) and scalar.alpha.shape == (1,) and per_step.pairs == 2
    assert torch.allclose(per_step.alpha, torch.full((4,), 0.7, dtype=torch.float64), rtol=0.05)
    assert abs(scalar.at(2) - 0.7) < 0.05 * 0.7
    reference = pg.calibrate(tiny, pairs, mode="reference")  # Delta = G exactly: full correction is the HR step
    torch.testing.assert_close(reference.alpha, torch.ones(4, dtype=torch.float64), rtol=1e-5, atol=0)

    path = per_step.save(tmp_path / "scales.safetensors")
    loaded = pg.GuidanceScales.load(path)
    assert torch.equal(loaded.alpha, per_step.alpha) and (loaded.steps, loaded.mode, loaded.pairs) == (4, "non-reference", 2)
    model = srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ, scales=str(path))
    assert torch.equal(model.scales.alpha, per_step.alpha)
    pg.GuidanceScales(torch.ones(15, dtype=torch.float64), 15, "reference", 1).save(tmp_path / "s15.safetensors")
    with pytest.raises(ConfigError, match="15 steps"):
        pg.PosteriorGuidedResShift(weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                                   scales=tmp_path / "s15.safetensors")


@pytest.mark.slow
def test_run_calibration_from_the_hydra_config(tmp_path):
    """~10 s on 2 loaded cores: `srkit calibrate`'s task on a PairedFolder."""
    from omegaconf import OmegaConf

    from srkit.registry import config_dir

    cfg = OmegaConf.load(config_dir() / "calibrate.yaml")
    cfg.method = {**OmegaConf.to_container(OmegaConf.load(config_dir() / "method" / "pg-resshift.yaml")),
                  "unet_config": UNET, "autoencoder_config": TINY_VQ}
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    from srkit.io import write_image

    for i in range(1):
        lr, hr = _images(10 + i, (24, 20))
        write_image(hr_dir / f"{i}.png", hr[0])
        write_image(lr_dir / f"{i}.png", lr[0])
    cfg.data = {"_target_": "srkit.data.paired.PairedFolder", "hr_dir": str(hr_dir), "lr_dir": str(lr_dir)}
    cfg.update(weights="synthetic", device="cpu", crop=64, per_step=False, output=str(tmp_path / "out.safetensors"))
    path = pg.run_calibration(cfg)
    scales = pg.GuidanceScales.load(path)
    assert (scales.steps, scales.mode, scales.pairs, scales.alpha.shape) == (4, "non-reference", 1, (1,))
    assert torch.isfinite(scales.alpha).all()


def test_loads_by_name_is_seeded_and_rejects_bad_guides(cheap_codec):
    tiny = cheap_codec
    lr, hr = _images(6)
    first, again = (tiny.sr(lr, seed=1) for _ in range(2))
    assert first.shape == (1, 3, 128, 128) and torch.equal(first, again)
    assert tiny.sampler.mean_correction is None  # the hook lives only during sr()
    with pytest.raises(ConfigError, match="'lr' or an image tensor"):
        tiny.sr(lr, guide="hr")
    with pytest.raises(InvalidImageError, match="guide has shape"):
        tiny.sr(lr, guide=hr[..., :-4])
    with pytest.raises(ConfigError, match="mode must be one of"):
        tiny.sr(lr, mode="fidelity")
    with pytest.raises(UnsupportedError, match="no options"):
        tiny.sr(lr, cfg_scale=1.0)
    assert tiny.trainable_modules() == {}


@pytest.mark.slow
def test_strength_zero_is_resshift_and_an_lr_tensor_guide_is_guide_lr(tiny):
    """~30 s on 2 loaded cores."""
    lr, hr = _images(6)
    first = tiny.sr(lr, seed=1)
    assert not torch.equal(first, tiny.sr(lr, seed=2))
    assert torch.equal(first, tiny.sr(lr, seed=1, guide=lr))  # guide="lr" is the LR tensor, encoded as the chain's y
    plain = ResShift(weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ).eval()
    unguided = plain.sr(lr, seed=1)
    assert torch.equal(unguided, tiny.sr(lr, seed=1, guide=hr, strength=0.0)) and not torch.equal(unguided, first)


@pytest.mark.slow
def test_tiles_a_512x384_image_with_the_hr_guide_cut_like_the_lr(cheap_codec):
    """~1 min on 2 loaded cores (the real VQ codec is tiled in test_resshift): every tile gets its own HR tile."""
    tiny = cheap_codec
    lr, hr = _images(8, (384, 512))
    out = tiny.sr(lr, seed=3, guide=hr, strength=1.0, tile=128, tile_overlap=16, tile_batch=4)
    # reference mode with alpha = 1 lands each tile's last step on its guide's latent, whatever the noise
    expected = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(hr * 2 - 1, 4), scale_factor=4.0)
    assert out.shape == (1, 3, 1536, 2048)
    torch.testing.assert_close(out, (expected * 0.5 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)
    lr, _ = _images(9, (64, 112))  # two tiles: an LR-size tensor guide is served tile by tile like guide="lr"
    assert torch.equal(tiny.sr(lr, seed=4, tile=64, tile_overlap=16), tiny.sr(lr, seed=4, guide=lr, tile=64, tile_overlap=16))


def test_bench_passes_each_image_as_the_guide_of_table_2():
    from srkit.metrics.bench import Sample, sample_knobs

    lr, hr = _images(11)
    sample = Sample("x", lr[0], hr[0])
    assert torch.equal(sample_knobs({"steps": 4, "guide": "hr"}, sample)["guide"], hr)
    assert torch.equal(sample_knobs({"steps": 4, "guide": "lr"}, sample)["guide"], lr)
    assert sample_knobs({"steps": 4}, sample) == {"steps": 4}
    with pytest.raises(ConfigError, match="HR images"):
        sample_knobs({"guide": "hr"}, Sample("y", lr[0]))
