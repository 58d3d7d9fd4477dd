"""Calibration of posterior guidance's scales alpha_t on LR-HR pairs: Algorithm 1 (the non-reference mode) and
Eqs. (9)-(10) (the reference mode), PG-ResShift (shared/papers/pg-resshift.md).

``srkit calibrate`` (:func:`run_calibration`) checks every option and reads the pairs before the model is built;
a bar counts the pairs and messages go to the ``srkit.methods.pg_resshift.calibration`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...errors import ConfigError, InvalidImageError
from ...pipelines.residual_shift import ResidualShiftMethod
from ...types import check_image_tensor
from .guidance import GRADIENTS, MODES, GuidanceScales, _sign, check_choice, guidance_direction

__all__ = ["DEFAULT_CANDIDATES", "algorithm1_terms", "calibrate", "choose_scales", "eq10_sums", "run_calibration"]

log = logging.getLogger(__name__)

# Algorithm 1's candidate scale set {alpha_t} (the paper gives none): 0 and 40 values a decade from 1e-3 to 100.
DEFAULT_CANDIDATES = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-3, 2, 201, dtype=torch.float64)])


def lr_hr(item: Any) -> tuple[Any, Any]:
    """(lr, hr) of a dataset item: a dict (the folder datasets), a :class:`srkit.data.paired.Pair` or a tuple."""
    if isinstance(item, Mapping):
        return item["lr"], item["hr"]
    return (item.lr, item.hr) if hasattr(item, "lr") else tuple(item)


def _checked_pair(model: ResidualShiftMethod, lr: Any, hr: Any) -> tuple[Tensor, Tensor]:
    lr = check_image_tensor(lr).to(model.device, model.dtype)
    hr = check_image_tensor(hr, name="hr").to(model.device, model.dtype)
    if hr.shape[-2:] != (model.scale * lr.shape[-2], model.scale * lr.shape[-1]):
        raise InvalidImageError(f"hr {tuple(hr.shape)} must be {model.scale}x its lr {tuple(lr.shape)}")
    return lr, hr


def _norms(v: Tensor, height: int, width: int) -> Tensor:
    """Per-image L2 norm over the unpadded latent region."""
    return v[..., :height, :width].double().flatten(1).norm(dim=1).cpu()


@torch.no_grad()
def algorithm1_terms(model: ResidualShiftMethod, lr: Tensor, hr: Tensor, *, generator: torch.Generator,
                     gradient: str = "autograd") -> tuple[Tensor, Tensor]:
    """||Delta|| and ||Sigma_t G_LR|| of Algorithm 1, lines 2-8, per image and step index t: two (B, T) tensors.

    Readings (the paper is terse here):

    - line 2, Z^(HR) = ForwardODE(HR): the forward process of the HR latent z_HR with its noise held fixed along t,
      Z_t = z_HR + eta_t (y - z_HR) + kappa sqrt(eta_t) eps (ResShift Eq. (2)), eps the noise that starts the SR
      chain (line 3). A fixed eps makes the forward process a deterministic path (what an ODE gives); sharing it
      with the SR chain makes Delta measure the model's error, not two noise draws.
    - line 6, Delta = mu_theta(Z_t^(HR)) - mu: the model's step mean evaluated on the HR trajectory minus its mean
      on the SR chain's state.
    - line 7, G_LR = grad_{x_t} D_KL(p_theta(x_t) || LR): the guidance direction of Algorithm 2 for the LR latent
      (the chain's y), in the ``gradient`` reading of :mod:`.guidance`, times Sigma_t: line 8 then compares Delta
      with the correction alpha_t Sigma_t G_LR that Algorithm 2 line 5 adds (without Sigma_t, alpha_t would carry
      units of 1/Sigma_t and Algorithm 2 would apply it off by Sigma_t).
    - the SR chain runs unguided (its alpha is what is being calibrated), seeded by ``generator``.

    Norms are over the unpadded latent region (the latent has the LR's size).
    """
    sampler = model.sampler
    chain = model.condition(model.prepare(lr), generator)
    denoise = model.denoiser(chain)
    height, width = lr.shape[-2:]
    z_hr = model.encode_guide(hr, hr=True)
    eps = torch.randn(chain.y.shape, generator=generator, device=model.device, dtype=model.dtype)
    x = sampler.prior(chain.y, eps)  # line 3: x_T <- LR (ResShift's prior of the LR latent)
    delta_norms = torch.zeros(lr.shape[0], sampler.num_steps, dtype=torch.float64)
    g_norms = torch.zeros_like(delta_norms)
    for t in sampler.timesteps():  # line 4
        x0_pred = denoise(x, t)
        mean, _ = sampler.posterior(x, t, t - 1, x0_pred)  # line 5
        z_t = sampler.q_sample(z_hr, chain.y, t, eps)  # line 2: Z^(HR) at step t
        hr_mean, _ = sampler.posterior(z_t, t, t - 1, denoise(z_t, t))
        delta_norms[:, t] = _norms(hr_mean - mean, height, width)  # line 6
        g = guidance_direction(gradient, sampler, denoise, x_t=x, mean=mean, guide_latent=chain.y, t=t)  # line 7
        g_norms[:, t] = _norms(g, height, width)
        x = sampler.step(x, t, t - 1, x0_pred, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    return delta_norms, g_norms


def choose_scales(delta_norms: Tensor, g_norms: Tensor, candidates: Tensor, *, per_step: bool) -> Tensor:
    """Algorithm 1 line 11: the candidate minimising sum_i |‖Delta_i‖ - alpha ‖G_i‖| per step (or over all steps).

    Line 8 as printed, L_i = ||Delta|| - ||alpha G||, falls without bound as alpha grows; it is read as the gap
    |.| between the two norms (the norm matching the text describes). The norms leave the sign free: it is the
    mode's s (+1 for the LR, Algorithm 2), so the candidates are >= 0 and a fit cannot undo the sign flip."""
    objective = (delta_norms[None] - candidates[:, None, None] * g_norms[None]).abs().sum(1)  # (candidates, T)
    if not per_step:
        objective = objective.sum(1, keepdim=True)
    best = candidates[objective.argmin(0)]
    if bool((best == candidates.max()).any()):
        log.warning("alpha_t = %s is the largest candidate; pass larger candidates=", best.tolist())
    return best


@torch.no_grad()
def eq10_sums(model: ResidualShiftMethod, lr: Tensor, hr: Tensor, *, generator: torch.Generator,
              gradient: str = "autograd") -> tuple[Tensor, Tensor]:
    """Per step index t, sum <Delta, G> and sum ||G||^2 over the unpadded latent of Eqs. (9)-(10), reference mode:
    along the unguided chain, Delta = mu_t(HR) - mu_t(SR) (mu_t(HR): the step mean of q(x_{t-1} | x_t, x0 = z_HR))
    and G = -Sigma_t grad D_KL(SR || HR) (s = -1, descending to the HR)."""
    sampler = model.sampler
    chain = model.condition(model.prepare(lr), generator)
    denoise = model.denoiser(chain)
    height, width = lr.shape[-2:]
    z_hr = model.encode_guide(hr, hr=True)
    products = torch.zeros(sampler.num_steps, dtype=torch.float64)
    squares = torch.zeros_like(products)
    x = sampler.prior(chain.y, torch.randn(chain.y.shape, generator=generator, device=model.device, dtype=model.dtype))
    for t in sampler.timesteps():
        x0_pred = denoise(x, t)
        mean, _ = sampler.posterior(x, t, t - 1, x0_pred)
        delta = sampler.posterior(x, t, t - 1, z_hr)[0] - mean  # Eq. (9)
        g = MODES["reference"] * guidance_direction(gradient, sampler, denoise, x_t=x, mean=mean, guide_latent=z_hr, t=t)
        delta, g = (v[..., :height, :width].double() for v in (delta, g))
        products[t], squares[t] = (delta * g).sum().cpu(), (g * g).sum().cpu()
        x = sampler.step(x, t, t - 1, x0_pred, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    return products, squares


@torch.no_grad()
def calibrate(model: ResidualShiftMethod, pairs: Iterable[Any], *, mode: str = "non-reference", per_step: bool = True,
              seed: int = 0, gradient: str = "autograd", candidates: Sequence[float] | Tensor | None = None,
              progress: bool = False) -> GuidanceScales:
    """Fit alpha_t on LR-HR pairs for ``mode`` and the guidance ``gradient`` (see :mod:`.guidance`).

    - ``"non-reference"`` (the LR guide): Algorithm 1 (:func:`algorithm1_terms`, :func:`choose_scales`) over
      ``candidates`` (default :data:`DEFAULT_CANDIDATES`).
    - ``"reference"`` (the HR guide): Eqs. (9)-(10) with B = 0 (dropped, as the paper does): the least squares
      alpha = sum <Delta, G> / sum ||G||^2 of :func:`eq10_sums`, per step or over all steps. With the closed form
      Delta = G exactly, so alpha = 1.

    ``pairs``: dicts with ``lr`` and ``hr`` (the datasets' items), items with those attributes
    (:class:`srkit.data.paired.Pair`) or ``(lr, hr)`` tuples, images (3, h, w) or batches in [0, 1]; the chains are
    seeded by ``seed``. ``progress`` shows a bar over the pairs.
    """
    from tqdm.auto import tqdm

    _sign(mode)
    check_choice("gradient", gradient, GRADIENTS)
    grid = DEFAULT_CANDIDATES if candidates is None else torch.as_tensor(candidates, dtype=torch.float64).flatten()
    if grid.numel() == 0 or bool((grid < 0).any()):
        raise ConfigError(f"candidates must be scale values >= 0 (the mode gives the sign), got {grid.tolist()}")
    sampler = model.sampler
    generator = torch.Generator(model.device).manual_seed(int(seed))
    terms: list[tuple[Tensor, Tensor]] = []
    numerator = torch.zeros(sampler.num_steps, dtype=torch.float64)
    denominator = torch.zeros_like(numerator)
    count, total = 0, len(pairs) if isinstance(pairs, Sized) else None
    for item in tqdm(pairs, total=total, desc="calibrate", unit="pair", disable=not progress):
        lr, hr = _checked_pair(model, *lr_hr(item))
        if mode == "non-reference":
            terms.append(algorithm1_terms(model, lr, hr, generator=generator, gradient=gradient))
        else:
            products, squares = eq10_sums(model, lr, hr, generator=generator, gradient=gradient)
            numerator, denominator = numerator + products, denominator + squares
        count += lr.shape[0]
    if count == 0:
        raise ConfigError("calibration needs at least one LR-HR pair; check the data settings")
    if mode == "non-reference":
        alpha = choose_scales(torch.cat([d for d, _ in terms]), torch.cat([g for _, g in terms]), grid, per_step=per_step)
        return GuidanceScales(alpha, sampler.num_steps, mode, count, gradient)
    if not per_step:
        numerator, denominator = numerator.sum().reshape(1), denominator.sum().reshape(1)
    if bool((denominator == 0).any()):
        raise ConfigError("the guide latent equals the model's step mean on all pairs: nothing to calibrate")
    return GuidanceScales(numerator / denominator, sampler.num_steps, mode, count, gradient)  # Eq. (10) with B = 0


def _calibrate_options() -> dict[str, Any]:
    """A parser per key of ``conf/calibrate.yaml`` but the composed ``method`` (:func:`srkit.options.parse_options`)."""
    from ...options import NotAllowed, choice, flag, mapping, path, text, whole

    def dataset(value: Any) -> dict[str, Any]:
        data = mapping(value)
        if not isinstance(data.get("_target_"), str):
            raise NotAllowed("a dataset config with a _target_, e.g. data._target_=srkit.data.paired.PairedFolder "
                             "+data.hr_dir=HR +data.lr_dir=LR")
        return data

    def scale_values(value: Any) -> list[float] | None:
        if value is None:
            return None
        values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None  # ListConfig too
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
            raise NotAllowed("null (0 and 40 values a decade from 1e-3 to 100) or a list of scale values >= 0, "
                             "e.g. candidates=[0,0.5,1,2]")
        return [float(v) for v in values]

    return {
        "weights": text(null="the method's default files"), "device": text(), "dtype": text(), "data": dataset,
        "limit": whole(1, null="every pair"), "crop": whole(4, multiple=4, null="whole images"),
        "mode": choice(*MODES), "gradient": choice(*GRADIENTS), "candidates": scale_values, "per_step": flag,
        "seed": whole(0), "output": path(), "progress": flag,
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
    log.info("%s pairs, mode %s, gradient %s, per_step %s", len(pairs), options["mode"], options["gradient"],
             options["per_step"])
    model = build_method(method_config, weights=options["weights"], device=options["device"], dtype=options["dtype"],
                         name="pg-resshift")
    scales = calibrate(model, pairs, mode=options["mode"], per_step=options["per_step"], seed=options["seed"],
                       gradient=options["gradient"], candidates=options["candidates"], progress=options["progress"])
    path = scales.save(options["output"])
    values = ", ".join(f"{v:.4g}" for v in scales.alpha.tolist())
    log.info("%s alpha = [%s] (%s gradient) from %d pairs -> %s", scales.mode, values, scales.gradient, scales.pairs,
             path.resolve())
    return path
