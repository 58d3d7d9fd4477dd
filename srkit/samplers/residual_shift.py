"""The residual-shifting chain of ResShift (Yue et al., NeurIPS 2023 / TPAMI 2024), as the official code runs it.

Forward process (ResShift Eq. (2); LPNSR Eq. (2)), with the residual e_0 = y_0 - x_0::

    q(x_t | x_0, y_0) = N(x_0 + eta_t e_0, kappa^2 eta_t I)

Reverse step (posterior, ResShift Eq. (7); LPNSR Eq. (4)-(5)), alpha_t = eta_t - eta_{t-1}::

    mu = eta_{t-1}/eta_t x_t + alpha_t/eta_t x0_pred,   var = kappa^2 eta_{t-1}/eta_t alpha_t

The schedule is ``models/gaussian_diffusion.py``'s "exponential" one (shared/facts/resshift-lpnsr.md
sec. 1.3): sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level), sqrt(eta_T) = ``etas_end`` and
sqrt(eta_t) = sqrt(eta_1) * b^(((t-1)/(T-1))^p (T-1)) with b = (sqrt(eta_T)/sqrt(eta_1))^(1/(T-1)).

Fewer steps than the schedule's T (LPNSR's 1-3 step modes, as its official ``inference.py`` runs them with
``num_steps`` < T on the T = 4 tables): the chain starts at step index k-1 from LPNSR Eq. (3),
x_{k-1} = y + kappa sqrt(eta_{k-1}) eps (x_0 replaced by y in the forward marginal), then runs the same
posterior steps k-1 .. 0. :class:`OptimalNoise` is the closed-form oracle noise of LPNSR Eq. (9)/(20).

Official numerics reproduced on purpose (shared/reference/README.md sec. 7.0): the tables are built
in float64 but every constant is rounded to float32 where the chain uses it (``_extract_into_tensor``
calls ``.float()``), the input-normalisation std sqrt(kappa^2 eta_t + 1) is evaluated in float32, and
the noise scale is exp(log_var / 2) of the float32 clipped log-variance.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, UnsupportedError
from ..types import MeanCorrection, NoiseProvider, Sampler

__all__ = ["OptimalNoise", "ResidualShiftSampler", "eta_schedule"]


def eta_schedule(steps: int, *, kappa: float, power: float, min_noise_level: float, etas_end: float) -> Tensor:
    """sqrt(eta_t) for t = 1..T (index 0..T-1) in float64, ResShift's "exponential" schedule."""
    sqrt_eta_1 = min(min_noise_level / kappa, min_noise_level)
    if steps == 1:
        return torch.tensor([etas_end], dtype=torch.float64)
    increaser = math.exp(math.log(etas_end / sqrt_eta_1) / (steps - 1))
    base = torch.linspace(0, 1, steps, dtype=torch.float64) ** power * (steps - 1)
    return sqrt_eta_1 * increaser**base


class ResidualShiftSampler(Sampler):
    """ResShift's reverse chain in the VQ-f4 latent: prior x_T = y + kappa sqrt(eta_T) eps, x0-prediction
    posterior steps over t = T-1 .. 0 (step indices, the denoiser's timesteps), no noise at the last step.

    Defaults are the v3 (4-step) values of ``configs/realsr_swinunet_realesrgan256_journal.yaml``;
    the 15-step v1/v2 checkpoints use ``steps=15, min_noise_level=0.04``.
    ``normalize_input``: the denoiser sees x_t / sqrt(kappa^2 eta_t + 1) (latent mode), see :meth:`scale_input`.
    """

    def __init__(
        self,
        steps: int = 4,
        kappa: float = 2.0,
        power: float = 0.3,
        min_noise_level: float = 0.2,
        etas_end: float = 0.99,
        normalize_input: bool = True,
        noise: NoiseProvider | None = None,
        mean_correction: MeanCorrection | None = None,
    ):
        super().__init__(noise=noise, mean_correction=mean_correction)
        if int(steps) != steps or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        if kappa <= 0 or min_noise_level <= 0 or not 0 < etas_end < 1 or power <= 0:
            raise ConfigError(
                f"need kappa > 0, power > 0, min_noise_level > 0 and 0 < etas_end < 1; got kappa={kappa}, "
                f"power={power}, min_noise_level={min_noise_level}, etas_end={etas_end}"
            )
        self.num_steps = int(steps)
        self.kappa = float(kappa)
        self.normalize_input = normalize_input
        self.sqrt_etas = eta_schedule(
            self.num_steps, kappa=kappa, power=power, min_noise_level=min_noise_level, etas_end=etas_end
        )
        self.etas = self.sqrt_etas**2
        etas_prev = torch.cat([self.etas.new_zeros(1), self.etas[:-1]])
        alpha = self.etas - etas_prev
        self.coef1 = etas_prev / self.etas  # Eq. (7), ResShift: weight of x_t in the posterior mean
        self.coef2 = alpha / self.etas  # weight of x0_pred
        self.posterior_variance = self.kappa**2 * etas_prev / self.etas * alpha
        # log-variance clipped as officially: entry 0 (zero variance) replaced by entry 1
        clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]) if steps > 1 else self.posterior_variance
        self.posterior_log_variance_clipped = clipped.log()
        f32 = self.etas.float()
        self.input_std = (f32 * self.kappa**2 + 1).sqrt()  # float32, as the official _scale_input
        self.prior_std = self.kappa * self.sqrt_etas  # kappa sqrt(eta_t): the noise scale of Eq. (2)
        # The variance of the noise posterior() adds at each step: exp(log_var_clipped / 2)^2 with the official noise
        # scale's float32 rounding, each entry computed as the official code computes it for one step
        self.noise_variance = torch.stack([torch.exp(0.5 * v.float()).double() ** 2 for v in self.posterior_log_variance_clipped])

    @property
    def default_steps(self) -> int:
        return self.num_steps

    def timesteps(self, steps: int | None = None, **knobs: Any) -> list[int]:
        """Step indices k-1 .. 0 for ``steps`` = k <= T (default T); k < T starts from LPNSR Eq. (3)."""
        if knobs:
            raise UnsupportedError(f"the residual-shifting sampler has no options {sorted(knobs)}")
        steps = self.num_steps if steps is None else steps
        if int(steps) != steps or not 1 <= steps <= self.num_steps:
            raise UnsupportedError(
                f"this residual-shifting schedule has {self.num_steps} steps and runs 1..{self.num_steps} of them, "
                f"got steps={steps}; for more, build ResidualShiftSampler(steps={steps}) (and use a denoiser trained for it)"
            )
        return list(range(int(steps) - 1, -1, -1))

    def _const(self, name: str, t: int | Tensor, like: Tensor) -> Tensor:
        """``self.<name>[t]`` rounded to float32 (as officially), then in ``like``'s dtype and device: a scalar for an
        int ``t``, (B, 1, 1, 1) for a (B,) tensor of step indices (one per sample, as in training)."""
        table = self.table_on(like, name, lambda: getattr(self, name).float())
        return table[t].view(-1, *[1] * (like.dim() - 1)) if isinstance(t, Tensor) else table[t]

    def scale_input(self, x_t: Tensor, t: int | Tensor) -> Tensor:
        """The denoiser's input x_t / sqrt(kappa^2 eta_t + 1) (identity when not ``normalize_input``)."""
        if not self.normalize_input:
            return x_t
        return x_t / self._const("input_std", t, x_t)

    def prior(self, y: Tensor, noise: Tensor, t: int | None = None) -> Tensor:
        """x_t = y + kappa sqrt(eta_t) eps at step index ``t`` (default T-1): ResShift's prior at t = T, LPNSR
        Eq. (3) below it (the forward marginal Eq. (2) with the unknown x_0 replaced by y)."""
        return y + self._const("prior_std", self.num_steps - 1 if t is None else t, y) * noise

    def q_sample(self, x0: Tensor, y: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """A draw of q(x_t | x_0, y_0) = N(x_0 + eta_t (y_0 - x_0), kappa^2 eta_t I) (ResShift Eq. (2))."""
        eta = self._const("etas", t, x0)
        return x0 + eta * (y - x0) + self._const("prior_std", t, x0) * noise

    def posterior(self, x_t: Tensor, t: int, t_prev: int, x0_pred: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0 = x0_pred) (ResShift Eq. (7)).

        The variance is exp(log_var_clipped / 2)^2 with the float32 rounding of the official noise
        scale (its square root is exactly the official sigma_t in float64); 0 at the last step (t = 0).
        """
        if t_prev != t - 1:
            raise UnsupportedError(f"the residual-shifting chain steps from t to t-1, got t={t}, t_prev={t_prev}")
        mean = self._const("coef1", t, x_t) * x_t + self._const("coef2", t, x_t) * x0_pred
        if t == 0:
            return mean, x_t.new_zeros(())
        return mean, self.table_on(x_t, "noise_variance")[t]


class OptimalNoise:
    """The closed-form optimal intermediate noise of LPNSR Eq. (9) (Eq. (20) in the appendix), given the HR latent.

    z*_{t-1} = ((1 - eta_{t-1}) x_0 + eta_{t-1} y_0 - mu_theta(x_t, y_0, t)) / sqrt(Sigma_theta), so that the step
    x_{t-1} = mu + sqrt(Sigma) z* lands on the forward marginal's mean (1 - eta_{t-1}) x_0 + eta_{t-1} y_0 (Eq. (21)).
    An oracle (it needs ``x0``, the HR latent): for analysis and tests, not for inference. ``mu`` is the uncorrected
    posterior mean, so pair it with no mean correction.
    """

    def __init__(self, sampler: ResidualShiftSampler, x0: Tensor, y: Tensor):
        self.sampler, self.x0, self.y = sampler, x0, y

    def __call__(self, x_t: Tensor, *, t: int, t_prev: int, x0_pred: Tensor, generator: torch.Generator | None) -> Tensor:
        mean, variance = self.sampler.posterior(x_t, t, t_prev, x0_pred)
        eta_prev = self.sampler.etas[t_prev].to(device=x_t.device, dtype=x_t.dtype)
        target = (1 - eta_prev) * self.x0 + eta_prev * self.y  # Eq. (21)
        return (target - mean) / variance.sqrt()  # Eq. (9)
