"""Calibration of posterior guidance's scales alpha_t on LR-HR pairs (PG-ResShift Algorithm 1, Eqs. (9)-(10)).

``srkit calibrate`` (:func:`run_calibration`) checks every option and reads the pairs before the model is built;
a bar counts the pairs and messages go to the ``srkit.methods.pg_resshift.calibration`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError, InvalidImageError
from ...pipelines.residual_shift import ResidualShiftMethod
from ...types import check_image_tensor
from .guidance import GuidanceScales, _sign, kl_direction

__all__ = ["calibrate", "run_calibration"]

log = logging.getLogger(__name__)


def lr_hr(item: Any) -> tuple[Any, Any]:
    """(lr, hr) of a dataset item: a dict (the folder datasets), a :class:`srkit.data.paired.Pair` or a tuple."""
    if isinstance(item, Mapping):
        return item["lr"], item["hr"]
    return (item.lr, item.hr) if hasattr(item, "lr") else tuple(item)


@torch.no_grad()
def calibrate(model: ResidualShiftMethod, pairs: Iterable[Any], *, mode: str = "non-reference",
              per_step: bool = True, seed: int = 0, progress: bool = False) -> GuidanceScales:
    """Fit alpha_t on LR-HR pairs (Algorithm 1, Eqs. (9)-(10) with B = 0; see
    :class:`~srkit.methods.pg_resshift.method.PosteriorGuidedResShift`).

    ``pairs``: dicts with ``lr`` and ``hr`` (the datasets' items), items with those attributes
    (:class:`srkit.data.paired.Pair`) or ``(lr, hr)`` tuples,
    images (3, h, w) or batches in [0, 1]. The chain runs unguided, seeded by ``seed``; only the unpadded latent
    region enters the sums. ``progress`` shows a bar over the pairs.
    """
    from tqdm.auto import tqdm

    sign, sampler = _sign(mode), model.sampler
    numerator = torch.zeros(sampler.num_steps, dtype=torch.float64)
    denominator = torch.zeros_like(numerator)
    generator = torch.Generator(model.device).manual_seed(int(seed))
    count = 0
    total = len(pairs) if isinstance(pairs, Sized) else None
    for item in tqdm(pairs, total=total, desc="calibrate", unit="pair", disable=not progress):
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


def _calibrate_options() -> dict[str, Any]:
    """A parser per key of ``conf/calibrate.yaml`` but the composed ``method`` (:func:`srkit.options.parse_options`)."""
    from ...options import NotAllowed, choice, flag, mapping, path, text, whole
    from .guidance import MODES

    def dataset(value: Any) -> dict[str, Any]:
        data = mapping(value)
        if not isinstance(data.get("_target_"), str):
            raise NotAllowed("a dataset config with a _target_, e.g. data._target_=srkit.data.paired.PairedFolder "
                             "+data.hr_dir=HR +data.lr_dir=LR")
        return data

    return {
        "weights": text(null="the method's default files"), "device": text(), "dtype": text(), "data": dataset,
        "limit": whole(1, null="every pair"), "crop": whole(4, multiple=4, null="whole images"),
        "mode": choice(*MODES), "per_step": flag, "seed": whole(0), "output": path(), "progress": flag,
    }


def run_calibration(cfg: Any) -> Path:
    """``srkit calibrate``: fit the guidance scales on ``cfg.data`` and write them to ``cfg.output`` (conf/calibrate.yaml).

    The options, the method (a residual-shift method, in a dtype it supports), the pairs and the output folder are
    checked before the model is built.
    """
    from omegaconf import OmegaConf

    from ...data.transforms import paired_center_crop
    from ...options import parse_options
    from ...registry import build_method, import_target, instantiate

    options = parse_options("calibrate", cfg, _calibrate_options(), composed=("method",))
    method_config = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(method_config, dict)
    method_class = import_target(str(method_config.get("_target_", "")))
    if not (isinstance(method_class, type) and issubclass(method_class, ResidualShiftMethod)):
        raise ConfigError(f"srkit calibrate fits posterior guidance's scales for a residual-shift method (resshift, "
                          f"pg-resshift, lpnsr); method={method_config.get('_target_')!r} is not one")
    descriptor = method_class.descriptor
    if options["dtype"] not in descriptor.dtypes:
        raise ConfigError(f"dtype={options['dtype']} is not valid: {descriptor.name} runs in {' | '.join(descriptor.dtypes)}")
    data = instantiate(options["data"], where="calibrate data")
    count = len(data) if options["limit"] is None else min(len(data), options["limit"])
    if count == 0:
        raise ConfigError(f"the calibration data {options['data']['_target_']} has no LR-HR pairs; check data.* (the folders)")
    pairs = [lr_hr(data[i]) for i in range(count)]
    if options["crop"] is not None:
        pairs = [paired_center_crop(hr, lr, options["crop"], descriptor.scale)[::-1] for lr, hr in pairs]
    try:
        options["output"].parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the folder of output={options['output']}: {err.strerror or err}; "
                          "choose another output=") from None
    log.info("%s pairs, mode %s, per_step %s", len(pairs), options["mode"], options["per_step"])
    model = build_method(method_config, weights=options["weights"], device=options["device"], dtype=options["dtype"],
                         name="pg-resshift")
    scales = calibrate(model, pairs, mode=options["mode"], per_step=options["per_step"], seed=options["seed"],
                       progress=options["progress"])
    path = scales.save(options["output"])
    values = ", ".join(f"{v:.4g}" for v in scales.alpha.tolist())
    log.info("%s alpha = [%s] from %d pairs -> %s", scales.mode, values, scales.pairs, path.resolve())
    return path
