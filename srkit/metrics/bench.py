"""The benchmark engine behind ``benchmarks/run_all.py`` and ``srkit bench``.

A *table spec* (``srkit/metrics/tables/<id>.yaml``, shipped with the package) transcribes one table of a paper: its metrics
(columns), protocol (scale, crop border, seeds) and rows (dataset, label, srkit method with its
``load`` overrides and ``sr`` knobs, and the paper's numbers). :func:`run_benchmark` measures
every row it can -- methods that load with their real weights, datasets that are present,
metrics whose models are available -- and writes, per table, Markdown and CSV with the measured
value beside the paper's, a PNG grid of crops per dataset and ``results.json`` with everything.
What cannot be measured is ``n/a`` with the reason. Work is sharded over processes by image when
launched with ``torchrun`` / ``accelerate launch`` (per-image values are gathered, so the result
equals a single-process run).

Nothing is computed twice: a unit is a method with its settings on a dataset, shared by the tables
that have the row and run once for the union of their seeds (each table then averages its own); a
method that does not sample (``descriptor.steps`` is None: a regressor such as Real-ESRGAN)
super-resolves each image once, whatever the seeds; and each model is built once. Progress is a bar
over the units and one over the images of each; messages go to the ``srkit.metrics.bench`` logger.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import zoo
from ..errors import ConfigError, SrkitError
from ..io import list_images, read_image, write_image, write_text_atomic
from .iqa import METRIC_NAMES, Metric, MetricUnavailable, get_metric
from .stability import LocalStd, g_std

# Columns that are not image metrics: measured from the model and its timing.
SPECIAL_COLUMNS = ("params_m", "total_params_m", "runtime_ms", "runtime_s", "l_std")
# Folder names of the real datasets under --dataset-root (each with HR/ and LR/; RealSet80: LR/ only).
DATASET_FOLDERS = {
    "realsr": "RealSR", "drealsr": "DRealSR", "realset80": "RealSet80", "imagenet-test": "ImageNet-Test", "div2k": "DIV2K",
}
MINI = "srkit-mini"
GRID_IMAGES, GRID_CROP = 3, 128

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One benchmark image: a name, the LR and, when the dataset has one, the HR (3, H, W) in [0, 1]."""

    name: str
    lr: Tensor
    hr: Tensor | None = None


@dataclass
class Row:
    dataset: str
    label: str
    method: str | None
    load: dict[str, Any] = field(default_factory=dict)
    sr: dict[str, Any] = field(default_factory=dict)
    paper: list[float | None] = field(default_factory=list)
    note: str | None = None


@dataclass
class Table:
    id: str
    paper: str
    table: str
    title: str
    protocol: dict[str, Any]
    metrics: list[str]
    seeds: list[int]
    rows: list[Row]


def default_tables_dir() -> Path:
    """The table specs srkit ships (``srkit/metrics/tables``): a wheel has them too."""
    return Path(__file__).resolve().parent / "tables"


def load_tables(folder: str | os.PathLike[str] | None = None, names: Sequence[str] | None = None) -> list[Table]:
    """Read and check the table specs in ``folder`` (all, or those whose id is in ``names``)."""
    from omegaconf import OmegaConf

    folder = Path(folder) if folder is not None else default_tables_dir()
    paths = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not paths:
        raise ConfigError(f"no table specs (*.yaml) in {folder}; pass tables_dir= pointing to a folder of specs")
    known = [p.stem for p in paths]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ConfigError(f"unknown tables {unknown}; known: {', '.join(known)}")
    tables = []
    for path in paths:
        if names and path.stem not in names:
            continue
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(spec, dict)
        metrics = list(spec["metrics"])
        for column in metrics:
            if column.removesuffix("_gstd") not in METRIC_NAMES and column not in SPECIAL_COLUMNS:
                known_columns = ", ".join(METRIC_NAMES + SPECIAL_COLUMNS)
                raise ConfigError(f"{path.name}: unknown column {column!r}; columns are {known_columns} (+ _gstd)")
        # protocol.load: per-method constructor arguments of every row (a row's own load overrides them), e.g. the
        # checkpoint a paper's numbers come from.
        # protocol.region: the region protocol (REGIONS) of every row, a knob of its sr (a row's own sr overrides it).
        shared_load = spec["protocol"].get("load") or {}
        shared_sr = {"region": spec["protocol"]["region"]} if spec["protocol"].get("region") else {}
        rows = [Row(**{**r, "load": {**shared_load.get(r.get("method"), {}), **(r.get("load") or {})},
                       "sr": {**shared_sr, **(r.get("sr") or {})}}) for r in spec["rows"]]
        for row in rows:
            if len(row.paper) != len(metrics):
                raise ConfigError(f"{path.name}: row {row.label!r} has {len(row.paper)} paper values for {len(metrics)} columns")
        seeds = list(spec["seeds"])
        tables.append(Table(path.stem, spec["paper"], spec["table"], spec["title"], spec["protocol"], metrics, seeds, rows))
    return tables


# --------------------------------------------------------------------------------------------
# Datasets


def folder_samples(root: Path, scale: int) -> list[Sample]:
    """Samples of a real dataset folder: ``root/LR`` and, if present, ``root/HR`` paired by file name."""

    if (root / "HR").is_dir():
        from ..data.paired import PairedFolder

        return [Sample(p["name"], p["lr"], p["hr"]) for p in PairedFolder(root / "HR", root / "LR", scale)]
    return [Sample(path.stem, read_image(path)) for path in list_images(root / "LR")]


def resolve_datasets(
    names: Sequence[str], *, mini: bool, dataset_root: str | None, scale: int, mini_degradation: str, mini_size: int | None
) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """The samples of each dataset that is present, and the reason for each that is not."""
    found: dict[str, list[Sample]] = {}
    missing: dict[str, str] = {}
    if mini:
        from ..data.mini import mini_pairs

        found[MINI] = [Sample(p.name, p.lr, p.hr) for p in mini_pairs(mini_degradation, scale, mini_size)]
        return found, missing
    for name in names:
        folder = DATASET_FOLDERS.get(name, name)
        if dataset_root is None:
            missing[name] = "no dataset_root given (--dataset-root DIR with DIR/" + folder + "/{HR,LR}; or --mini)"
        elif not (Path(dataset_root) / folder / "LR").is_dir():
            missing[name] = f"{Path(dataset_root) / folder / 'LR'} does not exist"
        else:
            found[name] = folder_samples(Path(dataset_root) / folder, scale)
    return found, missing


# --------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed() -> tuple[Dist, str]:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the environment.

    Returns the rank/world and the device of this process (its GPU, or the CPU: gloo backend).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda else "cpu"
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if world > 1:
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size()), device
    return Dist(), device


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Unit:
    """One measurement: a method with its settings on one dataset, shared by every table that has the row (their
    seeds differ: the :class:`Work` of the unit holds them all)."""

    method: str
    load: str  # JSON of the constructor overrides
    sr: str  # JSON of the sr() knobs
    dataset: str

    @property
    def slug(self) -> str:
        digest = hashlib.sha1(f"{self.load}{self.sr}".encode()).hexdigest()[:8]
        knobs = "_".join(f"{k}-{v}" for k, v in {**json.loads(self.load), **json.loads(self.sr)}.items())
        return re.sub(r"[^A-Za-z0-9._-]+", "", f"{self.method}_{knobs}")[:60] + f"_{digest}"


@dataclass
class Work:
    """What one unit computes for all the tables that need it: every seed any of them runs, every metric key, and
    the L-STD of each stability table (its crop border and seeds)."""

    seeds: set[int] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    stability: set[tuple[int, tuple[int, ...]]] = field(default_factory=set)


@dataclass
class Measured:
    """Per-image metric values of a unit (image -> metric -> seed -> value) and L-STDs ((crop border, seeds) ->
    image -> value), or why it failed."""

    values: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    l_std: dict[tuple[int, tuple[int, ...]], dict[str, float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    params_m: float | None = None
    total_params_m: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # metric key -> why n/a
    error: str | None = None
    std_map: Tensor | None = None  # the per-pixel std over seeds of the first image (mean over channels), float16


def metric_key(name: str, crop: int) -> str:
    return f"{name}@crop{crop}" if name in ("psnr", "psnr-rgb", "ssim", "ssim-yiq") else name


class MetricCache:
    """Builds each metric once; remembers why one is unavailable."""

    def __init__(self, device: str):
        self.device = device
        self.metrics: dict[str, Metric | str] = {}

    def get(self, key: str) -> Metric | str:
        if key not in self.metrics:
            name, _, crop = key.partition("@crop")
            try:
                self.metrics[key] = get_metric(name, crop_border=int(crop or 0), device=self.device)
            except MetricUnavailable as err:
                self.metrics[key] = str(err)
        return self.metrics[key]


# The region protocol of PG-ResShift Sec. 3.4 / Table 2 ("non-overlapped region"): the HR is known on a reference
# region, where an HR guide acts; an LR guide acts on the rest, and only the rest is scored.
REGIONS = ("left-half",)


def reference_mask(region: str, lr: Tensor) -> Tensor:
    """(1, 1, h, w) at the LR's size: 1 on the reference region (``left-half``: the left w // 2 columns)."""
    if region not in REGIONS:
        raise ConfigError(f"region must be one of {list(REGIONS)} or null, got {region!r}")
    mask = lr.new_zeros(1, 1, *lr.shape[-2:])
    mask[..., : lr.shape[-1] // 2] = 1
    return mask


def scored_region(region: str | None, out: Tensor, sample: Sample, scale: int) -> tuple[Tensor, Sample]:
    """The output and the sample cut to the scored (non-reference) region; both whole without a region."""
    if region is None:
        return out, sample
    left = sample.lr.shape[-1] - int((1 - reference_mask(region, sample.lr)[0, 0, 0]).sum())  # first unguided column
    hr = None if sample.hr is None else sample.hr[..., scale * left :]
    return out[..., scale * left :], Sample(sample.name, sample.lr[..., left:], hr)


def sample_knobs(knobs: dict[str, Any], sample: Sample) -> dict[str, Any]:
    """The ``sr`` knobs for one image: a table's ``guide: hr`` / ``guide: lr`` becomes that image's HR / LR tensor;
    with a ``region``, the HR guide gets the reference region as its ``guide_mask`` and the LR guide the rest."""
    knobs = dict(knobs)
    region = knobs.pop("region", None)
    guide = knobs.get("guide")
    if guide not in ("hr", "lr"):
        return knobs
    image = sample.hr if guide == "hr" else sample.lr
    if image is None:
        raise ConfigError(f"guide: {guide} needs the dataset's HR images, and {sample.name} has none")
    knobs["guide"] = image[None]
    if region is not None:
        reference = reference_mask(region, sample.lr)
        knobs["guide_mask"] = reference if guide == "hr" else 1 - reference
    return knobs


class ModelCache:
    """The model of the last (method, load overrides) asked for: the plan runs the units of one model one after the
    other, so each model is built once per run and one is held at a time. A model that fails to build is remembered
    as its error, for every unit of it."""

    def __init__(self, *, device: str, weights: str | None):
        self.device, self.weights = device, weights
        self.key: tuple[str, str] | None = None
        self.model: Any = None
        self.error: str | None = None

    def weights_of(self, method: str) -> str | None:
        """``weights`` for ``method``; ``"zoo"`` means the zoo's models where it has one, the real weights elsewhere."""
        if zoo.is_zoo(self.weights) and method not in zoo.METHOD_PARTS:
            return None
        return self.weights

    def overrides_of(self, unit: Unit) -> dict[str, Any]:
        """The unit's load overrides; with the zoo's weights, less the keys the zoo's parts provide: a table's
        calibration files (PG-ResShift's scales) are for the official networks, the zoo ships its own."""
        overrides = json.loads(unit.load)
        weights = self.weights_of(unit.method)
        if zoo.is_zoo(weights):
            provided = zoo.part_config(zoo.parts(weights, unit.method))
            overrides = {key: value for key, value in overrides.items() if key not in provided}
        return overrides

    def get(self, unit: Unit) -> tuple[Any, str | None]:
        """(model, None), or (None, why it cannot be built)."""
        from .. import load

        if self.key != (unit.method, unit.load):
            self.key, self.model, self.error = (unit.method, unit.load), None, None
            try:
                self.model = load(unit.method, weights=self.weights_of(unit.method), device=self.device, **self.overrides_of(unit))
            except SrkitError as err:
                self.error = f"{type(err).__name__}: {err}"
            except Exception as err:  # a plugin failing to build must not stop the other rows
                self.error = f"{unit.method} failed to load: {type(err).__name__}: {err}"
        return self.model, self.error


def measure_unit(
    unit: Unit, work: Work, samples: Sequence[Sample], *, models: ModelCache, metrics: MetricCache, image_dir: Path,
    dist: Dist, progress: bool = False,
) -> Measured:
    """Run one unit on this process's share of ``samples`` with every seed of ``work``; per-image values of its metric
    keys and its L-STDs. A method that does not sample (``descriptor.steps`` is None) runs each image once: its
    output is the same for every seed."""
    from tqdm.auto import tqdm


    result = Measured()
    model, result.error = models.get(unit)
    if model is None:
        return result
    learned = {id(p): p for module in model.learned_modules().values() for p in module.parameters()}
    result.params_m = sum(p.numel() for p in learned.values()) / 1e6  # what the papers count: the learned modules
    result.total_params_m = sum(p.numel() for p in model.parameters()) / 1e6
    knobs = json.loads(unit.sr)
    region = knobs.get("region")
    seeds = sorted(work.seeds)
    seed_free = model.descriptor.steps is None
    keys = sorted(work.keys)
    mine = range(dist.rank, len(samples), dist.world)
    for index in tqdm(mine, desc=f"{unit.method} on {unit.dataset}", unit="image", leave=False, disable=not progress):
        sample = samples[index]
        local = {request: LocalStd() for request in work.stability}
        per_metric: dict[str, dict[int, float]] = {}
        previous: tuple[int, Tensor] | None = None
        for seed in seeds:
            if previous is not None and seed_free:
                out = previous[1]
            else:
                start = time.perf_counter()
                try:
                    out = model.sr(sample.lr[None], seed=seed, **sample_knobs(knobs, sample))
                except SrkitError as err:
                    result.error = f"{type(err).__name__}: {err}"
                    return result
                except TypeError as err:  # a knob the method does not take
                    result.error = f"{unit.method}.sr() rejected {knobs}: {err}"
                    return result
                result.seconds.append(time.perf_counter() - start)
                out = out.float().cpu()
            scored_out, scored_sample = scored_region(region, out, sample, model.scale)
            if seed == seeds[0]:
                write_image(image_dir / unit.dataset / unit.slug / f"{sample.name}.png", out[0])
                if region is not None:  # what FID compares
                    write_image(image_dir / unit.dataset / f"{unit.slug}_scored" / f"{sample.name}.png", scored_out[0])
            for (crop, stability_seeds), std in local.items():
                if seed in stability_seeds:
                    std.update(out[0, :, crop : out.shape[-2] - crop, crop : out.shape[-1] - crop])
            if previous is not None and torch.equal(out, previous[1]):  # the same values again: the same metrics
                for values in per_metric.values():
                    values[seed] = values[previous[0]]
                previous = (seed, out)
                continue
            previous = (seed, out)
            for key in keys:
                value = _metric_value(metrics, key, scored_out, scored_sample, result.reasons)
                if value is not None:
                    per_metric.setdefault(key, {})[seed] = value
        result.values[sample.name] = per_metric
        for request, std in local.items():
            if len(request[1]) > 1:
                if result.std_map is None:
                    result.std_map = std.std_map().mean(0).half()
                result.l_std.setdefault(request, {})[sample.name] = std.image_value()
    return result


def _metric_value(metrics: MetricCache, key: str, out: Tensor, sample: Sample, reasons: dict[str, str]) -> float | None:
    """The metric ``key`` of one output, or None with the reason recorded (unavailable, needs HR, failed)."""
    metric = metrics.get(key)
    if isinstance(metric, str):
        reasons[key] = metric
        return None
    if metric.mode == "dataset":
        return None
    if metric.mode == "FR" and sample.hr is None:
        reasons[key] = "the dataset has no HR images (full-reference metric)"
        return None
    if metric.mode == "FR" and sample.hr is not None and sample.hr.shape[-2:] != out.shape[-2:]:
        reasons[key] = f"output {tuple(out.shape[-2:])} and HR {tuple(sample.hr.shape[-2:])} differ in size"
        return None
    try:
        value = metric(out) if metric.mode == "NR" else metric(out, sample.hr[None])
    except Exception as err:  # e.g. an IQA model rejecting the image size: n/a for this cell, not a crash
        reasons[key] = f"{key} failed on {sample.name}: {type(err).__name__}: {err}"
        return None
    return float(value[0])


def merge(parts: Sequence[Measured], order: Sequence[str]) -> Measured:
    """Merge the per-process results of a unit, images in dataset order (identical to one process)."""
    merged = Measured(params_m=parts[0].params_m, total_params_m=parts[0].total_params_m)
    for part in parts:
        merged.error = merged.error or part.error
        merged.std_map = merged.std_map if merged.std_map is not None else part.std_map
        merged.reasons.update(part.reasons)
        merged.values.update(part.values)
        for request, values in part.l_std.items():
            merged.l_std.setdefault(request, {}).update(values)
        merged.seconds.extend(part.seconds)
    merged.values = {n: merged.values[n] for n in order if n in merged.values}
    merged.l_std = {request: {n: values[n] for n in order if n in values} for request, values in merged.l_std.items()}
    return merged


def cell(measured: Measured, column: str, crop: int, seeds: Sequence[int], fid: dict[str, Any]) -> tuple[float | None, str | None]:
    """The measured value of one table column over the table's ``seeds``, or ``(None, reason)``."""
    if measured.error:
        return None, measured.error
    if column in ("params_m", "total_params_m"):
        return getattr(measured, column), None
    if column in ("runtime_ms", "runtime_s"):
        if not measured.seconds:
            return None, "no images were run"
        mean = sum(measured.seconds) / len(measured.seconds)
        return (mean * 1000 if column == "runtime_ms" else mean), None
    if column == "l_std":
        images = measured.l_std.get((crop, tuple(seeds)))
        if not images:
            return None, "L-STD needs at least 2 seeds"
        return sum(images.values()) / len(images), None
    if column == "fid":
        return fid.get("value"), fid.get("reason")
    name = column.removesuffix("_gstd")
    key = metric_key(name, crop)
    if key in measured.reasons:
        return None, measured.reasons[key]
    runs = [[v[key][seed] for seed in seeds] for v in measured.values.values() if key in v]  # (M images, N runs)
    if not runs:
        return None, "no images were measured"
    if column.endswith("_gstd"):
        if len(seeds) < 2:
            return None, "G-STD needs at least 2 seeds"
        return g_std([list(r) for r in zip(*runs)]), None  # (N runs, M images), Eq. (4), CCSR
    flat = [x for r in runs for x in r]
    return sum(flat) / len(flat), None


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class TableResult:
    table: Table
    rows: list[dict[str, Any]]


def run_benchmark(
    *,
    out: str | os.PathLike[str] = "outputs/bench",
    mini: bool = False,
    dataset_root: str | None = None,
    methods: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
    tables_dir: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    mini_degradation: str = "bicubic",
    mini_size: int | None = None,
    runs: int | None = None,
    datasets: Mapping[str, Sequence[Sample]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every table row that can run; write ``<table>.md``/``.csv``, ``grid_<dataset>.png`` and ``results.json``.

    ``methods`` restricts the srkit methods run (default: all registered); ``runs`` caps the number
    of seeds of stability tables (default: the paper's, e.g. 10 for CCSR); ``datasets`` supplies
    samples directly (name -> samples), bypassing ``mini``/``dataset_root``; ``progress`` shows bars over the
    units and their images (on stderr, first process only). Returns the JSON record.
    """
    from tqdm.auto import tqdm

    from .. import list_methods

    dist, auto_device = init_distributed()
    device = device if device not in (None, "auto") else auto_device
    specs = load_tables(tables_dir, tables)
    known = list_methods()
    selected = list(methods) if methods else known
    unknown = sorted(set(selected) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown methods {unknown}{hint}; srkit has: {', '.join(known)}")
    scales = {int(spec.protocol.get("scale", 4)) for spec in specs}
    if len(scales) != 1:
        raise ConfigError(f"the selected tables mix scales {sorted(scales)}; run them separately (tables=...)")
    (scale,) = scales
    for spec in specs:
        add_extra_rows(spec, selected)
        if runs is not None and len(spec.seeds) > 1:
            spec.seeds = spec.seeds[: max(2, runs)]
    wanted = sorted({r.dataset for s in specs for r in s.rows})
    if datasets is not None:
        found, missing = {k: list(v) for k, v in datasets.items()}, {}
    else:
        found, missing = resolve_datasets(
            wanted, mini=mini, dataset_root=dataset_root, scale=scale, mini_degradation=mini_degradation, mini_size=mini_size
        )

    def source(dataset: str) -> str:
        return MINI if mini and datasets is None else dataset

    out = Path(out)
    image_dir = out / "images"
    metrics = MetricCache(device)
    header = {
        "command": {"mini": mini, "dataset_root": dataset_root, "methods": selected, "weights": weights, "device": device,
                    "mini_degradation": mini_degradation if mini else None, "runs": runs, "world_size": dist.world},
        "versions": versions(),
    }
    if dist.rank == 0:
        log.info("%d tables, methods %s, device %s, %d process(es)", len(specs), selected, device, dist.world)
        for spec in specs:
            log.info("  %s: seeds %s, crop_border %s", spec.id, spec.seeds, spec.protocol.get("crop_border", scale))

    plan = plan_work(specs, source, scale)
    runnable = [unit for unit in plan if unit.dataset in found and unit.method in selected]
    models = ModelCache(device=device, weights=weights)
    measured: dict[Unit, Measured] = {}
    for unit in tqdm(runnable, desc="bench", unit="unit", disable=not progress or dist.rank != 0):
        samples = found[unit.dataset]
        if dist.rank == 0:
            log.info("running %s %s %s on %s (%d images, seeds %s)", unit.method, unit.load, unit.sr, unit.dataset,
                     len(samples), sorted(plan[unit].seeds))
        part = measure_unit(unit, plan[unit], samples, models=models, metrics=metrics, image_dir=image_dir, dist=dist,
                            progress=progress and dist.rank == 0)
        measured[unit] = merge(dist.gather(part), [s.name for s in samples])
    dist.barrier()
    if dist.rank != 0:
        return {}

    fids = {unit: dataset_fid(unit, found, metrics, image_dir) for unit in measured if "fid" in plan[unit].keys}
    results = [table_result(spec, selected, known, found, missing, measured, fids, source, scale) for spec in specs]
    record = {**header, "metric_options": metric_options(metrics), "tables": [tr_json(t) for t in results]}
    for key, options in record["metric_options"].items():
        log.info("  metric %s: %s", key, json.dumps(options, default=str)[:300])
    out.mkdir(parents=True, exist_ok=True)
    for tr in results:
        write_markdown(out / f"{tr.table.id}.md", tr, record["metric_options"])
        write_csv(out / f"{tr.table.id}.csv", tr)
    labels: dict[Unit, str] = {}
    for spec in specs:
        for row in spec.rows:
            unit = unit_of(row, source(row.dataset))
            if unit is not None:
                labels.setdefault(unit, row.label + (" (right half scored)" if row.sr.get("region") else ""))
    record["figures"] = {}
    for dataset, samples in found.items():
        units = [u for u in measured if u.dataset == dataset and not measured[u].error]
        write_grid(out / f"grid_{dataset}.png", samples, units, image_dir / dataset, measured, labels)
        record["figures"][dataset] = write_plots(out, dataset, units, measured, labels)
        for name, where in record["figures"][dataset].items():
            log.info("  %s %s: %s", dataset, name, where)
    write_text_atomic(out / "results.json", json.dumps(record, indent=1, default=str))
    log.info("wrote %d tables (.md, .csv), grids and results.json to %s", len(results), out.resolve())
    return record


def plan_work(specs: Sequence[Table], source: Callable[[str], str], scale: int) -> dict[Unit, Work]:
    """Each unit the tables need, with what all of them ask of it, ordered so that the units of one model (method
    and load overrides) follow each other (:class:`ModelCache` then builds each model once)."""
    plan: dict[Unit, Work] = {}
    for spec in specs:
        crop = int(spec.protocol.get("crop_border", scale))
        stability = any(c.endswith("_gstd") or c == "l_std" for c in spec.metrics)
        for row in spec.rows:
            unit = unit_of(row, source(row.dataset))
            if unit is None:
                continue
            work = plan.setdefault(unit, Work())
            work.seeds.update(spec.seeds)
            work.keys.update(metric_key(c.removesuffix("_gstd"), crop) for c in spec.metrics if c not in SPECIAL_COLUMNS)
            work.keys.add("haarpsi")  # weight-free (piq): the plots' perceptual axis when the tables' need weights
            if stability:
                work.stability.add((crop, tuple(spec.seeds)))
    first_seen = {key: index for index, key in enumerate(dict.fromkeys((u.method, u.load) for u in plan))}
    return dict(sorted(plan.items(), key=lambda item: first_seen[item[0].method, item[0].load]))


def add_extra_rows(spec: Table, selected: Sequence[str]) -> None:
    """Add a row per dataset for each selected method the paper's table does not contain (srkit's own baseline)."""
    in_table = {r.method for r in spec.rows}
    datasets = list(dict.fromkeys(r.dataset for r in spec.rows))
    for name in selected:
        if name not in in_table:
            empty: list[float | None] = [None] * len(spec.metrics)
            spec.rows += [Row(d, f"{name} (srkit)", name, paper=empty, note="not in the paper's table") for d in datasets]


def unit_of(row: Row, dataset: str) -> Unit | None:
    if row.method is None:
        return None
    return Unit(row.method, json.dumps(row.load, sort_keys=True), json.dumps(row.sr, sort_keys=True), dataset)


def dataset_fid(unit: Unit, found: Mapping[str, Sequence[Sample]], metrics: MetricCache, image_dir: Path) -> dict[str, Any]:
    """FID between the unit's outputs (first seed) and the dataset's HR images (pyiqa, folder mode), both cut to the
    scored region when the unit has one."""

    metric = metrics.get("fid")
    if isinstance(metric, str):
        return {"reason": metric}
    samples = found[unit.dataset]
    if any(s.hr is None for s in samples):
        return {"reason": "the dataset has no HR images (FID against HR)"}
    region = json.loads(unit.sr).get("region")
    hr_dir = image_dir / unit.dataset / ("_HR" if region is None else f"_HR_{region}")
    for s in samples:
        if not (hr_dir / f"{s.name}.png").exists():
            assert s.hr is not None
            scale = s.hr.shape[-1] // s.lr.shape[-1]
            write_image(hr_dir / f"{s.name}.png", scored_region(region, s.hr[None], s, scale)[1].hr)
    outputs = image_dir / unit.dataset / (unit.slug if region is None else f"{unit.slug}_scored")
    try:
        return {"value": metric(outputs, hr_dir)}
    except Exception as err:  # pyiqa's FID downloads its Inception weights on first use
        return {"reason": f"FID failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def table_result(
    spec: Table, selected: Sequence[str], known: Sequence[str], found: Mapping[str, Any], missing: Mapping[str, str],
    measured: Mapping[Unit, Measured], fids: Mapping[Unit, dict[str, Any]], source: Callable[[str], str], scale: int,
) -> TableResult:
    crop = int(spec.protocol.get("crop_border", scale))
    rows = []
    for row in spec.rows:
        dataset = source(row.dataset)
        unit = unit_of(row, dataset)
        reason = None
        if row.method is None:
            reason = row.note or "method not in srkit"
        elif row.method not in known:
            reason = f"method {row.method!r} is not in srkit yet"
        elif row.method not in selected:
            reason = "method not selected (--methods)"
        elif dataset not in found:
            reason = missing.get(dataset, f"dataset {dataset!r} not found")
        cells = []
        for i, column in enumerate(spec.metrics):
            value, why = (None, reason) if reason or unit is None else cell(measured[unit], column, crop, spec.seeds,
                                                                            fids.get(unit, {}))
            cells.append({"column": column, "measured": value, "paper": row.paper[i], "reason": why})
        shown = row.dataset if dataset == row.dataset else f"{dataset} (for {row.dataset})"
        rows.append({"dataset": shown, "label": row.label, "method": row.method, "load": row.load, "sr": row.sr, "note": row.note,
                     "cells": cells})
    return TableResult(spec, rows)


def tr_json(tr: TableResult) -> dict[str, Any]:
    t = tr.table
    return {"id": t.id, "paper": t.paper, "table": t.table, "title": t.title, "protocol": t.protocol, "seeds": t.seeds,
            "metrics": t.metrics, "rows": tr.rows}


def metric_options(metrics: MetricCache) -> dict[str, Any]:
    return {
        k: ({"source": m.source, **m.options} if isinstance(m, Metric) else {"unavailable": m}) for k, m in metrics.metrics.items()
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for package in ("srkit", "torch", "pyiqa"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


# --------------------------------------------------------------------------------------------
# Writers


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def write_markdown(path: Path, tr: TableResult, options: Mapping[str, Any]) -> None:
    t = tr.table
    notes: dict[str, int] = {}

    def mark(reason: str) -> str:
        return f"n/a[^{notes.setdefault(reason, len(notes) + 1)}]"

    lines = [f"# {t.paper}, {t.table}: {t.title}", "", f"Protocol: {json.dumps(t.protocol)}; seeds {t.seeds}.",
             "Cells: measured / paper.", "", "| dataset | method | " + " | ".join(t.metrics) + " |",
             "|---|---|" + "---|" * len(t.metrics)]
    for row in tr.rows:
        cells = [
            f"{fmt(c['measured']) if c['measured'] is not None else mark(c['reason'] or 'not measured')} / {fmt(c['paper'])}"
            for c in row["cells"]
        ]
        lines.append(f"| {row['dataset']} | {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Metric options (pinned):", ""]
    lines += [f"- `{k}`: {json.dumps(v, default=str)}" for k, v in options.items()]
    lines += [""] + [f"[^{i}]: {reason}" for reason, i in notes.items()]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_csv(path: Path, tr: TableResult) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["table", "dataset", "label", "method", "settings", "metric", "measured", "paper", "reason"])
    for row in tr.rows:
        settings = json.dumps({"load": row["load"], "sr": row["sr"]}, sort_keys=True)
        for c in row["cells"]:
            measured = "n/a" if c["measured"] is None else repr(c["measured"])
            paper = "" if c["paper"] is None else repr(c["paper"])
            cells = [c["column"], measured, paper, c["reason"] or ""]
            writer.writerow([tr.table.id, row["dataset"], row["label"], row["method"] or "", settings, *cells])
    write_text_atomic(path, text.getvalue())


def unit_means(measured: Measured) -> dict[str, float]:
    """Each metric key's mean over the images at the first seed measured."""
    per_key: dict[str, list[float]] = {}
    for values in measured.values.values():
        for key, by_seed in values.items():
            per_key.setdefault(key, []).append(by_seed[min(by_seed)])
    return {key: sum(v) / len(v) for key, v in per_key.items()}


def write_grid(path: Path, samples: Sequence[Sample], units: Sequence[Unit], folder: Path,
               measured: Mapping[Unit, Measured], labels: Mapping[Unit, str]) -> Path | None:
    """The zoom grid of the first :data:`GRID_IMAGES` images (:func:`srkit.metrics.figures.zoom_grid`): the whole HR
    with the box, then the zoomed LR (nearest), each unit's output with its metric values, and the HR."""
    from .figures import Panel, detail_window, write_zoom_grid

    rows = []
    for sample in samples[:GRID_IMAGES]:
        h, w = sample.lr.shape[-2:]
        scale = sample.hr.shape[-1] // w if sample.hr is not None else 4
        lr_up = F.interpolate(sample.lr[None], scale_factor=scale, mode="nearest")[0]
        overview = sample.hr if sample.hr is not None else lr_up
        size = min(GRID_CROP, h * scale, w * scale) // scale * scale
        top, left = detail_window(overview, size, multiple=scale)

        def crop(x: Tensor, top: int = top, left: int = left, size: int = size) -> Tensor:
            return x[..., top : top + size, left : left + size]

        panels = [Panel("LR (nearest)", crop(lr_up))]
        for unit in units:
            file = folder / unit.slug / f"{sample.name}.png"
            if file.exists():
                image = read_image(file)
                if image.shape[-2:] == lr_up.shape[-2:]:
                    values = {k: v[min(v)] for k, v in measured[unit].values.get(sample.name, {}).items()}
                    panels.append(Panel(labels.get(unit, unit.method), crop(image), values))
        if sample.hr is not None:
            panels.append(Panel("HR", crop(sample.hr)))
        rows.append((overview, (top, left, size), panels))
    return write_zoom_grid(path, rows)


# Perceptual metrics for the perception-distortion plot, in order of preference, and whether lower is better.
PERCEPTION = (("lpips", True), ("dists", True), ("haarpsi", False), ("niqe", True), ("musiq", False),
              ("clipiqa", False), ("maniqa", False), ("liqe", False))


def write_plots(out: Path, dataset: str, units: Sequence[Unit], measured: Mapping[Unit, Measured],
                labels: Mapping[Unit, str]) -> dict[str, str]:
    """The plots of one dataset (:mod:`srkit.metrics.figures`): figure name -> the file written, or why not."""
    from .. import describe
    from .figures import metric_vs_steps, perception_distortion, std_maps

    units = [u for u in units if "region" not in json.loads(u.sr)]  # half-image scores do not compare with the rest
    means = {unit: unit_means(measured[unit]) for unit in units}
    distortion = next((k for m in means.values() for k in sorted(m) if k.startswith("psnr@")), None)
    perception = next(((name, low) for name, low in PERCEPTION if any(name in m for m in means.values())), None)
    points = []
    for unit, values in means.items():
        knobs = json.loads(unit.sr)
        steps = knobs.pop("steps", None)
        settings = {k: v for k, v in {**json.loads(unit.load), **knobs}.items() if v is not None}
        series = " ".join([unit.method, *(f"{k}={v}" for k, v in settings.items())])
        samples_steps = describe(unit.method).steps is not None
        points.append((series, (steps or describe(unit.method).default_steps) if samples_steps else None, values))
    shown = [k for k in (distortion, perception and perception[0]) if k]
    figures = {"metric_vs_steps": metric_vs_steps(out / f"steps_{dataset}.png", points, shown, f"{dataset}: metric vs steps")}
    scatter = [(labels.get(u, u.method), m[distortion], m[perception[0]]) for u, m in means.items()
               if distortion and perception and distortion in m and perception[0] in m]
    figures["perception_distortion"] = perception_distortion(
        out / f"perception_distortion_{dataset}.png", scatter, distortion=distortion or "psnr",
        perception=perception[0] if perception else "a perceptual metric", lower_is_better=bool(perception and perception[1]),
        title=f"{dataset}: perception vs distortion")
    maps = [(labels.get(u, u.method), measured[u].std_map) for u in units if measured[u].std_map is not None]
    figures["l_std_maps"] = std_maps(out / f"l_std_{dataset}.png", maps, f"{dataset}: L-STD maps (first image)")
    return figures


def _bench_options() -> dict[str, Any]:
    """A parser per key of ``conf/bench.yaml`` (:func:`srkit.options.parse_options`)."""
    from .. import list_methods
    from ..options import choice, flag, folder, name, names, path, text, whole
    from ..registry import REGISTRIES

    return {
        "out": path(), "mini": flag, "dataset_root": folder("the datasets' folders (RealSR/HR, RealSR/LR, ...)", null="none"),
        "methods": names("method", list_methods, null="every method"), "tables": names("table", null="every table spec"),
        "tables_dir": folder("table specs (*.yaml)", null="the specs srkit ships"),
        "weights": text(null="each method's real weights"), "device": text(),
        "mini_degradation": name("degradation", REGISTRIES["degradation"].names),
        "mini_size": choice(256, 512, null="both crop sizes"), "runs": whole(2, null="the paper's number of seeded runs"),
        "progress": flag,
    }


def run_bench(cfg: Any) -> dict[str, Any]:
    """The ``srkit bench`` task: :func:`run_benchmark` with the keys of ``conf/bench.yaml``, each checked first."""
    from ..options import parse_options

    return run_benchmark(**parse_options("bench", cfg, _bench_options()))
