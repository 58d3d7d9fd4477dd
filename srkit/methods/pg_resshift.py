"""Posterior-guided ResShift: plug-in image-quality control for posterior diffusion SR (shared/papers/pg-resshift.md).

ResShift's reverse step gets the mean correction of Proposition 3.3.1 / Remark 3.3.1 and Algorithm 2::

    mu_new = mu + s * strength * alpha_t * Sigma_t * grad D_KL(P || Q_c)

with the Gaussian KL gradient of Lemma 3.2.1, grad D_KL(P || Q) = (m_P - m_Q) / sigma_Q^2 (exact with respect
to P's mean). P = N(mu, Sigma_t) is the model's step and Q_c = N(mu_c, Sigma_t) the same step with the guide's
latent as x0, mu_c = coef1 x_t + coef2 z_c (ResShift Eq. (7)); under the paper's constant variance (Assumption 2)
Sigma_t * grad D_KL = mu - mu_c = coef2 (x0_pred - z_c).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..catalog import PG_RESSHIFT
from ..errors import ConfigError, InvalidImageError, UnsupportedError
from ..samplers.residual_shift import ResidualShiftSampler
from ..tiling import pad_to_multiple
from ..types import check_image_tensor
from .resshift import ResShift

__all__ = [
    "PG_RESSHIFT", "GuidanceScales", "PosteriorGuidance", "PosteriorGuidedResShift", "calibrate", "kl_direction",
    "kl_gradient", "run_calibration",
]

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


class PosteriorGuidance:
    """The mean-correction hook mu + s * strength * alpha_t * Sigma_t * grad D_KL(P || Q_c) (Eq. (11), Algorithm 2)."""

    def __init__(self, sampler: ResidualShiftSampler, guide_latent: Tensor, scales: GuidanceScales, *, mode: str,
                 strength: float = 1.0):
        self.sampler, self.guide_latent, self.scales = sampler, guide_latent, scales
        self.factor = _sign(mode) * float(strength)

    def __call__(self, mean: Tensor, *, variance: Tensor, t: int, t_prev: int, x_t: Tensor, x0_pred: Tensor) -> Tensor:
        alpha = self.factor * self.scales.at(t)
        if alpha == 0:
            return mean
        return mean + alpha * kl_direction(self.sampler, mean, self.guide_latent, t=t, t_prev=t_prev, x_t=x_t)


class _GuideTiles:
    """The guide cut like the LR: pixel-unshuffled tiles, served in the order the tiler visits the LR tiles.
    ``factor``: the guide's size over the LR's (``scale`` for an HR guide, 1 for an LR-size one)."""

    def __init__(self, tiles: Iterable[Tensor], factor: int):
        self.tiles: Iterator[Tensor] = iter(tiles)
        self.factor = factor

    def next(self) -> Tensor:
        return F.pixel_shuffle(next(self.tiles), self.factor)


class PosteriorGuidedResShift(ResShift):
    """ResShift with the posterior guidance of Prop. 3.3.1 / Remark 3.3.1 (plug-in: nothing is trained).

    ``sr(lr, guide=, mode=, strength=)``:

    - ``guide="lr"`` (default) or an LR-size tensor: **non-reference** mode (Algorithm 2), s = +1: the step is
      pushed up the KL gradient away from the LR, the paper's sign flip for perceptual sharpness. The guide's latent
      is exactly the chain's y: ``encode_upsampled`` of the padded guide in [-1, 1].
    - a tensor at output size (the HR): **reference** mode (Eq. (11)), s = -1: the step descends the KL to the HR
      (fidelity). The HR is already at output size, so its latent is the encoder of the padded HR, no upsampling.
    - ``mode`` overrides the mode implied by the guide; ``strength`` multiplies the calibrated alpha_t (0: ResShift).

    ``scales``: a file written by :func:`calibrate` / ``srkit calibrate``, or inline alpha values (one, or one per
    step index t = 0..T-1). Default: alpha_t = 1, a documented choice (the paper gives no values): in Sigma units the
    correction is then x0_pred -> x0_pred - s (x0_pred - z_c), i.e. the reference mode lands the last step on the
    HR latent and the non-reference mode extrapolates x0_pred by its distance from the LR latent.

    Calibration (Algorithm 1 with Eqs. (9)-(10), B dropped as the paper does): along the unguided chain from each
    LR, at every step, Delta = mu_t(HR) - mu_t(SR) where mu_t(HR) is the step mean of the forward process of the HR,
    q(x_{t-1} | x_t, x0 = z_HR), and mu_t(SR) the model's; G = s Sigma_t grad D_KL(SR || guide). The scale is the least
    squares alpha = sum <Delta, G> / sum ||G||^2, per step (sums over pairs) or as one scalar (over pairs and steps).
    Alg. 1's objective line "||Delta|| - ||alpha G||" is read as this squared residual ||Delta - alpha G||^2 of Eq.
    (10). In reference mode Delta = G exactly, so alpha = 1: full correction is the exact HR posterior step.
    """

    descriptor = PG_RESSHIFT

    def __init__(
        self,
        steps: int = 4,
        weights: str | None = None,
        dtype: torch.dtype = torch.float32,
        unet_config: Mapping[str, Any] | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
        scales: str | Path | float | Sequence[float] | None = None,
    ):
        super().__init__(steps=steps, weights=weights, dtype=dtype, unet_config=unet_config,
                         autoencoder_config=autoencoder_config)
        self.scales = self._read_scales(scales)

    def _read_scales(self, scales: str | Path | float | Sequence[float] | None) -> GuidanceScales:
        steps = self.sampler.num_steps
        if isinstance(scales, (str, Path)):
            loaded = GuidanceScales.load(scales)
            if loaded.steps != steps:
                raise ConfigError(f"{scales} was calibrated for {loaded.steps} steps, this model has {steps}; "
                                  f"run `srkit calibrate method.steps={steps}`")
            return loaded
        values = [1.0] if scales is None else [float(scales)] if isinstance(scales, (int, float)) else list(scales)
        return GuidanceScales(torch.tensor(values, dtype=torch.float64), steps, "non-reference", 0)

    @torch.no_grad()
    def sr(self, lr: Tensor, *, guide: str | Tensor = "lr", tile: int | None = None, tile_overlap: int = 32,
           tile_batch: int = 1, **kwargs: Any) -> Tensor:
        """:meth:`SRMethod.sr` with ``guide``: ``"lr"`` or an image tensor in [0, 1] at LR or output size."""
        if isinstance(guide, Tensor):
            lr, guide = check_image_tensor(lr), check_image_tensor(guide, name="guide")
            factor = guide.shape[-1] // lr.shape[-1]
            if factor not in (1, self.scale) or guide.shape != (*lr.shape[:2], factor * lr.shape[-2], factor * lr.shape[-1]):
                raise InvalidImageError(
                    f"guide has shape {tuple(guide.shape)}; it must be the HR ({self.scale}x the LR {tuple(lr.shape)}) "
                    "or an LR-size image, with the LR's batch size"
                )
            packed = F.pixel_unshuffle(guide.to(self.device, self.dtype), factor)
            tiles: list[Tensor] = [packed]
            if tile is not None:  # cut the guide exactly as the tiler will cut the LR, then serve the tiles in order
                from ..tiling import tiled_apply

                tiles = []
                tiled_apply(lambda x: tiles.append(x) or x.new_zeros(x.shape[0], 1, *(self.scale * s for s in x.shape[-2:])),
                            packed, scale=self.scale, tile=tile, overlap=tile_overlap,
                            multiple=self.size_multiple, batch_size=tile_batch)
            guide = _GuideTiles(tiles, factor)
        return super().sr(lr, guide=guide, tile=tile, tile_overlap=tile_overlap, tile_batch=tile_batch, **kwargs)

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, guide: str | _GuideTiles = "lr",
            mode: str | None = None, strength: float = 1.0, **knobs: Any) -> Tensor:
        if knobs:
            raise UnsupportedError(f"pg-resshift has no options {sorted(knobs)}; it takes guide=, mode=, strength=, "
                                   "steps= and seed=")
        if isinstance(guide, str) and guide != "lr":
            raise ConfigError(f"guide must be 'lr' or an image tensor (e.g. the HR), got {guide!r}")
        if mode is not None:
            _sign(mode)
        condition = self.condition(lr)
        is_hr = not isinstance(guide, str) and guide.factor != 1
        z_c = condition.z_y if isinstance(guide, str) else self.guide_latent(guide.next(), hr=is_hr)
        if mode is None:
            mode = "reference" if is_hr else "non-reference"
        sampler = copy.copy(self.sampler)  # per call: the shared sampler is never mutated
        sampler.mean_correction = PosteriorGuidance(sampler, z_c, self.scales, mode=mode, strength=strength)
        z_0 = sampler.sample(self.denoiser(condition), condition.z_y, steps=steps, generator=generator)
        return self.decode(z_0)

    def guide_latent(self, image: Tensor, *, hr: bool) -> Tensor:
        """z_c of a guide in [0, 1], padded as y_0 is: an HR (``hr``, output size) is encoded as is, an LR-size image
        as the chain's y (bicubic x4, then the encoder), so that ``guide=lr`` gives exactly z_y."""
        if hr:
            return self.autoencoder.encode(pad_to_multiple(self.to_model_range(image), self.scale * self.size_multiple))
        return self.encode_upsampled(self.prepare(image))


@torch.no_grad()
def calibrate(model: PosteriorGuidedResShift, pairs: Iterable[Any], *, mode: str = "non-reference",
              per_step: bool = True, seed: int = 0) -> GuidanceScales:
    """Fit alpha_t on LR-HR pairs (Algorithm 1, Eqs. (9)-(10) with B = 0; see :class:`PosteriorGuidedResShift`).

    ``pairs``: items with ``lr`` and ``hr`` attributes (:class:`srkit.data.paired.Pair`) or ``(lr, hr)`` tuples,
    images (3, h, w) or batches in [0, 1]. The chain runs unguided, seeded by ``seed``; only the unpadded latent
    region enters the sums.
    """
    sign, sampler = _sign(mode), model.sampler
    numerator = torch.zeros(sampler.num_steps, dtype=torch.float64)
    denominator = torch.zeros_like(numerator)
    generator = torch.Generator(model.device).manual_seed(int(seed))
    count = 0
    for item in pairs:
        lr, hr = (item.lr, item.hr) if hasattr(item, "lr") else item
        lr = check_image_tensor(lr).to(model.device, model.dtype)
        hr = check_image_tensor(hr, name="hr").to(model.device, model.dtype)
        if hr.shape[-2:] != (model.scale * lr.shape[-2], model.scale * lr.shape[-1]):
            raise InvalidImageError(f"hr {tuple(hr.shape)} must be {model.scale}x its lr {tuple(lr.shape)}")
        condition = model.condition(model.prepare(lr))
        z_hr = model.guide_latent(hr, hr=True)
        height, width = lr.shape[-2:]
        z_c = z_hr if mode == "reference" else condition.z_y
        denoise = model.denoiser(condition)
        x = sampler.prior(condition.z_y, torch.randn(condition.z_y.shape, generator=generator, device=model.device,
                                                     dtype=model.dtype))
        for t in sampler.timesteps():
            x0_pred = denoise(x, t)
            mean, _ = sampler.posterior(x, t, t - 1, x0_pred)
            delta = sampler.posterior(x, t, t - 1, z_hr)[0] - mean  # Eq. (9): forward (HR) step mean - model step mean
            g = sign * kl_direction(sampler, mean, z_c, t=t, t_prev=t - 1, x_t=x)
            delta, g = (v[..., :height, :width].double() for v in (delta, g))
            numerator[t] += (delta * g).sum().cpu()
            denominator[t] += (g * g).sum().cpu()
            x = sampler.step(x, t, t - 1, x0_pred, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
        count += lr.shape[0]
    if count == 0:
        raise ConfigError("calibration needs at least one LR-HR pair; check the data settings")
    if not per_step:
        numerator, denominator = numerator.sum().reshape(1), denominator.sum().reshape(1)
    if bool((denominator == 0).any()):
        raise ConfigError("the guide latent equals the model's step mean on all pairs: nothing to calibrate")
    return GuidanceScales(numerator / denominator, sampler.num_steps, mode, count)  # Eq. (10) with B = 0


def run_calibration(cfg: Any) -> Path:
    """``srkit calibrate``: fit the guidance scales on ``cfg.data`` and write them to ``cfg.output`` (conf/calibrate.yaml)."""
    from omegaconf import OmegaConf

    from ..data.transforms import paired_center_crop
    from ..registry import build_method, instantiate

    method_config = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(method_config, dict)
    model = build_method(method_config, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype, name="pg-resshift")
    if not isinstance(model, PosteriorGuidedResShift):
        raise ConfigError(f"srkit calibrate fits pg-resshift's guidance scales; method={method_config.get('_target_')!r}")
    data_config = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data_config, dict)
    data = instantiate(data_config, where="calibrate data")
    count = len(data) if cfg.limit is None else min(len(data), int(cfg.limit))
    pairs = [data[i] for i in range(count)]
    if cfg.crop is not None:
        pairs = [paired_center_crop(p.hr, p.lr, int(cfg.crop), model.scale)[::-1] for p in pairs]
    scales = calibrate(model, pairs, mode=cfg.mode, per_step=cfg.per_step, seed=cfg.seed)
    path = scales.save(cfg.output)
    values = ", ".join(f"{v:.4g}" for v in scales.alpha.tolist())
    print(f"srkit calibrate: {scales.mode} alpha = [{values}] from {scales.pairs} pairs -> {path.resolve()}")
    return path
