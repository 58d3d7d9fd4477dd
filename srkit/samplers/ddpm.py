"""The DDPM/DDIM family of Stable Diffusion on diffusers' scheduler maths, with partial starts.

Forward process (Ho et al. 2020; InvSR Eq. (2)): q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),
with ``abar`` the cumulative product of diffusers' beta schedule (``scaled_linear`` 0.00085..0.012
over 1000 steps for SD 1.x/2.x and SD-Turbo). Reverse step between any two visited timesteps
t > s (the respaced chain; InvSR Eq. (3)-(4), Alg. 1), from the x0 prediction (InvSR Eq. (9))::

    eps   = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)
    var   = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)
    mean  = sqrt(abar_s) x0 + sqrt(1 - abar_s - var) eps

``eta = 1`` is the DDPM posterior q(x_s | x_t, x0) of the respaced chain (diffusers'
``DDPMScheduler.step``, the same quantity written as ``c0 x0 + ct x_t``), ``eta = 0`` is DDIM, which
is also diffusers' Euler step in the sigma form x / sqrt(abar) (see :meth:`DDPMSampler.sigma`).
The last step (``t_prev = -1``) lands on x0 (abar_{-1} = 1).

Partial start: ``sample(..., x_start=...)`` begins at the first visited timestep from a state the
method provides (InvSR Eq. (8), CCSR's LR start, DM-SR's encoder output).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from ..errors import ConfigError, UnsupportedError
from ..types import MeanCorrection, NoiseProvider, Sampler
from .schedule import check_timesteps

__all__ = ["DDPMSampler", "Spacing", "spaced_timesteps"]

Spacing = Literal["leading", "trailing", "linspace"]
Prediction = Literal["epsilon", "v_prediction", "sample"]


def spaced_timesteps(steps: int, *, num_train_timesteps: int = 1000, spacing: Spacing = "leading", steps_offset: int = 0,
                     start_t: int | None = None) -> list[int]:
    """``steps`` decreasing timesteps as diffusers' ``set_timesteps`` spaces them.

    With ``start_t`` the chain is partial: ``steps`` timesteps from ``start_t`` down, spaced
    ``start_t * (steps - i) / steps`` (``trailing`` on the range [0, start_t]), so ``start_t`` is the
    first one visited.
    """
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if start_t is not None:
        if not 0 < start_t < num_train_timesteps:
            raise ConfigError(f"start_t must lie in [1, {num_train_timesteps - 1}], got {start_t}")
        if steps > start_t:
            raise ConfigError(f"{steps} steps do not fit below start_t={start_t}")
        return [round(start_t * (steps - i) / steps) for i in range(steps)]
    if steps > num_train_timesteps:
        raise ConfigError(f"steps={steps} exceeds num_train_timesteps={num_train_timesteps}")
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing=spacing, steps_offset=steps_offset)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


class DDPMSampler(Sampler):
    """DDPM (``eta=1``) / DDIM (``eta=0``) over visited timesteps chosen by ``steps`` + spacing,
    ``start_t`` (partial chain) or an explicit ``timesteps`` list; see the module docstring.

    The denoiser given to :meth:`sample` returns the x0 prediction; :meth:`predict_x0` converts an
    epsilon or v network output. Tables are float64 (diffusers computes ``alphas_cumprod`` in
    float32: those float32 values, widened). ``renoise`` replaces every step by :meth:`renoised`.
    """

    knobs = ("start_t",)

    def __init__(
        self,
        steps: int = 1,
        timesteps: Sequence[int] | None = None,
        start_t: int | None = None,
        spacing: Spacing = "leading",
        steps_offset: int = 1,
        eta: float = 1.0,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        prediction_type: Prediction = "epsilon",
        renoise: bool = False,
        noise: NoiseProvider | None = None,
        mean_correction: MeanCorrection | None = None,
    ):
        super().__init__(noise=noise, mean_correction=mean_correction)
        from diffusers import DDPMScheduler

        if eta < 0:
            raise ConfigError(f"eta must be >= 0 (0: DDIM, 1: DDPM), got {eta}")
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")
        try:
            scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                                      beta_schedule=beta_schedule)
        except NotImplementedError as err:
            raise ConfigError(f"unknown beta_schedule {beta_schedule!r}: {err}") from err
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        self.num_train_timesteps = num_train_timesteps
        self.steps, self.start_t, self.spacing, self.steps_offset = steps, start_t, spacing, steps_offset
        self.fixed_timesteps = None if timesteps is None else check_timesteps(timesteps, upper=num_train_timesteps)
        self.eta, self.prediction_type, self.renoise = float(eta), prediction_type, bool(renoise)

    @property
    def default_steps(self) -> int:
        return len(self.fixed_timesteps) if self.fixed_timesteps is not None else int(self.steps)

    @property
    def schedule_is_configured(self) -> bool:
        return self.fixed_timesteps is not None or self.start_t is not None

    def timesteps(self, steps: int | None = None, **knobs: Any) -> list[int]:
        """The visited timesteps: the constructor's ``timesteps`` list, or ``steps`` (default: the constructor's)
        spaced from the knob ``start_t`` (a partial chain; default: the constructor's) or over the whole range."""
        start_t = knobs.pop("start_t", self.start_t)
        if knobs:
            raise UnsupportedError(f"the DDPM sampler has no options {sorted(knobs)}; it takes start_t=")
        if self.fixed_timesteps is not None and start_t is None:
            if steps not in (None, len(self.fixed_timesteps)):
                raise ConfigError(f"steps={steps} and the sampler's timesteps {self.fixed_timesteps} disagree; pass only one")
            return list(self.fixed_timesteps)
        return spaced_timesteps(self.default_steps if steps is None else steps, num_train_timesteps=self.num_train_timesteps,
                                spacing=self.spacing, steps_offset=self.steps_offset, start_t=start_t)

    # ---------------------------------------------------------------- tables

    def alpha_bar(self, t: int | Tensor, like: Tensor) -> Tensor:
        """abar_t like ``like``: a scalar for an int ``t`` (1 for t < 0: the clean end of the chain), or
        (B, 1, 1, 1) for a (B,) tensor of timesteps (one per sample, as in training)."""
        if isinstance(t, Tensor):
            return self.table_on(like, "alphas_cumprod")[t].view(-1, *[1] * (like.dim() - 1))
        return self.table_on(like, "alphas_cumprod")[t] if t >= 0 else like.new_ones(())

    def sigma(self, t: int) -> float:
        """The variance-exploding sigma_t = sqrt((1 - abar_t) / abar_t) of diffusers' Euler schedulers:
        x_t / sqrt(abar_t) = x_0 + sigma_t eps (InvSR's official start z_LR + sigma_t f_w)."""
        abar = float(self.alphas_cumprod[t])
        return ((1 - abar) / abar) ** 0.5

    # ---------------------------------------------------------------- forward process and conversions

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """A draw of q(x_t | x_0) = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (InvSR Eq. (2), (7))."""
        abar = self.alpha_bar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, model_output: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """x0 from the network output per ``prediction_type`` (epsilon: InvSR Eq. (9))."""
        abar = self.alpha_bar(t, x_t)
        if self.prediction_type == "epsilon":
            return (x_t - (1 - abar).sqrt() * model_output) / abar.sqrt()
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * x_t - (1 - abar).sqrt() * model_output
        return model_output

    def predict_eps(self, x_t: Tensor, t: int | Tensor, x0: Tensor) -> Tensor:
        """The noise implied by x_t and x0: (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        abar = self.alpha_bar(t, x_t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    # ---------------------------------------------------------------- the chain

    def prior(self, y: Tensor, noise: Tensor, t: int | None = None) -> Tensor:
        """q(x_t | x_0 = y) at ``t`` (default: the last training timestep): CCSR v2's LR start at T; for y = 0 the
        text-to-image start sqrt(1 - abar_T) noise."""
        return self.q_sample(y, self.num_train_timesteps - 1 if t is None else t, noise)

    def renoised(self, x_t: Tensor, t_prev: int, x0_pred: Tensor) -> tuple[Tensor, Tensor]:
        """The step that forgets x_t and re-noises the x0 estimate to ``t_prev``: mean sqrt(abar_prev) x0,
        variance 1 - abar_prev, so x_prev = q_sample(x0, t_prev, noise) (multistep consistency sampling; DM-SR
        Sec. 4.4 with the reused noise eps_SR; CCSR's jump from T to t_max)."""
        abar_prev = self.alpha_bar(t_prev, x_t)
        return abar_prev.sqrt() * x0_pred, 1 - abar_prev

    def posterior(self, x_t: Tensor, t: int, t_prev: int, x0_pred: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the DDIM(eta) step t -> t_prev (DDPM posterior at eta = 1; :meth:`renoised` if
        ``renoise``)."""
        if t_prev >= t:
            raise UnsupportedError(f"the reverse chain goes to smaller timesteps, got t={t}, t_prev={t_prev}")
        if self.renoise:
            return self.renoised(x_t, t_prev, x0_pred)
        abar_t, abar_prev = self.alpha_bar(t, x_t), self.alpha_bar(t_prev, x_t)
        variance = self.eta**2 * (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
        eps = self.predict_eps(x_t, t, x0_pred)
        mean = abar_prev.sqrt() * x0_pred + (1 - abar_prev - variance).clamp(min=0).sqrt() * eps
        return mean, variance
