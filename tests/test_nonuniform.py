"""CCSR's non-uniform timestep sampling (srkit.samplers.nonuniform) against the official v2 schedule."""

import pytest
import torch

from srkit.errors import ConfigError, UnsupportedError
from srkit.registry import build
from srkit.samplers.ddpm import DDPMSampler
from srkit.samplers.nonuniform import NonUniformSampler, nonuniform_timesteps

# (T, t_max, t_min) of CCSR Tables II and III -> the visited timesteps of CCSR v2's pipeline: DDPM
# set_timesteps(T) with SD 2.1-base's leading spacing / steps_offset 1, then
# timesteps[-round(T t_max):] minus the last round(T t_min), after the single evaluation at 999.
OFFICIAL = {
    (6, 2 / 3, 1 / 2): [999, 499],  # CCSR-S2; facts §2: "N = 6 ... 999 then [499]"
    (12, 2 / 3, 1 / 2): [999, 582, 499],
    (18, 2 / 3, 1 / 2): [999, 606, 551, 496],
    (6, 2 / 3, 1 / 3): [999, 499, 333],
    (6, 5 / 6, 1 / 2): [999, 665, 499],
    (6, 5 / 6, 2 / 3): [999, 665],
    (6, 1 / 2, 1 / 6): [999, 333, 167],
}


class Recorder:
    """A denoiser recording its inputs; returns a fixed function of x_t so steps are checkable."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_t, t):
        self.calls.append((t, x_t.clone()))
        return 0.5 * x_t + 0.01 * t


@pytest.mark.parametrize(("n", "t_max", "t_min"), list(OFFICIAL))
def test_visited_timesteps_and_evaluations_match_official_v2(n, t_max, t_min):
    sampler = NonUniformSampler(t_max=t_max, t_min=t_min)
    visited = sampler.timesteps(T=n)
    assert visited == OFFICIAL[(n, t_max, t_min)]
    assert sampler.timesteps(len(visited)) == visited  # steps = S evaluations picks the same T
    denoise = Recorder()
    y = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    sampler.sample(denoise, y, timesteps=visited, generator=torch.Generator().manual_seed(1))
    assert [t for t, _ in denoise.calls] == OFFICIAL[(n, t_max, t_min)]
    assert len(denoise.calls) == round((t_max - t_min) * n + 1)  # S = (t_max - t_min) T + 1, Sec. III-D


def test_official_expression_on_diffusers_ddpm_timesteps():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    scheduler.set_timesteps(6)
    assert scheduler.timesteps.tolist() == [831, 665, 499, 333, 167, 1]
    for (n, t_max, t_min), visited in OFFICIAL.items():
        scheduler.set_timesteps(n)
        ts = scheduler.timesteps.tolist()
        loop = ts[-round(n * t_max):]  # from t_tao = timesteps[-round(N t_max)] ...
        loop = loop[: len(loop) - round(n * t_min)]  # ... minus the last round(N t_min)
        assert visited == [999, *loop]


def test_one_step_returns_the_t_equals_T_estimate():
    sampler = NonUniformSampler(steps=1, t_max=0.6666, t_min=0.0)  # README one-step settings
    assert sampler.timesteps() == [999]
    y = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = Recorder()
    out = sampler.sample(denoise, y, generator=torch.Generator().manual_seed(3))
    (t, x_big_t), = denoise.calls
    assert t == 999
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x_big_t, sampler.q_sample(y, 999, noise))  # the LR start, q(z_LR, 999)
    torch.testing.assert_close(out, denoise(x_big_t, 999))


def test_jump_renoises_the_T_estimate_to_t_max():
    sampler = NonUniformSampler()  # T = 6, 2/3, 1/2
    y = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = Recorder()
    out = sampler.sample(denoise, y, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x_big_t = sampler.q_sample(y, 999, torch.randn(y.shape, generator=g))
    x0_big_t = 0.5 * x_big_t + 0.01 * 999
    x_tmax = sampler.q_sample(x0_big_t, 499, torch.randn(y.shape, generator=g))  # x̂_tmax of Eq. (3)
    torch.testing.assert_close(denoise.calls[1][1], x_tmax)
    torch.testing.assert_close(out, 0.5 * x_tmax + 0.01 * 499)  # x̂0←t_min is the output


def test_loop_steps_are_ddpm_posteriors():
    sampler, ddpm = NonUniformSampler(), DDPMSampler(eta=1.0)
    x, x0 = torch.randn(2, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    for a, b in zip(sampler.posterior(x, 582, 499, x0), ddpm.posterior(x, 582, 499, x0), strict=True):
        torch.testing.assert_close(a, b)
    mean, variance = sampler.posterior(x, 999, 582, x0)
    torch.testing.assert_close(mean, sampler.alpha_bar(582, x).sqrt() * x0)
    torch.testing.assert_close(variance, 1 - sampler.alpha_bar(582, x))


def test_knobs_override_per_call_and_registry_config():
    sampler = build("sampler", "nonuniform", t_min=1 / 3, steps=3)
    assert isinstance(sampler, NonUniformSampler)
    assert sampler.timesteps() == [999, 499, 333]  # S = 3 with (2/3, 1/3): T = 6
    assert sampler.timesteps(T=6, t_max=5 / 6, t_min=2 / 3) == [999, 665]
    assert sampler.timesteps(T=12, t_min=0.5) == [999, 582, 499]
    with pytest.raises(ConfigError, match="not steps=2"):
        sampler.timesteps(2, T=12, t_min=0.5)


def test_uniform_baseline_shares_the_tables():
    sampler = NonUniformSampler()
    uniform = sampler.uniform()
    assert uniform.timesteps(2) == [999, 499]
    assert uniform.timesteps(3) == [999, 666, 332]
    assert torch.equal(uniform.alphas_cumprod, sampler.alphas_cumprod)


def test_bad_settings_name_the_problem():
    with pytest.raises(ConfigError, match="t_min <= t_max"):
        nonuniform_timesteps(6, 0.5, 2 / 3)
    with pytest.raises(ConfigError, match="t_min <= t_max"):
        NonUniformSampler(t_max=1.5)
    with pytest.raises(ConfigError, match="jump start"):
        nonuniform_timesteps(6, 1.0, 0.5, start=700)
    with pytest.raises(UnsupportedError, match="T=, t_max= and t_min="):
        NonUniformSampler().timesteps(6, start_t=200)
