"""The residual-shifting sampler: v3 schedule table, forward moments and posterior by Monte Carlo, hooks."""

from __future__ import annotations

import pytest
import torch

from srkit import registry
from srkit.errors import ConfigError, UnsupportedError
from srkit.samplers.residual_shift import OptimalNoise, ResidualShiftSampler

# shared/facts/resshift-lpnsr.md sec. 1.3, v3 table (T=4, p=0.3, kappa=2.0, min_noise_level 0.2)
V3 = {
    "sqrt_etas": [0.1, 0.520096, 0.761382, 0.99],
    "etas": [0.01, 0.270500, 0.579703, 0.9801],
    "posterior_variance": [0.0, 0.038521, 0.577119, 0.947297],
    "coef1": [0.0, 0.036969, 0.466619, 0.591473],
    "coef2": [1.0, 0.963031, 0.533381, 0.408527],
    "input_std": [1.0198, 1.4429, 1.8218, 2.2182],
}


def test_v3_schedule_matches_the_official_table():
    sampler = ResidualShiftSampler()
    for name, values in V3.items():
        table = getattr(sampler, name).double()
        atol = 5e-5 if name == "input_std" else 5e-7  # the facts round to 4 and 6 decimals
        torch.testing.assert_close(table, torch.tensor(values, dtype=torch.float64), atol=atol, rtol=0)
    # full-precision values of shared/reference/README.md sec. 1.4, to 1e-6 (the acceptance bound)
    exact = [0.1, 0.5200963722082474, 0.761381990619204, 0.9899999999999998]
    torch.testing.assert_close(sampler.sqrt_etas, torch.tensor(exact, dtype=torch.float64), atol=1e-6, rtol=0)
    assert sampler.timesteps() == [3, 2, 1, 0]


def _shipped_config() -> dict:
    # registry.build("sampler", "residual_shift") once the catalog registers the sampler
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(registry.config_dir() / "sampler" / "residual_shift.yaml"))


def test_v1_v2_schedule_and_config():
    sampler = registry.instantiate({**_shipped_config(), "steps": 15, "min_noise_level": 0.04}, where="test")
    assert sampler.timesteps() == list(range(14, -1, -1))
    assert sampler.sqrt_etas[0] == pytest.approx(0.02) and sampler.sqrt_etas[-1] == pytest.approx(0.99)
    assert torch.all(sampler.sqrt_etas.diff() > 0)
    default = registry.instantiate(_shipped_config(), where="test")
    torch.testing.assert_close(default.sqrt_etas, ResidualShiftSampler().sqrt_etas, atol=0, rtol=0)


def test_forward_process_moments_monte_carlo():
    """q(x_t | x0, y0) = N(x0 + eta_t (y0 - x0), kappa^2 eta_t) (ResShift Eq. (2)), 400k draws per t."""
    sampler = ResidualShiftSampler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.7, -0.3], dtype=torch.float64).view(1, 2, 1, 1)
    y0 = torch.tensor([-0.5, 1.2], dtype=torch.float64).view(1, 2, 1, 1)
    n = 400_000
    for t in range(4):
        noise = torch.randn(n, 2, 1, 1, generator=g, dtype=torch.float64)
        x_t = sampler.q_sample(x0.expand(n, -1, -1, -1), y0.expand(n, -1, -1, -1), t, noise)
        eta = sampler.etas[t]
        std = 2.0 * eta.sqrt()
        torch.testing.assert_close(x_t.mean(0), x0[0] + eta * (y0[0] - x0[0]), atol=float(4 * std / n**0.5), rtol=0)
        torch.testing.assert_close(x_t.var(0), (4.0 * eta).expand(2, 1, 1), rtol=0.01, atol=0)


def test_posterior_is_the_conditional_of_the_forward_chain_monte_carlo():
    """Draw x_{t-1} ~ q(x_{t-1}|x0,y0), then x_t = x_{t-1} + alpha_t e0 + kappa sqrt(alpha_t) eps (ResShift
    Eq. (1)); regressing x_{t-1} on x_t must give the posterior's coefficients and variance (Eq. (7))."""
    sampler = ResidualShiftSampler()
    g = torch.Generator().manual_seed(1)
    n = 400_000
    x0 = torch.full((n, 1, 1, 1), 0.4, dtype=torch.float64)
    y0 = torch.full((n, 1, 1, 1), -0.6, dtype=torch.float64)
    for t in (1, 2, 3):
        alpha = sampler.etas[t] - sampler.etas[t - 1]
        x_prev = sampler.q_sample(x0, y0, t - 1, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        x_t = x_prev + alpha * (y0 - x0) + 2.0 * alpha.sqrt() * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        mean, var = sampler.posterior(x_t, t, t - 1, x0)
        residual = x_prev - mean
        assert abs(float(residual.mean())) < 4 * float(var.sqrt()) / n**0.5
        assert float(residual.var()) == pytest.approx(float(var), rel=0.01)
        assert abs(float(torch.corrcoef(torch.stack([residual.flatten(), x_t.flatten()]))[0, 1])) < 0.01


def test_sample_uses_hooks_and_adds_no_noise_at_the_last_step():
    calls: list[tuple[str, int]] = []

    def noise(x_t, *, t, t_prev, x0_pred, generator):
        calls.append(("noise", t))
        return torch.ones_like(x_t)

    def correction(mean, *, variance, t, t_prev, x_t, x0_pred):
        calls.append(("mean", t))
        return mean

    sampler = ResidualShiftSampler(noise=noise, mean_correction=correction)
    x0 = torch.full((1, 3, 4, 4), 0.25, dtype=torch.float64)
    y = torch.zeros_like(x0)
    out = sampler.sample(lambda x, t: x0, y, generator=torch.Generator().manual_seed(0))
    assert calls == [("noise", 3), ("mean", 3), ("noise", 2), ("mean", 2), ("noise", 1), ("mean", 1), ("mean", 0)]
    torch.testing.assert_close(out, x0, atol=0, rtol=0)  # coef1[0] = 0, coef2[0] = 1, no noise


def test_prior_and_input_scaling():
    sampler = ResidualShiftSampler()
    y = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    eps = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(sampler.prior(y, eps), y + 1.98 * eps, atol=1e-7, rtol=0)
    torch.testing.assert_close(sampler.scale_input(y, 3), y / 2.218197466412762, atol=1e-7, rtol=0)
    assert torch.equal(ResidualShiftSampler(normalize_input=False).scale_input(y, 3), y)


def test_bad_arguments_name_the_fix():
    with pytest.raises(UnsupportedError, match="ResidualShiftSampler\\(steps=5\\)"):
        ResidualShiftSampler().timesteps(5)
    with pytest.raises(UnsupportedError, match=r"runs 1\.\.4"):
        ResidualShiftSampler().timesteps(0)
    with pytest.raises(ConfigError, match="etas_end"):
        ResidualShiftSampler(etas_end=1.5)
    with pytest.raises(ConfigError, match="positive integer"):
        ResidualShiftSampler(steps=0)
    with pytest.raises(UnsupportedError, match="t-1"):
        ResidualShiftSampler().posterior(torch.zeros(1), 3, 1, torch.zeros(1))


def test_fewer_steps_start_from_lpnsr_eq3_on_the_same_tables():
    """k < T steps: x_{k-1} = y + kappa sqrt(eta_{k-1}) eps (LPNSR Eq. (3)), then steps k-1 .. 0 (official inference.py)."""
    sampler = ResidualShiftSampler()
    y = torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    seen: list[tuple[int, torch.Tensor]] = []

    def denoise(x, t):
        seen.append((t, x))
        return torch.zeros_like(x)

    for k in (1, 2, 3):
        assert sampler.timesteps(k) == list(range(k - 1, -1, -1))
        seen.clear()
        out = sampler.sample(denoise, y, timesteps=sampler.timesteps(k), generator=torch.Generator().manual_seed(7))
        eps = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        start = y + (2.0 * sampler.sqrt_etas[k - 1]).float().double() * eps
        assert [t for t, _ in seen] == list(range(k - 1, -1, -1))
        torch.testing.assert_close(seen[0][1], start, atol=1e-12, rtol=0)
        assert torch.equal(out, torch.zeros_like(y))  # the last step returns x0_pred
    torch.testing.assert_close(sampler.prior(y, eps), sampler.prior(y, eps, t=3), atol=0, rtol=0)


def test_optimal_noise_recovers_x0_exactly_eq21():
    """LPNSR Eq. (21): with z* of Eq. (9) at every step each state is (1 - eta_t) x0 + eta_t y, on which a
    denoiser consistent with the forward process (the posterior mean of Eq. (18)) returns the true x0, so the
    chain lands on x0; with Gaussian noise the states leave that trajectory and the output misses x0."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    y = x0 + 0.5 * torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    sampler = ResidualShiftSampler()
    states: list[tuple[int, torch.Tensor]] = []

    def denoise(x, t):
        states.append((t, x))
        eta = sampler.etas[t]
        return (x - eta * y) / (1 - eta)  # Eq. (18): exactly x0 on the Eq. (21) trajectory

    for steps in (4, 3, 2):
        states.clear()
        sampler.noise = OptimalNoise(sampler, x0, y)
        out = sampler.sample(denoise, y, timesteps=sampler.timesteps(steps), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)
        for t, x in states[1:]:
            torch.testing.assert_close(x, (1 - sampler.etas[t]) * x0 + sampler.etas[t] * y, atol=1e-9, rtol=0)
        sampler.noise = ResidualShiftSampler().noise  # Gaussian
        miss = sampler.sample(denoise, y, timesteps=sampler.timesteps(steps), generator=torch.Generator().manual_seed(0))
        assert float((miss - x0).abs().mean()) > 0.05


def test_schedule_tables_move_to_a_device_once_and_keep_the_per_entry_values():
    """A step reads its constants from tables kept on the device of the chain (no copy to a GPU per step, which
    would make the host wait); the values are those of the per-entry conversion the official code does."""
    import copy

    sampler = ResidualShiftSampler(steps=4)
    x = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    kept = sampler.table_on(x, "etas", lambda: sampler.etas.float())
    assert copy.copy(sampler).table_on(x, "etas") is kept  # the per-call copies share the kept tables
    assert sampler.table_on(x.float(), "etas").dtype == torch.float32  # one per (device, dtype)
    for t in range(4):
        assert torch.equal(sampler._const("etas", t, x), sampler.etas[t].float().to(torch.float64))
        sigma = torch.exp(0.5 * sampler.posterior_log_variance_clipped[t].float())
        variance = sampler.posterior(x, t, t - 1, x)[1]
        assert torch.equal(variance, x.new_zeros(()) if t == 0 else (sigma.double() ** 2))
    index = torch.tensor([3, 0])
    assert torch.equal(sampler._const("prior_std", index, x).flatten(), (sampler.kappa * sampler.sqrt_etas)[index].float().double())
