"""DM-SR's hooks (:mod:`srkit.diffusion`): its own inference is the shared DDPM sampler with
:class:`EstimatedTimesteps`, :class:`EncodedStart` and :class:`ReusedNoise`; :class:`EstimatedStart` lends the
timestep estimator to any other SD method by config (e.g. InvSR's start step), with no code import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...diffusion import Chain, DiffusionMethod, NoiseHook, Schedule, StartState, TimestepProvider
from ...errors import ConfigError
from ...ops.resize import bicubic_upsample
from ...types import Sampler
from .modules import VGG19_CHANNELS, TimestepEstimator

__all__ = ["EncodedStart", "EstimatedStart", "EstimatedTimesteps", "ReusedNoise", "load_estimator"]


def _require(method: DiffusionMethod, *names: str) -> list[Any]:
    found = [getattr(method, name, None) for name in names]
    if any(value is None for value in found):
        raise ConfigError(f"this DM-SR hook needs a method with {', '.join(names)} (DM-SR); {method.descriptor.name} has not")
    return found


class EstimatedTimesteps(TimestepProvider):
    """DM-SR's schedule: each sample's t̂ (Eq. (10)) as the first timestep, spaced down linearly by the sampler
    (``round(t̂ (N - i) / N)``, Sec. 4.4), one list per sample."""

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, steps: int | None,
                 **knobs: Any) -> Schedule:
        (estimate,) = _require(method, "estimate")
        count = sampler.default_steps if steps is None else steps
        return [sampler.timesteps(count, start_t=max(int(t), count)) for t in estimate(chain.extras["i_lr"]).tolist()]


class EncodedStart(StartState):
    """X_SR^t = E_θ(I_LR, t): the timestep-aware encoder's noisy latent at the first timestep (Sec. 3.2)."""

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, t: int, **knobs: Any) -> Tensor:
        (encoder,) = _require(method, "encoder")
        i_lr = chain.extras["i_lr"]
        return encoder(i_lr * 2 - 1, torch.full((i_lr.shape[0],), t, device=i_lr.device, dtype=torch.long))


class ReusedNoise(NoiseHook):
    """DM-SR's multi-step DDIM (Sec. 4.4): every later input is re-noised with ε_SR, the UNet's noise prediction at
    the first timestep (which DM-SR's denoiser keeps in ``chain.extras["eps_sr"]``), instead of fresh noise."""

    def bind(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, **knobs: Any) -> Any:
        def reused(x_t: Tensor, *, t: int, t_prev: int, x0_pred: Tensor, generator: torch.Generator | None) -> Tensor:
            return chain.extras["eps_sr"]

        return reused


def load_estimator(spec: str, channels: Sequence[int] | None = None) -> TimestepEstimator:
    """DM-SR's timestep estimator T from a DM-SR weights file (its ``estimator.*`` tensors) or ``"synthetic"``."""
    from ...weights import load_weights, resolve_weights
    from . import DESCRIPTOR

    estimator = TimestepEstimator(tuple(channels or VGG19_CHANNELS), backbone_weights="none")
    load_weights(estimator, resolve_weights(DESCRIPTOR, "dmsr", spec), prefix="estimator.",
                 what=f"DM-SR timestep estimator ({spec})")
    return estimator.requires_grad_(False)


class EstimatedStart(nn.Module, TimestepProvider):
    """The start step of any SD-Turbo method from DM-SR's t̂ (beyond the papers): the batch's mean t̂, which measures
    how far the LR is from the HR, snapped to the nearest of ``snap_to`` (the steps the method was trained for,
    InvSR's S by default), then spaced down by the sampler. ``weights``: a file of :meth:`DMSR.save_weights`, or
    ``"synthetic"``; ``channels``: the estimator's VGG19 widths."""

    def __init__(self, weights: str, channels: Sequence[int] | None = None, snap_to: Sequence[int] = (250, 200, 150, 100)):
        super().__init__()
        self.estimator = load_estimator(weights, channels)
        self.snap_to = tuple(int(t) for t in snap_to)

    @torch.no_grad()
    def start_t(self, lr: Tensor) -> int:
        """The snapped t̂ of an LR batch in [0, 1]."""
        t_hat = float(self.estimator(bicubic_upsample(lr.to(self.estimator.head.weight), 4).clamp(0, 1)).mean())
        return min(self.snap_to, key=lambda t: (abs(t - t_hat), t))

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, steps: int | None,  # type: ignore[override]
                 **knobs: Any) -> Schedule:
        return sampler.timesteps(steps, start_t=self.start_t(method.from_model_range(chain.lr)))
