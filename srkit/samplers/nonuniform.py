"""CCSR's non-uniform timestep sampling (CCSR Sec. III-B, Fig. 3; official v2 ``pipeline_ccsr.py``).

The chain visits the last training timestep ``T`` (999, ``start_steps`` of the official code) once,
then jumps straight to ``t_max`` and runs a few uniform DDPM steps down to ``t_min``; the output is
the x0 estimate at the last visited timestep, x̂0←t_min (x̂0←T when the loop is empty: CCSR-S1).

Visited timesteps as CCSR v2 computes them (facts §2, "Timestep schedule"): ``ts`` = diffusers'
``DDPMScheduler.set_timesteps(N)`` (SD 2.1-base: ``leading`` spacing, ``steps_offset`` 1; N = 6 gives
[831, 665, 499, 333, 167, 1]); the loop is ``ts[-round(N t_max):]`` minus its last
``round(N t_min)`` entries, so S = (t_max - t_min) N + 1 network evaluations (CCSR Sec. III-D), e.g.
[999, 499] for (6, 2/3, 1/2). ``N = 1`` is the official one-step mode: only T is visited.

Transitions: T -> t_max re-noises the t = T estimate, x_tmax = sqrt(abar_tmax) x̂0←T +
sqrt(1 - abar_tmax) eps with fresh eps (CCSR Sec. III-B, the x̂_tmax of Eq. (3)); expressed as a
posterior that ignores x_T (mean sqrt(abar_tmax) x̂0, variance 1 - abar_tmax) so the noise hook
applies. Later steps are DDPM posteriors of the respaced chain (:class:`DDPMSampler`, ``eta = 1``),
and the last one lands on x0 (abar_{-1} = 1).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..errors import ConfigError, UnsupportedError
from ..types import MeanCorrection, NoiseProvider
from .ddpm import DDPMSampler, Prediction, Spacing, spaced_timesteps

__all__ = ["NonUniformSampler", "chain_length_for", "nonuniform_timesteps"]


def nonuniform_timesteps(steps: int, t_max: float, t_min: float, *, start: int = 999, num_train_timesteps: int = 1000,
                         spacing: Spacing = "leading", steps_offset: int = 1) -> list[int]:
    """The visited timesteps [start, loop...] of CCSR v2 for N = ``steps`` (see the module docstring)."""
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ConfigError(f"CCSR needs 0 <= t_min <= t_max <= 1, got t_max={t_max}, t_min={t_min}")
    if not 0 < start < num_train_timesteps:
        raise ConfigError(f"the jump start must lie in [1, {num_train_timesteps - 1}], got {start}")
    ts = spaced_timesteps(steps, num_train_timesteps=num_train_timesteps, spacing=spacing, steps_offset=steps_offset)
    if steps == 1:  # the official one-step mode: x̂0←T is the output
        return [start]
    keep, drop = round(steps * t_max), round(steps * t_min)
    loop = ts[len(ts) - keep: len(ts) - drop] if keep else []
    if loop and loop[0] >= start:
        raise ConfigError(f"t_max={t_max} with {steps} steps starts the loop at t={loop[0]}, not below the jump start {start}")
    return [start, *loop]


class NonUniformSampler(DDPMSampler):
    """CCSR's chain: one evaluation at ``start`` (T), a jump to t_max, uniform DDPM steps to t_min.

    ``steps`` is S, the number of network evaluations (default 2, CCSR-S2); the knobs ``T`` (N, the
    paper's T: the number of uniform timesteps of the full chain), ``t_max`` and ``t_min`` (the
    fractions of it kept and truncated; CCSR Sec. III-B, Tables II-III) shape the chain. Without ``T``,
    N is picked so that S = (t_max - t_min) N + 1 (Sec. III-D): S = 2 is N = 6, S = 3 and 4 are Table II's
    N = 12 and 18, S = 1 is the official one-step mode (only T). A ``T`` whose chain has another length
    than a given ``steps`` is an error. The other arguments are :class:`DDPMSampler`'s, listed so that
    conf/sampler/nonuniform.yaml mirrors them (defaults: SD 2.1-base's scaled-linear schedule, leading
    spacing with ``steps_offset`` 1, epsilon prediction, ``eta`` 1); its ``timesteps``/``start_t`` do not apply.
    """

    knobs = ("T", "t_max", "t_min")

    def __init__(
        self,
        steps: int = 2,
        t_max: float = 2 / 3,
        t_min: float = 0.5,
        start: int = 999,
        spacing: Spacing = "leading",
        steps_offset: int = 1,
        eta: float = 1.0,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        prediction_type: Prediction = "epsilon",
        noise: NoiseProvider | None = None,
        mean_correction: MeanCorrection | None = None,
    ):
        super().__init__(steps=steps, spacing=spacing, steps_offset=steps_offset, eta=eta,
                         num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule=beta_schedule, prediction_type=prediction_type, noise=noise,
                         mean_correction=mean_correction)
        self.t_max, self.t_min, self.start = float(t_max), float(t_min), int(start)
        self.timesteps()  # validate the defaults now

    def timesteps(self, steps: int | None = None, **knobs: Any) -> list[int]:
        """[T, loop...] with ``steps`` evaluations (default: the constructor's) or for the knob ``T`` = N;
        knobs ``t_max``, ``t_min`` (default: the constructor's)."""
        t_max = float(knobs.pop("t_max", self.t_max))
        t_min = float(knobs.pop("t_min", self.t_min))
        chain_length = knobs.pop("T", None)
        if knobs:
            raise UnsupportedError(f"the non-uniform sampler has no options {sorted(knobs)}; it takes T=, t_max= and t_min=")
        if chain_length is None:
            chain_length = chain_length_for(self.default_steps if steps is None else steps, t_max, t_min)
        ts = nonuniform_timesteps(int(chain_length), t_max, t_min, start=self.start, num_train_timesteps=self.num_train_timesteps,
                                  spacing=self.spacing, steps_offset=self.steps_offset)
        if steps is not None and len(ts) != steps:
            raise ConfigError(f"T={chain_length} with t_max={t_max:.4g}, t_min={t_min:.4g} visits {ts} ({len(ts)} evaluations), "
                              f"not steps={steps}; pass steps or T")
        return ts

    def uniform(self) -> DDPMSampler:
        """The same diffusion (tables, prediction type, eta, hooks) with uniform ``trailing`` timesteps
        from T: ``steps`` S visits [999, ...] with S evaluations, the uniform-sampling baseline of
        CCSR's stability comparison (Table I's V1, without non-uniform sampling)."""
        sampler = DDPMSampler(steps=self.steps, spacing="trailing", steps_offset=0, eta=self.eta,
                              num_train_timesteps=self.num_train_timesteps, prediction_type=self.prediction_type,
                              noise=self.noise, mean_correction=self.mean_correction)
        sampler.alphas_cumprod = self.alphas_cumprod
        return sampler

    def posterior(self, x_t: Tensor, t: int, t_prev: int, x0_pred: Tensor) -> tuple[Tensor, Tensor]:
        """The jump T -> t_max re-noises x̂0←T (x_T is dropped); other steps are DDPM posteriors."""
        if t == self.start and t_prev >= 0:
            return self.renoised(x_t, t_prev, x0_pred)
        return super().posterior(x_t, t, t_prev, x0_pred)


def chain_length_for(steps: int, t_max: float, t_min: float) -> int:
    """N such that the chain has ``steps`` = S = (t_max - t_min) N + 1 evaluations (1 for CCSR-S1)."""
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"CCSR needs steps >= 1, got {steps}")
    if steps == 1:
        return 1
    if t_max <= t_min:
        raise ConfigError(f"t_max={t_max} <= t_min={t_min} leaves no loop steps; use steps=1 or a larger t_max")
    return round((steps - 1) / (t_max - t_min))
