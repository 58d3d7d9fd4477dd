"""``srkit stability``: CCSR's stability study (Tables I-III style) as a command.

Every variant (a label and the keyword arguments of ``method.sr``) super-resolves every image once
per seed; per image and metric the values over the N seeds give G-STD (CCSR Eq. (4)) and the outputs
give L-STD (Eq. (5)), with the 4-pixel border crop of CCSR's ``cal_iqa`` scripts. The default
variants compare CCSR-S2 and CCSR-S1 with the same backbone under uniform DDPM sampling
(``sampling="uniform"``, 2 steps from T). Results go to ``out``/stability.json and stability.md;
metrics that cannot run here (e.g. pyiqa models without weights) are reported as unavailable.

Every option is checked, and the images read, before the method is built; a bar counts the runs (variant x image x
seed) and messages go to the ``srkit.metrics.stability_study`` logger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import ConfigError
from ..io import write_text_atomic
from .stability import stability

__all__ = ["VariantResult", "run_stability", "stability_study", "write_markdown"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantResult:
    """One variant: per metric the mean over runs and images and its G-STD; the L-STD of the outputs."""

    label: str
    sr: dict[str, Any]
    mean: dict[str, float]
    g_std: dict[str, float]
    l_std: float


def stability_study(
    method: Any,
    pairs: Sequence[tuple[Tensor, Tensor]],
    variants: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    metrics: Mapping[str, Any],
    *,
    crop_border: int = 4,
    progress: bool = False,
) -> list[VariantResult]:
    """Run every variant (``{"label": ..., "sr": {...}}``) on every (LR, HR) pair with every seed.

    ``metrics`` maps names to callables ``metric(sr, hr) -> (B,)`` values (see
    :func:`srkit.metrics.iqa.get_metric`); ``progress`` shows a bar over the runs (variant x image x seed).
    """
    from tqdm.auto import tqdm

    if len(seeds) < 2:
        raise ConfigError(f"the stability study needs at least 2 seeds, got {list(seeds)}")
    if not pairs or not variants or not metrics:
        raise ConfigError("the stability study needs at least one image pair, one variant and one metric")
    with tqdm(total=len(variants) * len(pairs) * len(seeds), desc="stability", unit="run", disable=not progress) as bar:
        return [_variant_result(method, pairs, variant, seeds, metrics, crop_border, bar) for variant in variants]


def _variant_result(method: Any, pairs: Sequence[tuple[Tensor, Tensor]], variant: Mapping[str, Any], seeds: Sequence[int],
                    metrics: Mapping[str, Any], crop_border: int, bar: Any) -> VariantResult:
    """One variant of :func:`stability_study`, each run counted on ``bar``."""
    knobs = dict(variant.get("sr") or {})
    result = stability(method, pairs, metrics, seeds, crop_border=crop_border, on_run=bar.update, **knobs)
    return VariantResult(label=str(variant.get("label", knobs)), sr=knobs, mean=result.mean, g_std=result.g_std,
                         l_std=result.l_std)


def write_markdown(path: Path, results: Sequence[VariantResult], metric_names: Sequence[str], header: str) -> None:
    """A Tables I-III style table: ``metric/G-STD`` per metric, then L-STD."""
    columns = [f"{name.upper()}/G-STD" for name in metric_names]
    lines = [header, "", "| Variant | " + " | ".join([*columns, "L-STD"]) + " |", "|---" * (len(columns) + 2) + "|"]
    for r in results:
        cells = [f"{r.mean[n]:.4f}/{r.g_std[n]:.4f}" for n in metric_names]
        lines.append(f"| {r.label} | " + " | ".join([*cells, f"{r.l_std:.4f}"]) + " |")
    write_text_atomic(path, "\n".join(lines) + "\n")


def _pairs(options: Mapping[str, Any], scale: int) -> list[tuple[Tensor, Tensor]]:
    if options["dataset"] is None:
        from ..data.mini import mini_pairs

        found = [(p.lr, p.hr) for p in mini_pairs(options["mini_degradation"], scale, options["mini_size"])]
    else:
        from .bench import folder_samples

        root = options["dataset"]
        if not (root / "HR").is_dir() or not (root / "LR").is_dir():
            raise ConfigError(f"dataset={root} needs HR/ and LR/ folders (paired by file name)")
        found = [(s.lr, s.hr) for s in folder_samples(root, scale) if s.hr is not None]
    if not found:
        raise ConfigError(f"dataset={options['dataset']} has no LR-HR pairs; put images with the same names in HR/ and LR/")
    return found[: options["max_images"]] if options["max_images"] else found


def _variants(value: Any) -> list[dict[str, Any]]:
    """The ``variants`` option: a non-empty list of ``{label: TEXT, sr: {KNOB: VALUE}}``."""
    from ..options import NotAllowed, mapping

    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    variants = [mapping(item) for item in items if isinstance(item, Mapping)]
    if not items or len(variants) != len(items) or any(
            set(variant) - {"label", "sr"} or not isinstance(variant.get("sr", {}), Mapping) for variant in variants):
        raise NotAllowed("a non-empty list of {label: TEXT, sr: {KNOB: VALUE, ...}}")
    return variants


def _seeds(value: Any) -> list[int] | None:
    from ..options import NotAllowed

    if value is None:
        return None
    seeds = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds) or not all(
            isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 for seed in seeds):
        raise NotAllowed("a list of at least 2 different whole numbers >= 0, e.g. [233, 1, 2], or null (0..runs-1)")
    return seeds


def _stability_options() -> dict[str, Any]:
    """A parser per key of ``conf/stability.yaml`` but the composed ``method`` (and the ``sampler`` a diffusion
    method's YAML adds) (:func:`srkit.options.parse_options`)."""
    from ..options import choice, flag, folder, name, names, path, text, whole
    from ..registry import REGISTRIES
    from .iqa import METRIC_NAMES

    return {
        "weights": text(null="the method's default files"), "variants": _variants, "runs": whole(2), "seeds": _seeds,
        "metrics": names("metric", lambda: METRIC_NAMES), "crop_border": whole(0),
        "dataset": folder("HR/ and LR/ (paired by file name)", null="srkit-mini"),
        "mini_degradation": name("degradation", REGISTRIES["degradation"].names),
        "mini_size": choice(256, 512, null="both crop sizes"), "max_images": whole(1, null="every image"),
        "device": text(), "out": path(), "progress": flag,
    }


def run_stability(cfg: Any) -> dict[str, Any]:
    """The ``srkit stability`` task (conf/stability.yaml): writes stability.json and stability.md.

    ``cfg.method`` is a method config (the ``method`` group: ``method=NAME``, ``method.KEY=VALUE``). Every option
    is checked, the images read, the metrics built and the output folder created before the method is built, so a
    bad value costs no model build.
    """
    from omegaconf import OmegaConf

    from ..options import parse_options
    from ..registry import build_method, import_target
    from .iqa import MetricUnavailable, get_metric

    options = parse_options("stability", cfg, _stability_options(), composed=("method", "sampler"))
    method_config = OmegaConf.to_container(cfg.method, resolve=True)
    sampler_config = OmegaConf.to_container(cfg.sampler, resolve=True) if "sampler" in cfg else None
    if not isinstance(method_config, dict) or not isinstance(method_config.get("_target_"), str):
        raise ConfigError(f"method={cfg.method!r} is not a method config; pass method=NAME (`srkit list` names them)")
    descriptor = import_target(method_config["_target_"]).descriptor
    for variant in options["variants"]:
        steps, label = variant.get("sr", {}).get("steps"), variant.get("label", variant.get("sr"))
        if steps is not None and descriptor.steps is None:
            raise ConfigError(f"variant {label!r}: {descriptor.name} does not sample (no steps); drop the variant's sr.steps")
        if steps is not None and steps not in descriptor.steps:
            raise ConfigError(f"variant {label!r}: {descriptor.name} runs steps in {list(descriptor.steps)}, "
                              f"not steps={steps}; change the variant's sr.steps")
    seeds = options["seeds"] if options["seeds"] is not None else list(range(options["runs"]))
    pairs = _pairs(options, descriptor.scale)
    metrics, unavailable = {}, {}
    for metric_name in options["metrics"]:
        try:
            metrics[metric_name] = get_metric(metric_name, crop_border=options["crop_border"], device=options["device"])
        except MetricUnavailable as err:
            unavailable[metric_name] = str(err)
            log.warning("metric %s is unavailable: %s", metric_name, err)
    if not metrics:
        raise ConfigError(f"none of the metrics {options['metrics']} can run here (see the warnings above); "
                          "pass metrics=[psnr,ssim], which need nothing installed")
    out = options["out"]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the output folder out={out}: {err.strerror or err}; choose another out=") from None
    log.info("%s: %d variants x %d images x %d seeds", descriptor.name, len(options["variants"]), len(pairs), len(seeds))
    method = build_method(method_config, weights=options["weights"], device=options["device"], name=descriptor.name,
                          sampler=sampler_config)
    results = stability_study(method, pairs, options["variants"], seeds, metrics, crop_border=options["crop_border"],
                              progress=options["progress"])
    dataset = str(options["dataset"]) if options["dataset"] is not None else f"srkit-mini ({options['mini_degradation']})"
    report = {
        "method": descriptor.name, "weights": options["weights"], "config": method_config, "seeds": seeds,
        "images": len(pairs), "dataset": dataset,
        "crop_border": options["crop_border"], "unavailable": unavailable, "results": [r.__dict__ for r in results],
    }
    write_text_atomic(out / "stability.json", json.dumps(report, indent=2))
    header = (f"{descriptor.name} on {dataset}: {len(pairs)} images x {len(seeds)} seeds; "
              f"metric mean/G-STD (CCSR Eq. 4), L-STD (Eq. 5); {options['crop_border']}-px border crop")
    write_markdown(out / "stability.md", results, list(metrics), header)
    log.info("wrote %s and %s", out / "stability.json", out / "stability.md")
    return report
