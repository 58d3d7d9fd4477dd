"""Posterior-guided ResShift: plug-in image-quality control for posterior diffusion SR (shared/papers/pg-resshift.md).

ResShift's reverse step gets the mean correction of Proposition 3.3.1 / Remark 3.3.1 and Algorithm 2::

    mu_new = mu + s * strength * alpha_t * Sigma_t * grad D_KL(P || Q_c)

with the Gaussian KL gradient of Lemma 3.2.1, grad D_KL(P || Q) = (m_P - m_Q) / sigma_Q^2 (exact with respect
to P's mean). P = N(mu, Sigma_t) is the model's step and Q_c = N(mu_c, Sigma_t) the same step with the guide's
latent as x0, mu_c = coef1 x_t + coef2 z_c (ResShift Eq. (7)); under the paper's constant variance (Assumption 2)
Sigma_t * grad D_KL = mu - mu_c = coef2 (x0_pred - z_c).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ...diffusion import Chain, DiffusionMethod, MeanCorrectionHook
from ...errors import ConfigError, InvalidImageError
from ...samplers.residual_shift import ResidualShiftSampler
from ...types import Sampler, check_image_tensor

__all__ = ["MODES", "GuidanceScales", "PosteriorGuidance", "PosteriorGuidanceStep", "kl_direction", "kl_gradient", "read_scales"]

MODES: dict[str, float] = {"reference": -1.0, "non-reference": 1.0}  # s: descend the KL to HR / ascend it from LR


def kl_gradient(p_mean: Tensor, q_mean: Tensor, q_variance: Tensor | float) -> Tensor:
    """grad over P's mean of D_KL(N(p_mean, .) || N(q_mean, q_variance)) = (p_mean - q_mean) / q_variance (Lemma 3.2.1)."""
    return (p_mean - q_mean) / q_variance


def _sign(mode: str) -> float:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    return MODES[mode]


@dataclass(frozen=True)
class GuidanceScales:
    """Calibrated alpha_t (Algorithm 1), per step index t = 0..T-1, or one value for every step."""

    alpha: Tensor  # (T,) per step or (1,) scalar, float64
    steps: int
    mode: str
    pairs: int

    def __post_init__(self) -> None:
        if self.alpha.dim() != 1 or self.alpha.numel() not in (1, self.steps):
            raise ConfigError(f"guidance scales must hold 1 or steps={self.steps} values, got shape {tuple(self.alpha.shape)}")
        _sign(self.mode)

    @property
    def per_step(self) -> bool:
        return self.alpha.numel() > 1 or self.steps == 1

    def at(self, t: int) -> float:
        return float(self.alpha[t if self.alpha.numel() > 1 else 0])

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file: tensor ``alpha`` and metadata steps, mode, pairs, per_step."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"steps": str(self.steps), "mode": self.mode, "pairs": str(self.pairs), "per_step": json.dumps(self.per_step)}
        save_file({"alpha": self.alpha.double().contiguous()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GuidanceScales:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"guidance scale file {str(path)!r} does not exist; write one with `srkit calibrate`")
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        missing = {"steps", "mode", "pairs"} - meta.keys()
        if missing:
            raise ConfigError(f"{path} lacks the metadata {sorted(missing)}; write scale files with `srkit calibrate`")
        return cls(load_file(str(path))["alpha"].double(), int(meta["steps"]), meta["mode"], int(meta["pairs"]))


def kl_direction(sampler: ResidualShiftSampler, mean: Tensor, guide_latent: Tensor, *, t: int, t_prev: int,
                 x_t: Tensor) -> Tensor:
    """Sigma_t * grad D_KL(P || Q_c), P = N(mean, Sigma_t), Q_c = N(mu_c, Sigma_t), mu_c the step mean with x0 = z_c.

    Sigma_t is the official clipped posterior variance: the step's variance for t >= 1, and still positive at the
    last step (where the chain adds no noise), so the direction is mu - mu_c at every step (Assumption 2).
    """
    guide_mean, _ = sampler.posterior(x_t, t, t_prev, guide_latent)
    variance = torch.exp(sampler.posterior_log_variance_clipped[t]).to(device=mean.device, dtype=mean.dtype)
    return variance * kl_gradient(mean, guide_mean, variance)


class PosteriorGuidanceStep:
    """The bound mean correction mu + s * strength * alpha_t * Sigma_t * grad D_KL(P || Q_c) (Eq. (11), Algorithm 2)."""

    def __init__(self, sampler: ResidualShiftSampler, guide_latent: Tensor, scales: GuidanceScales, *, mode: str,
                 strength: float = 1.0):
        self.sampler, self.guide_latent, self.scales = sampler, guide_latent, scales
        self.factor = _sign(mode) * float(strength)

    def __call__(self, mean: Tensor, *, variance: Tensor, t: int, t_prev: int, x_t: Tensor, x0_pred: Tensor) -> Tensor:
        alpha = self.factor * self.scales.at(t)
        if alpha == 0:
            return mean
        return mean + alpha * kl_direction(self.sampler, mean, self.guide_latent, t=t, t_prev=t_prev, x_t=x_t)


def read_scales(scales: str | Path | float | Sequence[float] | None, steps: int) -> GuidanceScales:
    """alpha_t from a scale file of `srkit calibrate` (checked against ``steps``), inline values, or 1 (``None``)."""
    if isinstance(scales, (str, Path)):
        loaded = GuidanceScales.load(scales)
        if loaded.steps != steps:
            raise ConfigError(f"{scales} was calibrated for {loaded.steps} steps, this model has {steps}; "
                              f"run `srkit calibrate method.steps={steps}`")
        return loaded
    values = [1.0] if scales is None else [float(scales)] if isinstance(scales, (int, float)) else list(scales)
    return GuidanceScales(torch.tensor(values, dtype=torch.float64), steps, "non-reference", 0)


class PosteriorGuidance(MeanCorrectionHook):
    """Posterior guidance as a mean-correction hook for any residual-shift method (ResShift, LPNSR, PG-ResShift).

    ``sr()`` knobs: ``guide``: ``"lr"`` (default) or an image tensor in [0, 1]; an LR-size guide gives the
    **non-reference** mode (Algorithm 2), s = +1: the step is pushed up the KL gradient away from the LR, the paper's
    sign flip for perceptual sharpness, and its latent is exactly the chain's y. A guide at output size (the HR) gives
    the **reference** mode (Eq. (11)), s = -1: the step descends the KL to the HR (fidelity); its latent is the
    encoder of the padded HR. ``mode`` overrides the mode implied by the guide; ``strength`` multiplies the
    calibrated alpha_t (0: no guidance). :meth:`srkit.SRMethod.sr` cuts a guide tensor into the LR's tiles.

    ``scales``: a file written by ``srkit calibrate``, or inline alpha values (one, or one per step index t = 0..T-1).
    Default: alpha_t = 1, a documented choice (the paper gives no values): in Sigma units the correction is then
    x0_pred -> x0_pred - s (x0_pred - z_c), i.e. the reference mode lands the last step on the HR latent and the
    non-reference mode extrapolates x0_pred by its distance from the LR latent.
    """

    knobs = ("guide", "mode", "strength")

    def __init__(self, scales: str | Path | float | Sequence[float] | None = None, strength: float = 1.0):
        self.scales_spec, self.strength = scales, float(strength)
        self._scales: dict[int, GuidanceScales] = {}

    def scales(self, steps: int) -> GuidanceScales:
        """alpha_t for a schedule of ``steps`` (read once)."""
        if steps not in self._scales:
            self._scales[steps] = read_scales(self.scales_spec, steps)
        return self._scales[steps]

    def bind(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, *, guide: str | Tensor = "lr",
             mode: str | None = None, strength: float | None = None) -> PosteriorGuidanceStep:
        if not isinstance(sampler, ResidualShiftSampler) or not hasattr(method, "encode_guide"):
            raise ConfigError(f"posterior guidance needs a residual-shift method; {method.descriptor.name} is not one")
        if isinstance(guide, str):
            if guide != "lr":
                raise ConfigError(f"guide must be 'lr' or an image tensor (e.g. the HR), got {guide!r}")
            is_hr, latent = False, chain.y
        else:
            guide = check_image_tensor(guide, name="guide")
            factor = guide.shape[-1] // chain.lr.shape[-1]
            if factor not in (1, method.scale) or guide.shape != (*chain.lr.shape[:2], *(factor * s for s in chain.lr.shape[-2:])):
                raise InvalidImageError(
                    f"guide has shape {tuple(guide.shape)}; it must be the HR ({method.scale}x the LR) or an LR-size "
                    "image, with the LR's batch size"
                )
            is_hr = factor != 1
            latent = method.encode_guide(guide, hr=is_hr)  # type: ignore[attr-defined]
        mode = mode if mode is not None else "reference" if is_hr else "non-reference"
        _sign(mode)
        return PosteriorGuidanceStep(sampler, latent, self.scales(sampler.num_steps), mode=mode,
                                     strength=self.strength if strength is None else strength)
