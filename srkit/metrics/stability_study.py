"""``srkit stability``: CCSR's stability study (Tables I-III style) as a command.

Every variant (a label and the keyword arguments of ``method.sr``) super-resolves every image once
per seed; per image and metric the values over the N seeds give G-STD (CCSR Eq. (4)) and the outputs
give L-STD (Eq. (5)), with the 4-pixel border crop of CCSR's ``cal_iqa`` scripts. The default
variants compare CCSR-S2 and CCSR-S1 with the same backbone under uniform DDPM sampling
(``sampling="uniform"``, 2 steps from T). Results go to ``out``/stability.json and stability.md;
metrics that cannot run here (e.g. pyiqa models without weights) are reported as unavailable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .stability import LocalStd, g_std

__all__ = ["VariantResult", "run_stability", "stability_study", "write_markdown"]


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
) -> list[VariantResult]:
    """Run every variant (``{"label": ..., "sr": {...}}``) on every (LR, HR) pair with every seed.

    ``metrics`` maps names to callables ``metric(sr, hr) -> (B,)`` values (see
    :func:`srkit.metrics.iqa.get_metric`).
    """
    if len(seeds) < 2:
        raise ConfigError(f"the stability study needs at least 2 seeds, got {list(seeds)}")
    if not pairs or not variants or not metrics:
        raise ConfigError("the stability study needs at least one image pair, one variant and one metric")
    results = []
    for variant in variants:
        knobs = dict(variant.get("sr") or {})
        values = {name: torch.zeros(len(seeds), len(pairs), dtype=torch.float64) for name in metrics}
        local = LocalStd()
        for j, (lr, hr) in enumerate(pairs):
            for i, seed in enumerate(seeds):
                out = method.sr(lr[None], seed=int(seed), **knobs).float()
                for name, metric in metrics.items():
                    values[name][i, j] = float(metric(out, hr[None].to(out))[0])
                c = crop_border
                local.update(out[0, :, c: out.shape[-2] - c, c: out.shape[-1] - c])
            local.image_value()
        results.append(VariantResult(
            label=str(variant.get("label", knobs)), sr=knobs,
            mean={name: float(v.mean()) for name, v in values.items()},
            g_std={name: g_std(v) for name, v in values.items()}, l_std=local.value,
        ))
    return results


def write_markdown(path: Path, results: Sequence[VariantResult], metric_names: Sequence[str], header: str) -> None:
    """A Tables I-III style table: ``metric/G-STD`` per metric, then L-STD."""
    columns = [f"{name.upper()}/G-STD" for name in metric_names]
    lines = [header, "", "| Variant | " + " | ".join([*columns, "L-STD"]) + " |", "|---" * (len(columns) + 2) + "|"]
    for r in results:
        cells = [f"{r.mean[n]:.4f}/{r.g_std[n]:.4f}" for n in metric_names]
        lines.append(f"| {r.label} | " + " | ".join([*cells, f"{r.l_std:.4f}"]) + " |")
    path.write_text("\n".join(lines) + "\n")


def _pairs(cfg: Any, scale: int) -> list[tuple[Tensor, Tensor]]:
    if cfg.dataset is None:
        from ..data.mini import mini_pairs

        found = [(p.lr, p.hr) for p in mini_pairs(cfg.mini_degradation, scale, cfg.mini_size)]
    else:
        from .bench import folder_samples

        root = Path(cfg.dataset)
        if not (root / "HR").is_dir() or not (root / "LR").is_dir():
            raise ConfigError(f"dataset={root} needs HR/ and LR/ folders (paired by file name)")
        found = [(s.lr, s.hr) for s in folder_samples(root, scale) if s.hr is not None]
    return found[: cfg.max_images] if cfg.max_images else found


def run_stability(cfg: Any) -> dict[str, Any]:
    """The ``srkit stability`` task (conf/stability.yaml): writes stability.json and stability.md."""
    from omegaconf import OmegaConf

    from ..registry import load
    from .iqa import MetricUnavailable, get_metric

    method = load(cfg.method, device=cfg.device, **OmegaConf.to_container(cfg.load or {}, resolve=True))
    metrics, unavailable = {}, {}
    for name in cfg.metrics:
        try:
            metrics[name] = get_metric(name, crop_border=cfg.crop_border, device=cfg.device)
        except MetricUnavailable as err:
            unavailable[name] = str(err)
    seeds = list(cfg.seeds) if cfg.seeds is not None else list(range(cfg.runs))
    variants = OmegaConf.to_container(cfg.variants, resolve=True)
    pairs = _pairs(cfg, method.scale)
    results = stability_study(method, pairs, variants, seeds, metrics, crop_border=cfg.crop_border)  # type: ignore[arg-type]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "method": cfg.method, "load": OmegaConf.to_container(cfg.load or {}, resolve=True), "seeds": seeds,
        "images": len(pairs), "dataset": cfg.dataset or f"srkit-mini ({cfg.mini_degradation})", "crop_border": cfg.crop_border,
        "unavailable": unavailable, "results": [r.__dict__ for r in results],
    }
    (out / "stability.json").write_text(json.dumps(report, indent=2))
    header = (f"{cfg.method} on {report['dataset']}: {len(pairs)} images x {len(seeds)} seeds; "
              f"metric mean/G-STD (CCSR Eq. 4), L-STD (Eq. 5); {cfg.crop_border}-px border crop")
    write_markdown(out / "stability.md", results, list(metrics), header)
    print((out / "stability.md").read_text())
    return report
