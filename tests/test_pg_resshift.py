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


def test_autograd_direction_is_coef2_squared_times_the_jacobian_times_the_x0_gap():
    """Alg. 2 line 5 through the network: for a linear denoiser f(x) = a x + b, Sigma grad_{x_t} KL = coef2^2 a (f - z_c)
    (the closed form is coef2 (f - z_c)); a weight restricts the KL to its pixels."""
    sampler = ResidualShiftSampler(steps=4)
    g = torch.Generator().manual_seed(5)
    x_t, b, z_c = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    weight = (torch.rand(1, 1, 8, 8, generator=g) > 0.5).double()
    a = 0.37

    def denoise(x, t):
        return a * x + b

    for t in range(4):
        coef2 = sampler.coef2[t].float().double()
        expected = coef2**2 * a * (denoise(x_t, t) - z_c)
        direction = pg.guidance.kl_direction_through_network(sampler, denoise, x_t, z_c, t=t)
        torch.testing.assert_close(direction, expected, rtol=1e-6, atol=1e-9)
        masked = pg.guidance_direction("autograd", sampler, denoise, x_t=x_t, mean=x_t, guide_latent=z_c, t=t, mask=weight)
        torch.testing.assert_close(masked, expected * weight, rtol=1e-6, atol=1e-9)


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
    """The closed form's geometry (the autograd direction is J^T of it: no such per-step guarantee in x0)."""
    tiny = cheap_codec
    lr, hr = _images(2)
    knobs = {"gradient": "closed-form", "strength": 0.5}
    plain = _x0_distances(tiny, monkeypatch, lr, hr, strength=0.0)
    guided = _x0_distances(tiny, monkeypatch, lr, hr, **knobs)
    flipped = _x0_distances(tiny, monkeypatch, lr, hr, **knobs, mode="non-reference")
    assert all(g < p for g, p in zip(guided, plain)), (guided, plain)
    assert all(f > p for f, p in zip(flipped, plain)), (flipped, plain)


def _algorithm1_from_the_paper(model, lr, hr, seed, candidates):
    """Algorithm 1 written out from its lines (shared/papers/pg-resshift.md), with the readings of
    srkit.methods.pg_resshift.calibration.algorithm1_terms, independent of srkit's guidance code."""
    g = torch.Generator().manual_seed(seed)
    sampler = model.sampler
    lq = lr * 2 - 1  # y_0 (the sizes here need no padding)
    y = model.autoencoder.encode(torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic"))
    z_hr = model.autoencoder.encode(hr * 2 - 1)
    eps = torch.randn(y.shape, generator=g)
    coef = {name: [float(v) for v in getattr(sampler, name).float()] for name in ("coef1", "coef2", "etas")}
    kappa_sqrt_eta = [float(v) for v in (sampler.kappa * sampler.sqrt_etas).float()]

    def mu_theta(x, t):  # line 5: the model's step mean (ResShift Eq. (7), x0-prediction, scaled input)
        x0 = model.unet(x / float(sampler.input_std[t]), torch.tensor([t]), lq=lq)
        return coef["coef1"][t] * x + coef["coef2"][t] * x0

    x = y + kappa_sqrt_eta[-1] * eps  # line 3
    delta_norms, g_norms = [], []
    for t in range(sampler.num_steps - 1, -1, -1):  # line 4
        mean = mu_theta(x, t)
        z_t = z_hr + coef["etas"][t] * (y - z_hr) + kappa_sqrt_eta[t] * eps  # line 2, ForwardODE(HR) at t
        delta = mu_theta(z_t, t) - mean  # line 6
        variance = float(torch.exp(sampler.posterior_log_variance_clipped[t]).float())
        with torch.enable_grad():  # line 7: grad_{x_t} D_KL(N(mu_theta(x_t), Sigma) || N(mu_LR(x_t), Sigma))
            xg = x.clone().requires_grad_(True)
            lr_mean = coef["coef1"][t] * xg + coef["coef2"][t] * y
            kl = ((mu_theta(xg, t) - lr_mean) ** 2).sum() / (2 * variance)
            (grad,) = torch.autograd.grad(kl, xg)
        delta_norms.append(float(delta.double().norm()))
        g_norms.append(float((variance * grad).double().norm()))
        if t > 0:  # the chain goes on unguided
            x = mean + float(torch.exp(0.5 * sampler.posterior_log_variance_clipped[t].float())) * torch.randn(x.shape, generator=g)
    delta_norms, g_norms = torch.tensor(delta_norms[::-1]), torch.tensor(g_norms[::-1])  # by step index t
    losses = [(delta_norms - a * g_norms).abs() for a in candidates]  # line 8 (|.| of the norm gap), one image
    alpha = [candidates[min(range(len(candidates)), key=lambda c: float(losses[c][t]))] for t in range(sampler.num_steps)]
    return delta_norms, g_norms, torch.tensor(alpha)  # line 11


def test_algorithm1_equals_a_from_scratch_implementation_of_its_lines(tiny):
    assert tiny.size_multiple == 64
    lr, hr = _images(12, (64, 64))  # no padding, so the sums run over the whole latent
    candidates = [0.0, *torch.logspace(-3, 2, 201).tolist()]
    delta_norms, g_norms = pg.algorithm1_terms(tiny, lr, hr, generator=torch.Generator().manual_seed(3))
    expected_delta, expected_g, expected_alpha = _algorithm1_from_the_paper(tiny, lr, hr, 3, candidates)
    torch.testing.assert_close(delta_norms[0], expected_delta.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(g_norms[0], expected_g.double(), rtol=1e-6, atol=0)
    scales = pg.calibrate(tiny, [(lr, hr)], seed=3, candidates=candidates)
    torch.testing.assert_close(scales.alpha, expected_alpha.double(), rtol=1e-6, atol=0)
    assert (scales.mode, scales.gradient, scales.pairs) == ("non-reference", "autograd", 1)


def test_choose_scales_matches_the_norms_and_keeps_the_sign_flip(caplog):
    """Line 11 over a candidate set: the minimiser of sum_i |d_i - alpha g_i| is the g-weighted median of d_i / g_i;
    the candidates are >= 0, so the mode's sign stands."""
    delta = torch.tensor([[1.0, 2.0], [3.0, 2.0], [10.0, 2.0]], dtype=torch.float64)  # 3 images, 2 steps
    g = torch.tensor([[1.0, 4.0], [1.0, 4.0], [1.0, 4.0]], dtype=torch.float64)
    candidates = torch.tensor([0.0, 0.5, 1.0, 3.0, 10.0], dtype=torch.float64)
    expected = torch.tensor([3.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(pg.choose_scales(delta, g, candidates, per_step=True), expected)
    assert pg.choose_scales(delta, g, candidates, per_step=False).tolist() == [0.5]  # the weight 12 of step 1 rules
    with caplog.at_level("WARNING"):
        pg.choose_scales(delta * 100, g, candidates, per_step=True)
    assert "largest candidate" in caplog.text
    with pytest.raises(ConfigError, match=">= 0"):
        pg.calibrate(None, [], candidates=[-1.0, 1.0])


def test_reference_calibration_is_one_in_closed_form_and_a_fit_through_the_network(tiny, tmp_path):
    pairs = [_images(seed, (16, 16)) for seed in (3, 4)]
    closed = pg.calibrate(tiny, pairs, mode="reference", gradient="closed-form")  # Delta = G exactly: the HR step
    torch.testing.assert_close(closed.alpha, torch.ones(4, dtype=torch.float64), rtol=1e-5, atol=0)
    through = pg.calibrate(tiny, [(lr[0], hr[0]) for lr, hr in pairs], mode="reference", per_step=False)
    assert through.alpha.shape == (1,) and torch.isfinite(through.alpha).all() and abs(through.at(0) - 1) > 1e-3

    path = through.save(tmp_path / "reference.safetensors")
    loaded = pg.GuidanceScales.load(path)
    assert torch.equal(loaded.alpha, through.alpha)
    assert (loaded.steps, loaded.mode, loaded.pairs, loaded.gradient) == (4, "reference", 2, "autograd")
    model = srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                       reference_scales=str(path))
    assert model.mean_correction_hook.scales(4, "reference").at(2) == through.at(2) and model.scales.at(2) == 1.0
    with pytest.raises(ConfigError, match=r"calibrated for the reference mode.*reference_scales="):
        srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ, scales=str(path))
    with pytest.raises(ConfigError, match=r"gradient=autograd.*gradient=closed-form"):
        srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                   reference_scales=str(path), gradient="closed-form")
    pg.GuidanceScales(torch.ones(15, dtype=torch.float64), 15, "non-reference", 1, "autograd").save(tmp_path / "s15.safetensors")
    with pytest.raises(ConfigError, match="15 steps"):
        pg.PosteriorGuidedResShift(weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                                   scales=tmp_path / "s15.safetensors")


def test_autograd_and_closed_form_directions_differ_by_the_denoisers_jacobian(tiny):
    """The two readings of grad D_KL side by side along one chain of the tiny (random) model: the autograd direction
    is coef2 J^T of the closed form, so they agree only where the denoiser's Jacobian is a multiple of I. On the zoo
    chain the gap is measured in tests/test_zoo.py."""
    lr, _ = _images(13, (16, 16))
    chain = tiny.condition(tiny.prepare(lr), torch.Generator().manual_seed(0))
    denoise, sampler = tiny.denoiser(chain), tiny.sampler
    x = sampler.prior(chain.y, torch.randn(chain.y.shape, generator=torch.Generator().manual_seed(1)))
    for t in sampler.timesteps():
        x0_pred = denoise(x, t)
        mean, _ = sampler.posterior(x, t, t - 1, x0_pred)
        closed, through = (pg.guidance_direction(k, sampler, denoise, x_t=x, mean=mean, guide_latent=chain.y, t=t)
                           for k in ("closed-form", "autograd"))
        cosine = float(torch.nn.functional.cosine_similarity(closed.flatten(), through.flatten(), dim=0))
        assert torch.isfinite(through).all() and cosine < 0.999, (t, cosine)
        x = mean


def test_calibrate_takes_a_candidate_list_and_names_the_form_of_a_bad_one():
    from omegaconf import OmegaConf

    from srkit.methods.pg_resshift.calibration import _calibrate_options
    from srkit.options import parse_options
    from srkit.registry import config_dir

    cfg = OmegaConf.load(config_dir() / "calibrate.yaml")
    cfg.method = {"_target_": "srkit.methods.pg_resshift.method.PosteriorGuidedResShift"}
    cfg.candidates = [0, 0.5, 1]
    options = parse_options("calibrate", cfg, _calibrate_options(), composed=("method",))
    assert options["candidates"] == [0.0, 0.5, 1.0] and options["gradient"] == "autograd"
    for bad in ("abc", [-1, 1], []):
        cfg.candidates = bad
        with pytest.raises(ConfigError, match=r"candidates=.*a list of scale values >= 0"):
            parse_options("calibrate", cfg, _calibrate_options(), composed=("method",))


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
    out = tiny.sr(lr, seed=3, guide=hr, strength=1.0, gradient="closed-form", tile=128, tile_overlap=16, tile_batch=4)
    # reference mode with alpha = 1 (closed form) lands each tile's last step on its guide's latent, whatever the noise
    expected = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(hr * 2 - 1, 4), scale_factor=4.0)
    assert out.shape == (1, 3, 1536, 2048)
    torch.testing.assert_close(out, (expected * 0.5 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)
    lr, _ = _images(9, (64, 112))  # two tiles: an LR-size tensor guide is served tile by tile like guide="lr"
    assert torch.equal(tiny.sr(lr, seed=4, tile=64, tile_overlap=16), tiny.sr(lr, seed=4, guide=lr, tile=64, tile_overlap=16))


def test_a_guide_mask_moves_only_its_region_and_no_hr_outside_it_enters(cheap_codec):
    """Sec. 3.4's regions: with guidance at the last step only (where no network sees the result), the output differs
    from the unguided one exactly inside the mask (the cheap codec decodes pixel by pixel); HR pixels outside the mask
    never matter; a full mask is no mask, an empty one no guidance; guidance at every step moves the unmasked pixels
    only through the denoiser's view of the guided ones."""
    tiny = cheap_codec
    lr, hr = _images(14)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, :16] = 1  # the reference region: the left half
    inside = torch.nn.functional.interpolate(mask, scale_factor=4.0).bool().expand(1, 3, 128, 128)
    plain = tiny.sr(lr, seed=5, strength=0.0)
    last_only = pg.PosteriorGuidedResShift(weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                                           reference_scales=[1.0, 0.0, 0.0, 0.0], scales=[1.0, 0.0, 0.0, 0.0])
    last_only.autoencoder = tiny.autoencoder
    for guide in (hr, "lr"):
        out = last_only.sr(lr, seed=5, guide=guide, guide_mask=mask)
        changed = (out - plain).abs() > 1e-6
        assert changed[inside].float().mean() > 0.5 and not changed[~inside].any()
    noisy_outside = torch.where(torch.nn.functional.interpolate(mask, scale_factor=4.0).bool(), hr, torch.rand_like(hr))
    for gradient in pg.GRADIENTS:
        masked = tiny.sr(lr, seed=5, guide=hr, guide_mask=mask, gradient=gradient)
        assert torch.equal(masked, tiny.sr(lr, seed=5, guide=noisy_outside, guide_mask=mask, gradient=gradient))
        change = (masked - plain).abs()
        ratio = float(change[inside].mean() / change[~inside].mean())  # measured: closed form 2.0, autograd 3.6
        assert ratio > 1.5, (gradient, ratio)
    torch.testing.assert_close(tiny.sr(lr, seed=5, guide=hr, guide_mask=torch.ones_like(mask)), tiny.sr(lr, seed=5, guide=hr),
                               rtol=1e-6, atol=1e-6)
    assert torch.equal(tiny.sr(lr, seed=5, guide=hr, guide_mask=torch.zeros_like(mask)), plain)
    with pytest.raises(InvalidImageError, match="guide_mask has shape"):
        tiny.sr(lr, guide=hr, guide_mask=mask[..., :8])
    with pytest.raises(InvalidImageError, match="only 0"):
        tiny.sr(lr, guide=hr, guide_mask=mask * 0.5)


def test_a_scale_file_by_name_is_found_where_weights_are_and_a_missing_one_says_how_to_make_it(tmp_path, monkeypatch):
    """PG Table 2's Ours rows name their scale files (calibrated for the official chain) as weights are named."""
    from srkit.errors import WeightsNotFoundError
    from srkit.weights import srkit_home

    monkeypatch.chdir(tmp_path)
    scales = pg.GuidanceScales(torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64), 4, "reference", 3, "autograd")
    scales.save(srkit_home() / "weights" / "pg_hr.safetensors")
    model = srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                       reference_scales="pg_hr.safetensors")
    assert model.mean_correction_hook.scales(4, "reference").alpha.tolist() == [0.5, 1.0, 2.0, 4.0]
    with pytest.raises(WeightsNotFoundError) as missing:
        srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                   scales="pg_lr.safetensors")
    message = str(missing.value)
    assert str(srkit_home() / "weights" / "pg_lr.safetensors") in message and str(tmp_path / "weights") in message
    assert "srkit calibrate" in message and "output=" in message
    with pytest.raises(WeightsNotFoundError, match=r"looked at nowhere/pg_lr\.safetensors\)"):  # a path is only that path
        srkit.load("pg-resshift", weights="synthetic", unet_config=UNET, autoencoder_config=TINY_VQ,
                   scales="nowhere/pg_lr.safetensors")


def test_bench_with_the_zoo_uses_the_zoos_scale_files_not_the_tables():
    """pg_resshift_table2 names scale files for the official chain; with the zoo's weights its own calibrated files
    replace them (they were fitted to its networks), while the real weights keep the table's."""
    from srkit.metrics.bench import ModelCache, load_tables, plan_work

    (table,) = load_tables(names=["pg_resshift_table2"])
    units = [u for u in plan_work([table], lambda dataset: dataset, 4) if u.method == "pg-resshift"]
    assert len(units) == 3  # Ours(s4, HR) and (s4, LR) on RealSR, (s4, LR) on DIV2K
    for unit in units:
        assert ModelCache(device="cpu", weights=None).overrides_of(unit) == {
            "scales": "pg_resshift_s4_lr_scales.safetensors", "reference_scales": "pg_resshift_s4_hr_scales.safetensors"}
        assert ModelCache(device="cpu", weights="zoo").overrides_of(unit) == {}


def test_bench_passes_each_image_as_the_guide_of_table_2():
    from srkit.metrics.bench import Sample, sample_knobs

    lr, hr = _images(11)
    sample = Sample("x", lr[0], hr[0])
    assert torch.equal(sample_knobs({"steps": 4, "guide": "hr"}, sample)["guide"], hr)
    assert torch.equal(sample_knobs({"steps": 4, "guide": "lr"}, sample)["guide"], lr)
    assert sample_knobs({"steps": 4}, sample) == {"steps": 4}
    with pytest.raises(ConfigError, match="HR images"):
        sample_knobs({"guide": "hr"}, Sample("y", lr[0]))


def test_table_2_guides_one_region_and_scores_the_other():
    """PG Table 2's "non-overlapped region" (protocol.region): the HR guide gets the reference (left) half as its mask,
    the LR guide the right half, every row of the table carries the region and is scored on the right half."""
    from srkit.metrics.bench import Sample, load_tables, sample_knobs, scored_region

    lr, hr = _images(15, (8, 10))
    sample = Sample("x", lr[0], hr[0])
    reference = torch.zeros(1, 1, 8, 10)
    reference[..., :5] = 1
    hr_knobs = sample_knobs({"steps": 4, "guide": "hr", "region": "left-half"}, sample)
    lr_knobs = sample_knobs({"steps": 4, "guide": "lr", "region": "left-half"}, sample)
    assert torch.equal(hr_knobs["guide_mask"], reference) and torch.equal(lr_knobs["guide_mask"], 1 - reference)
    assert sample_knobs({"steps": 4, "region": "left-half"}, sample) == {"steps": 4}  # unguided rows: only scored
    out, scored = scored_region("left-half", hr, sample, 4)
    assert torch.equal(out, hr[..., 20:]) and torch.equal(scored.hr, hr[0, :, :, 20:]) and scored.lr.shape[-1] == 5
    assert scored_region(None, hr, sample, 4)[1] is sample
    with pytest.raises(ConfigError, match="region must be one of"):
        sample_knobs({"guide": "hr", "region": "top"}, sample)
    (table,) = load_tables(names=["pg_resshift_table2"])
    assert table.protocol["region"] == "left-half" and all(row.sr["region"] == "left-half" for row in table.rows)
