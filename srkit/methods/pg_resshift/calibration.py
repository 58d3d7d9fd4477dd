"""Calibration of posterior guidance's scales alpha_t on LR-HR pairs (PG-ResShift Algorithm 1, Eqs. (9)-(10))."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError, InvalidImageError
from ...pipelines.residual_shift import ResidualShiftMethod
from ...types import check_image_tensor
from .guidance import GuidanceScales, _sign, kl_direction

__all__ = ["calibrate", "run_calibration"]


def lr_hr(item: Any) -> tuple[Any, Any]:
    """(lr, hr) of a dataset item: a dict (the folder datasets), a :class:`srkit.data.paired.Pair` or a tuple."""
    if isinstance(item, Mapping):
        return item["lr"], item["hr"]
    return (item.lr, item.hr) if hasattr(item, "lr") else tuple(item)


@torch.no_grad()
def calibrate(model: ResidualShiftMethod, pairs: Iterable[Any], *, mode: str = "non-reference",
              per_step: bool = True, seed: int = 0) -> GuidanceScales:
    """Fit alpha_t on LR-HR pairs (Algorithm 1, Eqs. (9)-(10) with B = 0; see
    :class:`~srkit.methods.pg_resshift.method.PosteriorGuidedResShift`).

    ``pairs``: dicts with ``lr`` and ``hr`` (the datasets' items), items with those attributes
    (:class:`srkit.data.paired.Pair`) or ``(lr, hr)`` tuples,
    images (3, h, w) or batches in [0, 1]. The chain runs unguided, seeded by ``seed``; only the unpadded latent
    region enters the sums.
    """
    sign, sampler = _sign(mode), model.sampler
    numerator = torch.zeros(sampler.num_steps, dtype=torch.float64)
    denominator = torch.zeros_like(numerator)
    generator = torch.Generator(model.device).manual_seed(int(seed))
    count = 0
    for item in pairs:
        lr, hr = lr_hr(item)
        lr = check_image_tensor(lr).to(model.device, model.dtype)
        hr = check_image_tensor(hr, name="hr").to(model.device, model.dtype)
        if hr.shape[-2:] != (model.scale * lr.shape[-2], model.scale * lr.shape[-1]):
            raise InvalidImageError(f"hr {tuple(hr.shape)} must be {model.scale}x its lr {tuple(lr.shape)}")
        chain = model.condition(model.prepare(lr), generator)
        z_hr = model.encode_guide(hr, hr=True)
        height, width = lr.shape[-2:]
        z_c = z_hr if mode == "reference" else chain.y
        denoise = model.denoiser(chain)
        x = sampler.prior(chain.y, torch.randn(chain.y.shape, generator=generator, device=model.device, dtype=model.dtype))
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

    from ...data.transforms import paired_center_crop
    from ...registry import build_method, instantiate

    method_config = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(method_config, dict)
    model = build_method(method_config, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype, name="pg-resshift")
    if not isinstance(model, ResidualShiftMethod):
        raise ConfigError(f"srkit calibrate fits posterior guidance's scales for a residual-shift method (resshift, "
                          f"pg-resshift, lpnsr); method={method_config.get('_target_')!r} is not one")
    data_config = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data_config, dict)
    data = instantiate(data_config, where="calibrate data")
    count = len(data) if cfg.limit is None else min(len(data), int(cfg.limit))
    pairs = [lr_hr(data[i]) for i in range(count)]
    if cfg.crop is not None:
        pairs = [paired_center_crop(hr, lr, int(cfg.crop), model.scale)[::-1] for lr, hr in pairs]
    scales = calibrate(model, pairs, mode=cfg.mode, per_step=cfg.per_step, seed=cfg.seed)
    path = scales.save(cfg.output)
    values = ", ".join(f"{v:.4g}" for v in scales.alpha.tolist())
    print(f"srkit calibrate: {scales.mode} alpha = [{values}] from {scales.pairs} pairs -> {path.resolve()}")
    return path
