"""The DDPM/DDIM sampler against diffusers' schedulers (same maths, same noise)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

import srkit
from srkit.errors import ConfigError, UnsupportedError
from srkit.samplers.ddpm import DDPMSampler, spaced_timesteps
from srkit.samplers.schedule import resolve_timesteps

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
NO_CLIP = {"clip_sample": False}  # SD configs do not clip x0 (diffusers' DDPM/DDIM defaults do)


def test_spacing_equals_diffusers_set_timesteps() -> None:
    # SD 2.1-base (leading, steps_offset 1), N = 6: the CCSR v2 schedule of shared/facts.
    assert spaced_timesteps(6, spacing="leading", steps_offset=1) == [831, 665, 499, 333, 167, 1]
    for spacing in ("leading", "trailing", "linspace"):
        scheduler = DDPMScheduler(timestep_spacing=spacing, steps_offset=1)
        scheduler.set_timesteps(4)
        assert spaced_timesteps(4, spacing=spacing, steps_offset=1) == scheduler.timesteps.tolist()


def test_partial_start_spacing() -> None:
    assert spaced_timesteps(1, start_t=200) == [200]
    assert spaced_timesteps(4, start_t=200) == [200, 150, 100, 50]
    assert DDPMSampler(steps=2, start_t=250).timesteps() == [250, 125]
    assert DDPMSampler(timesteps=[199, 99, 49]).timesteps() == [199, 99, 49]
    assert DDPMSampler().timesteps(3, start_t=300) == [300, 200, 100]
    with pytest.raises(ConfigError, match="strictly decreasing"):
        DDPMSampler(timesteps=[99, 199])
    with pytest.raises(ConfigError, match="start_t"):
        spaced_timesteps(2, start_t=1000)
    with pytest.raises(UnsupportedError, match="no options"):
        DDPMSampler().timesteps(2, strat_t=3)


def test_alphas_cumprod_equal_diffusers() -> None:
    sampler = DDPMSampler(**SD)
    assert torch.equal(sampler.alphas_cumprod, DDPMScheduler(**SD).alphas_cumprod.double())
    # InvSR's Euler sigmas at the 200 / 250 start (shared/facts: 0.5693 and 0.6932 at indices 199, 249).
    assert sampler.sigma(199) == pytest.approx(0.5693, abs=1e-4)
    assert sampler.sigma(249) == pytest.approx(0.6932, abs=1e-4)


def _chain(eta: float, timesteps: list[int]) -> tuple[DDPMSampler, torch.Tensor, torch.Tensor]:
    sampler = DDPMSampler(timesteps=timesteps, eta=eta, **SD)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return sampler, x, eps


def test_eta1_step_equals_diffusers_ddpm_step() -> None:
    timesteps = [801, 501, 201, 51]
    sampler, x, eps = _chain(1.0, timesteps)
    scheduler = DDPMScheduler(**SD, **NO_CLIP)
    scheduler.set_timesteps(timesteps=timesteps)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        expected = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=x.dtype)
        got = sampler.step(x, t, t_prev, sampler.predict_x0(eps, x, t), noise)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        x = got


def test_eta0_equals_ddim_and_euler_sigma_form() -> None:
    timesteps = [999, 749, 499, 249]
    sampler, x, eps = _chain(0.0, timesteps)
    ddim = DDIMScheduler(**SD, **NO_CLIP, set_alpha_to_one=True, timestep_spacing="trailing")
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == timesteps
    euler = EulerDiscreteScheduler(**SD, timestep_spacing="trailing", final_sigmas_type="zero")
    euler.set_timesteps(4)
    assert euler.timesteps.tolist() == timesteps
    x_sigma = x / sampler.alpha_bar(timesteps[0], x).sqrt()  # the sigma form of the same state
    zero = torch.zeros_like(x)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x0 = sampler.predict_x0(eps, x, t)
        got = sampler.step(x, t, t_prev, x0, zero)
        if t_prev >= 0:  # DDIM's last step goes to abar_0 (set_alpha_to_one only affects t_prev = -1)
            torch.testing.assert_close(got, ddim.step(eps, t, x).prev_sample, rtol=0, atol=1e-5)
        x_sigma = euler.step(eps, euler.timesteps[i], x_sigma).prev_sample
        torch.testing.assert_close(got / sampler.alpha_bar(t_prev, x).sqrt(), x_sigma, rtol=0, atol=1e-4)
        x = got
    torch.testing.assert_close(x, x0)  # the last step lands on the x0 prediction


def test_sample_records_timesteps_and_partial_start() -> None:
    sampler = DDPMSampler(steps=3, start_t=300, eta=1.0)
    target = torch.rand(1, 4, 4, 4, dtype=torch.float64)
    start = sampler.q_sample(target, 300, torch.randn_like(target))
    visited = []
    out = sampler.sample(lambda x, t: visited.append(t) or target, target, x_start=start, generator=torch.Generator().manual_seed(0))
    assert visited == sampler.timesteps() == [300, 200, 100]  # the default schedule: steps from the start_t setting
    torch.testing.assert_close(out, target)  # a perfect denoiser: every posterior mean collapses onto x0


def test_forward_moments() -> None:
    sampler = DDPMSampler()
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    xt = sampler.q_sample(x0, 500, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype))
    abar = float(sampler.alphas_cumprod[500])
    assert float(xt.mean()) == pytest.approx(abar**0.5 * 0.7, abs=5e-3)
    assert float(xt.var()) == pytest.approx(1 - abar, rel=1e-2)


def test_registry_builds_ddpm_with_overrides() -> None:
    sampler = srkit.build("sampler", "ddpm", start_t=200, steps=3)
    assert sampler.timesteps() == [200, 133, 67]


def test_one_resolver_refuses_steps_that_disagree_with_the_schedule() -> None:
    sampler = DDPMSampler()
    assert resolve_timesteps(sampler, None, [200, 100, 50]) == [200, 100, 50]
    assert resolve_timesteps(sampler, 3, start_t=300) == [300, 200, 100]
    with pytest.raises(ConfigError, match=r"steps=3 and timesteps=\[250, 200, 150, 100, 50\] \(5 values\) disagree"):
        resolve_timesteps(sampler, 3, [250, 200, 150, 100, 50])
    with pytest.raises(ConfigError, match="disagree"):
        DDPMSampler(timesteps=[199, 99]).timesteps(3)
    with pytest.raises(ConfigError, match="nothing for the sampler options"):
        resolve_timesteps(sampler, None, [200], start_t=100)
    with pytest.raises(ConfigError, match="strictly decreasing"):
        resolve_timesteps(sampler, None, [100, 200])


def test_renoise_forgets_x_t_and_lands_on_q_of_the_x0_estimate() -> None:
    sampler = DDPMSampler(renoise=True)
    x, x0 = torch.randn(2, 1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean, variance = sampler.posterior(x, 500, 250, x0)
    torch.testing.assert_close(mean, sampler.alpha_bar(250, x).sqrt() * x0)
    torch.testing.assert_close(variance, 1 - sampler.alpha_bar(250, x))
    torch.testing.assert_close(sampler.posterior(2 * x, 500, 250, x0)[0], mean)  # x_t plays no part
    noise = torch.randn_like(x)
    torch.testing.assert_close(sampler.step(x, 500, 250, x0, noise), sampler.q_sample(x0, 250, noise))
