"""Posterior-guided ResShift: plug-in image-quality control for posterior diffusion SR (shared/papers/pg-resshift.md).

ResShift's reverse step gets the mean correction of Proposition 3.3.1 / Remark 3.3.1, Eq. (11) and Algorithm 2::

    mu_new = mu + s * strength * alpha_t * Sigma_t * grad D_KL(P || Q_c)

P = N(mu_theta(x_t), Sigma_t) is the model's step and Q_c = N(mu_c(x_t), Sigma_t) the same step with the guide's
latent as x0, mu_c = coef1 x_t + coef2 z_c (ResShift Eq. (7)); under the paper's constant variance (Assumption 2)
the KL is ||mu_theta - mu_c||^2 / (2 Sigma_t) (Lemma 3.2.1). Its gradient comes in two readings (``gradient``):

- ``"autograd"`` (the paper's: Alg. 2 line 5 writes grad_{x_t}, and Sec. 3.1 "taking gradients of the neural
  network model"): with respect to x_t, through the denoiser, Sigma_t grad = coef2^2 J_theta^T (x0_pred - z_c),
  by autograd. It costs a second forward pass of the denoiser with its backward at every step.
- ``"closed-form"``: with respect to P's mean (Lemma 3.2.1 as stated), Sigma_t grad = mu - mu_c =
  coef2 (x0_pred - z_c): no network pass. With alpha = 1 in reference mode it is the exact posterior step given
  the HR latent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from ...diffusion import Chain, DiffusionMethod, MeanCorrectionHook
from ...errors import ConfigError, InvalidImageError, WeightsNotFoundError
from ...ops.resize import bicubic_upsample
from ...samplers.residual_shift import ResidualShiftSampler
from ...types import Denoiser, Sampler, check_image_tensor

__all__ = [
    "GRADIENTS", "MODES", "GuidanceScales", "PosteriorGuidance", "PosteriorGuidanceStep", "guidance_direction",
    "kl_direction", "kl_gradient", "read_scales",
]

MODES: dict[str, float] = {"reference": -1.0, "non-reference": 1.0}  # s: descend the KL to HR / ascend it from LR
GRADIENTS = ("autograd", "closed-form")


def kl_gradient(p_mean: Tensor, q_mean: Tensor, q_variance: Tensor | float) -> Tensor:
    """grad over P's mean of D_KL(N(p_mean, .) || N(q_mean, q_variance)) = (p_mean - q_mean) / q_variance (Lemma 3.2.1)."""
    return (p_mean - q_mean) / q_variance


def check_choice(name: str, value: str, allowed: Sequence[str] | Mapping[str, float]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def _sign(mode: str) -> float:
    return MODES[check_choice("mode", mode, MODES)]


def step_variance(sampler: ResidualShiftSampler, t: int, like: Tensor) -> Tensor:
    """Sigma_t: the official clipped posterior variance, the step's variance for t >= 1 and still positive at the last
    step (where the chain adds no noise), so the guidance has a direction at every step (Assumption 2)."""
    # one exp per entry, as for a single step, and on the device once (no copy to it per step)
    table = sampler.table_on(like, "posterior_variance_clipped",
                             lambda: torch.stack([torch.exp(v) for v in sampler.posterior_log_variance_clipped]))
    return table[t]


def kl_direction(sampler: ResidualShiftSampler, mean: Tensor, guide_latent: Tensor, *, t: int, t_prev: int,
                 x_t: Tensor) -> Tensor:
    """Closed form: Sigma_t * grad over P's mean of D_KL(P || Q_c) = mu - mu_c (Lemma 3.2.1)."""
    guide_mean, _ = sampler.posterior(x_t, t, t_prev, guide_latent)
    variance = step_variance(sampler, t, mean)
    return variance * kl_gradient(mean, guide_mean, variance)


def kl_direction_through_network(sampler: ResidualShiftSampler, denoise: Denoiser, x_t: Tensor, guide_latent: Tensor,
                                 *, t: int, weight: Tensor | None = None) -> Tensor:
    """Sigma_t * grad_{x_t} D_KL(N(mu_theta(x_t), Sigma_t) || N(mu_c(x_t), Sigma_t)) by autograd through ``denoise``
    (Alg. 2 line 5). ``weight`` (0/1, latent size): the KL sums over those latent pixels only."""
    variance = step_variance(sampler, t, x_t)
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        mean, _ = sampler.posterior(x, t, t - 1, denoise(x, t))
        guide_mean, _ = sampler.posterior(x, t, t - 1, guide_latent)
        squared = (mean - guide_mean) ** 2
        kl = (squared if weight is None else squared * weight).sum() / (2 * variance)  # Lemma 3.2.1, equal variances
        (grad,) = torch.autograd.grad(kl, x)
    return variance * grad


def guidance_direction(gradient: str, sampler: ResidualShiftSampler, denoise: Denoiser, *, x_t: Tensor, mean: Tensor,
                       guide_latent: Tensor, t: int, mask: Tensor | None = None) -> Tensor:
    """Sigma_t * grad D_KL(P || Q_c) in the reading ``gradient`` (module docstring), zero outside ``mask``: the KL is
    taken over the masked latent pixels and the correction moves only them."""
    if gradient == "closed-form":
        direction = kl_direction(sampler, mean, guide_latent, t=t, t_prev=t - 1, x_t=x_t)
    else:
        direction = kl_direction_through_network(sampler, denoise, x_t, guide_latent, t=t, weight=mask)
    return direction if mask is None else direction * mask


@dataclass(frozen=True)
class GuidanceScales:
    """Calibrated alpha_t (Algorithm 1 / Eq. (10)), per step index t = 0..T-1, or one value for every step.

    ``mode`` and ``gradient`` are what the scales were fitted for; ``gradient`` is None for inline values (any)."""

    alpha: Tensor  # (T,) per step or (1,) scalar, float64
    steps: int
    mode: str
    pairs: int
    gradient: str | None = None

    def __post_init__(self) -> None:
        if self.alpha.dim() != 1 or self.alpha.numel() not in (1, self.steps):
            raise ConfigError(f"guidance scales must hold 1 or steps={self.steps} values, got shape {tuple(self.alpha.shape)}")
        _sign(self.mode)
        if self.gradient is not None:
            check_choice("gradient", self.gradient, GRADIENTS)

    @property
    def per_step(self) -> bool:
        return self.alpha.numel() > 1 or self.steps == 1

    def at(self, t: int) -> float:
        return float(self.alpha[t if self.alpha.numel() > 1 else 0])

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file: tensor ``alpha`` and metadata steps, mode, gradient, pairs, per_step."""
        if self.gradient is None:
            raise ConfigError("only calibrated scales (with their gradient) are written to a scale file")
        from safetensors.torch import save

        from ...io import atomic_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"steps": str(self.steps), "mode": self.mode, "gradient": self.gradient, "pairs": str(self.pairs),
                "per_step": json.dumps(self.per_step)}
        with atomic_file(path) as file:
            file.write(save({"alpha": self.alpha.double().contiguous()}, metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GuidanceScales:
        """A scale file: a path, or a bare file name looked up where weights are (``$SRKIT_HOME/weights``,
        ``./weights``), as a table spec names the scales calibrated for the official weights."""
        from safetensors import safe_open

        path = find_scale_file(path)
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        missing = {"steps", "mode", "gradient", "pairs"} - meta.keys()
        if missing:
            raise ConfigError(f"{path} lacks the metadata {sorted(missing)}; write scale files with `srkit calibrate`")
        return cls(load_file(str(path))["alpha"].double(), int(meta["steps"]), meta["mode"], int(meta["pairs"]),
                   meta["gradient"])


ScalesSpec = str | Path | float | Sequence[float] | None


def find_scale_file(spec: str | Path) -> Path:
    """The scale file ``spec`` names (see :meth:`GuidanceScales.load`), or an error saying where it was looked for
    and the command that writes it."""
    from ...weights import search_dirs

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    looked = [path] if len(path.parts) > 1 else [path, *(folder / path.name for folder in search_dirs())]
    for candidate in looked[1:]:
        if candidate.is_file():
            return candidate
    target = looked[-1] if len(looked) > 1 else path
    raise WeightsNotFoundError(
        f"guidance scale file {str(spec)!r} not found (looked at {', '.join(map(str, looked))}); the paper gives no "
        f"values: calibrate them on LR-HR pairs, e.g. `srkit calibrate data._target_=srkit.data.paired.PairedFolder "
        f"+data.hr_dir=HR +data.lr_dir=LR mode=<non-reference | reference> output={target}`"
    )


def read_scales(scales: ScalesSpec, steps: int, *, mode: str = "non-reference", gradient: str | None = None) -> GuidanceScales:
    """alpha_t from a scale file of `srkit calibrate` (checked against ``steps``, ``mode`` and ``gradient``), inline
    values, or 1 (``None``)."""
    if isinstance(scales, (str, Path)):
        loaded = GuidanceScales.load(scales)
        if loaded.steps != steps:
            raise ConfigError(f"{scales} was calibrated for {loaded.steps} steps, this model has {steps}; "
                              f"run `srkit calibrate method.steps={steps}`")
        if loaded.mode != mode:
            key = "reference_scales" if loaded.mode == "reference" else "scales"
            raise ConfigError(f"{scales} was calibrated for the {loaded.mode} mode, not {mode}; pass it as {key}= "
                              f"or run `srkit calibrate mode={mode}`")
        if gradient is not None and loaded.gradient != gradient:
            raise ConfigError(f"{scales} was calibrated with gradient={loaded.gradient}, this guidance uses "
                              f"gradient={gradient}; pass gradient={loaded.gradient} or run `srkit calibrate gradient={gradient}`")
        return loaded
    values = [1.0] if scales is None else [float(scales)] if isinstance(scales, (int, float)) else list(scales)
    return GuidanceScales(torch.tensor(values, dtype=torch.float64), steps, mode, 0)


class PosteriorGuidanceStep:
    """The bound mean correction mu + s * strength * alpha_t * Sigma_t * grad D_KL(P || Q_c) (Eq. (11), Algorithm 2)."""

    def __init__(self, sampler: ResidualShiftSampler, denoise: Denoiser, guide_latent: Tensor, scales: GuidanceScales, *,
                 mode: str, strength: float = 1.0, gradient: str = "autograd", mask: Tensor | None = None):
        self.sampler, self.denoise, self.guide_latent, self.scales = sampler, denoise, guide_latent, scales
        self.factor = _sign(mode) * float(strength)
        self.gradient, self.mask = check_choice("gradient", gradient, GRADIENTS), mask

    def __call__(self, mean: Tensor, *, variance: Tensor, t: int, t_prev: int, x_t: Tensor, x0_pred: Tensor) -> Tensor:
        alpha = self.factor * self.scales.at(t)
        if alpha == 0:
            return mean
        return mean + alpha * guidance_direction(self.gradient, self.sampler, self.denoise, x_t=x_t, mean=mean,
                                                 guide_latent=self.guide_latent, t=t, mask=self.mask)


def check_guide_mask(mask: Tensor, lr: Tensor) -> Tensor:
    """A region mask (B, 1, h, w) at the LR's size (= the latent's), 1 where the guidance acts, 0 elsewhere."""
    if not isinstance(mask, Tensor) or mask.shape != (lr.shape[0], 1, *lr.shape[-2:]):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise InvalidImageError(f"guide_mask has shape {shape}; it must be (B, 1, h, w) at the LR's size and batch "
                                f"({lr.shape[0]}, 1, {lr.shape[-2]}, {lr.shape[-1]}), 1 where the guide acts, 0 elsewhere")
    mask = mask.to(lr)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise InvalidImageError("guide_mask must hold only 0 (no guidance) and 1 (guided); threshold a soft mask first")
    return mask


class PosteriorGuidance(MeanCorrectionHook):
    """Posterior guidance as a mean-correction hook for any residual-shift method (ResShift, LPNSR, PG-ResShift).

    ``sr()`` knobs:

    - ``guide``: ``"lr"`` (default) or an image tensor in [0, 1]. An LR-size guide gives the **non-reference** mode
      (Algorithm 2), s = +1: the step is pushed up the KL gradient away from the LR, the paper's sign flip for
      perceptual sharpness; its latent is exactly the chain's y. A guide at output size (the HR) gives the
      **reference** mode (Eq. (11)), s = -1: the step descends the KL to the HR (fidelity); its latent is the encoder
      of the padded HR.
    - ``guide_mask``: the region protocol of Sec. 3.4 / Table 2, (B, 1, h, w) at the LR's size, 1 where the guidance
      acts: the KL is summed over that region and the correction moves only its latent pixels (the rest of the
      image changes only through the denoiser's view of them at later steps). An HR guide is used only inside the
      region: outside it the guide is replaced by the bicubic upsampling of the LR, so HR pixels there never enter.
    - ``mode`` overrides the mode implied by the guide; ``strength`` multiplies alpha_t (0: no guidance);
      ``gradient``: ``"autograd"`` or ``"closed-form"`` (module docstring).

    :meth:`srkit.SRMethod.sr` cuts image and mask tensors into the LR's tiles.

    ``scales`` (the non-reference mode's alpha_t) and ``reference_scales`` (the reference mode's): a file written
    by ``srkit calibrate`` for that mode and ``gradient``, or inline values (one, or one per step index
    t = 0..T-1). Default alpha_t = 1, a documented choice (the paper gives no values): with the closed form, the
    reference mode then lands the last step on the HR latent and the non-reference mode extrapolates x0_pred by
    its distance from the LR latent.
    """

    knobs = ("guide", "guide_mask", "mode", "strength", "gradient")

    def __init__(self, scales: ScalesSpec = None, strength: float = 1.0, gradient: str = "autograd",
                 reference_scales: ScalesSpec = None):
        self.specs = {"non-reference": scales, "reference": reference_scales}
        self.strength, self.gradient = float(strength), check_choice("gradient", gradient, GRADIENTS)
        self._scales: dict[tuple[int, str, str], GuidanceScales] = {}

    def scales(self, steps: int, mode: str = "non-reference", gradient: str | None = None) -> GuidanceScales:
        """alpha_t of ``mode`` for a schedule of ``steps`` (read once), checked against ``gradient`` (default: the hook's)."""
        key = (steps, mode, gradient or self.gradient)
        if key not in self._scales:
            self._scales[key] = read_scales(self.specs[mode], steps, mode=mode, gradient=key[2])
        return self._scales[key]

    def bind(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, *, guide: str | Tensor = "lr",
             guide_mask: Tensor | None = None, mode: str | None = None, strength: float | None = None,
             gradient: str | None = None) -> PosteriorGuidanceStep:
        if not isinstance(sampler, ResidualShiftSampler) or not hasattr(method, "encode_guide"):
            raise ConfigError(f"posterior guidance needs a residual-shift method; {method.descriptor.name} is not one")
        mask = None if guide_mask is None else check_guide_mask(guide_mask, chain.lr)
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
            if is_hr and mask is not None:  # no HR outside the reference region: the LR's upsampling stands in
                inside = F.interpolate(mask, scale_factor=method.scale, mode="nearest")
                upsampled = method.from_model_range(bicubic_upsample(chain.lr, method.scale))
                guide = inside * guide.to(upsampled) + (1 - inside) * upsampled
            latent = method.encode_guide(guide, hr=is_hr)  # type: ignore[attr-defined]
        mode = mode if mode is not None else "reference" if is_hr else "non-reference"
        _sign(mode)
        gradient = self.gradient if gradient is None else check_choice("gradient", gradient, GRADIENTS)
        return PosteriorGuidanceStep(sampler, method.denoiser(chain), latent, self.scales(sampler.num_steps, mode, gradient),
                                     mode=mode, strength=self.strength if strength is None else strength,
                                     gradient=gradient, mask=mask)
