"""The ``srkit`` command: ``srkit <command> [key=value ...]``.

Each command is a Hydra application over the configs shipped in ``srkit.conf``; Hydra is
imported and initialised only inside the command, never by ``import srkit``. Installed plugin
methods compose like the shipped ones (:func:`_store_plugin_methods`), ``srkit <command> --help``
lists the options of the command's YAML with their comments, and a bad command line is one
``srkit <command>: error: ...`` line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from . import options as option_parsing
from .errors import ConfigError, InvalidImageError, SrkitError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .io import DecodedImage

log = logging.getLogger("srkit.cli")  # not __name__: that is "__main__" under `python -m srkit.cli`


class Command(NamedTuple):
    config: str  # its top-level YAML in srkit.conf, e.g. "sr" for conf/sr.yaml ("": no Hydra config)
    description: str
    usage: str


COMMANDS: dict[str, Command] = {
    "sr": Command("sr", "super-resolve an image file or a folder", "srkit sr input=PATH [method=NAME] [key=value ...]"),
    "train": Command("train", "train a method that has losses()",
                     "srkit train method=NAME data.hr=DIR [data.lr=DIR] [train=NAME] [train.KEY=VALUE ...]"),
    "bench": Command("bench", "measure the papers' tables with what is available",
                     "srkit bench [+bench=mini] [methods=[NAME,...]] [key=value ...]"),
    "convert": Command("convert", "official checkpoint -> srkit safetensors",
                       "srkit convert source=FILE [output=FILE] [component=NAME]"),
    "demo": Command("demo", "super-resolve the bundled photograph with real pretrained weights and write a comparison",
                    "srkit demo [output=DIR] [key=value ...]"),
    "calibrate": Command("calibrate", "fit pg-resshift's guidance scales on LR-HR pairs",
                         "srkit calibrate [data._target_=...] [mode=reference|non-reference] [per_step=false] [output=FILE]"),
    "stability": Command("stability", "G-STD/L-STD of a method's variants over N seeds (CCSR Tables I-III)",
                         "srkit stability [method=NAME] [weights=...] [runs=N] [dataset=DIR]"),
    "list": Command("", "list the available methods and what they support", "srkit list"),
}


def run_sr(cfg: Any) -> dict[str, list[Path]]:
    """Super-resolve ``cfg.input`` (file or folder) into ``cfg.output``; returns written/skipped/failed.

    Every option is checked first (:func:`_sr_options`), then the output names (:func:`_sr_jobs`) and the output
    folder; the model is built only when some image needs it. An existing output is kept only where the folder's
    manifest (:class:`_Manifest`) says it was made from the same file with the same settings. In a folder run an
    image that fails is reported and the run goes on.
    """
    from tqdm.auto import tqdm

    from .registry import build_method

    options = _sr_options(cfg)
    _check_against_descriptor(_method_choice(), options)
    jobs, manifest_folder = _sr_jobs(options["input"], options["output"], recursive=options["recursive"],
                                     overwrite=options["overwrite"])
    _prepare_output_folder(manifest_folder or options["output"].parent,
                           recursive=options["recursive"] and manifest_folder is not None)
    method_config = _plain(cfg.method)
    sampler_config = _plain(cfg.sampler) if "sampler" in cfg else None
    settings = {"method": _method_choice(), "config": method_config, "sampler": sampler_config,
                **{key: options[key] for key in _SETTINGS_KEYS}}
    manifest = _Manifest(manifest_folder, settings) if manifest_folder else None
    folder_run = options["input"].is_dir()
    report: dict[str, list[Path]] = {"written": [], "skipped": [], "failed": []}

    def failed(job: _Job, err: SrkitError) -> None:
        if not folder_run:
            raise err
        log.error("%s: %s; skipped", job.source, err)
        report["failed"].append(job.source)

    pending: list[tuple[_Job, str]] = []
    for job in jobs:
        try:
            digest = _sha256(job.source)
            if manifest is not None and not options["overwrite"] and manifest.keeps(job, digest):
                report["skipped"].append(job.target)
            else:
                pending.append((job, digest))
        except SrkitError as err:
            failed(job, err)
    if not pending:
        return report
    model = build_method(method_config, weights=options["weights"], device=options["device"], dtype=options["dtype"],
                         sampler=sampler_config)
    for job, digest in tqdm(pending, desc="images", unit="image", disable=not (folder_run and options["progress"])):
        try:
            _super_resolve(model, job.source, job.target, options)
            if manifest is not None:
                manifest.record(job, digest)
            report["written"].append(job.target)
        except SrkitError as err:
            failed(job, err)
    return report


def _sr_task(cfg: Any) -> None:
    with _console_log("sr"):
        report = run_sr(cfg)
    print(
        f"srkit sr: wrote {len(report['written'])}, kept {len(report['skipped'])} existing "
        f"(overwrite=true to redo), failed {len(report['failed'])} -> {Path(cfg.output).resolve()}"
    )
    if report["failed"]:
        raise SystemExit(1)


def _demo_task(cfg: Any) -> None:
    from . import list_methods
    from .demo import run_demo
    from .zoo import METHOD_PARTS

    options = option_parsing.parse_options("demo", cfg, {
        "output": option_parsing.path(), "methods": option_parsing.names("method", list_methods, least=0),
        "zoo": option_parsing.names("zoo method", lambda: METHOD_PARTS, null="no zoo rows", least=0),
        "device": option_parsing.text(), "tile": option_parsing.whole(8, null="whole image"),
    })
    paths = run_demo(output=options["output"], methods=options["methods"], zoo=options["zoo"] or [],
                     device=options["device"], tile=options["tile"])
    print("srkit demo: results written:")
    for name, path in paths.items():
        print(f"  {name:<12} {path.resolve()}")


def _train_task(cfg: Any) -> None:
    from .train import run_training

    with _console_log("train"):  # the trainer's log records (resume, validation metrics, checkpoints) on the console
        history = run_training(cfg)
    print(f"srkit train: ran {len(history)} steps; run folder {Path(cfg.train.output_dir).resolve()}")


def _bench_task(cfg: Any) -> None:
    from .metrics.bench import run_bench

    with _console_log("bench"):  # what runs, the metric options, where the tables went; bars over units and images
        run_bench(cfg)


def _calibrate_task(cfg: Any) -> None:
    from .methods.pg_resshift.calibration import run_calibration

    with _console_log("calibrate"):  # the pairs, then the fitted scales and the file; a bar over the pairs
        run_calibration(cfg)


def _stability_task(cfg: Any) -> None:
    from .metrics.stability_study import run_stability

    with _console_log("stability"):  # the runs to do, unavailable metrics; a bar over the runs
        run_stability(cfg)
    print((Path(cfg.out) / "stability.md").read_text(), end="")  # the result table


def _convert_task(cfg: Any) -> None:
    from .weights.convert import convert_task

    convert_task(cfg)


def _list_methods() -> None:
    from . import describe, list_methods
    from .zoo import METHOD_PARTS

    for name in list_methods():
        d = describe(name)
        steps = "-" if d.steps is None else ",".join(map(str, d.steps))
        zoo = "zoo" if name in METHOD_PARTS else "-"  # small weights trained here: weights=zoo (srkit.zoo)
        print(f"{name:<14} x{d.scale}  steps {steps:<16} {', '.join(d.dtypes):<36} {zoo:<4} {d.title}")


TASKS: dict[str, Callable[[Any], None]] = {
    "sr": _sr_task, "train": _train_task, "bench": _bench_task, "convert": _convert_task,
    "demo": _demo_task, "stability": _stability_task, "calibrate": _calibrate_task,
}


def _run_hydra(command: str, argv: Sequence[str]) -> None:
    import hydra
    from hydra.errors import HydraException

    from .registry import config_dir

    config_name = COMMANDS[command].config
    if "method" in _config_groups(_config_lines(config_name)):
        _store_plugin_methods()

    def task(cfg: Any) -> None:
        # Hydra reports a task's exception with a stack trace; srkit's own errors are user errors and get
        # their message only (SystemExit passes through Hydra untouched).
        try:
            _check_given(command, cfg)
            TASKS[command](cfg)
        except SrkitError as err:
            _exit_with_error(command, err)

    # Hydra prints its own errors (a bad override, an unknown config) over several lines; with
    # HYDRA_FULL_ERROR it raises them instead, and they become one srkit error line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = [f"srkit {command}", *map(_quote_path, argv)]
    try:
        hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()
    except HydraException as err:
        raise _command_line_error(err) from None


# Keys whose values are paths (the last part of a dotted key: data.hr, train.output_dir, ...).
_PATH_KEYS = {"input", "output", "out", "weights", "hr", "lr", "val_hr", "val_lr", "dataset", "dataset_root", "source",
              "output_dir", "tables_dir", "guide"}
_OVERRIDE = re.compile(r"(?P<key>[+~]{0,2}[\w.]+)=(?P<value>.+)", re.DOTALL)
_PLAIN_VALUE = re.compile(r"[\w./\\+\-~@:]*", re.ASCII)  # what Hydra's grammar takes unquoted in a path


def _quote_path(override: str) -> str:
    """``key=value`` with a path value quoted for Hydra's grammar when it needs it, so paths work as typed: spaces,
    ``=``, ``,``, brackets and non-ASCII letters (which Hydra rejects unquoted) included. Values already quoted,
    and values of other keys (a learning rate, a list), are passed unchanged."""
    match = _OVERRIDE.fullmatch(override)
    if not match or match["key"].lstrip("+~").rpartition(".")[2] not in _PATH_KEYS:
        return override
    value = match["value"]
    if _PLAIN_VALUE.fullmatch(value) or value[0] in "'\"":
        return override
    # In a quoted value, backslashes are literal except before a quote or the closing quote; ${ interpolates.
    escaped = re.sub(r"(\\*)'", lambda m: 2 * m[1] + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: 2 * m[1], escaped).replace("${", "\\${")
    return f"{match['key']}='{escaped}'"


def _store_plugin_methods() -> None:
    """Let ``method=<plugin>`` compose: Hydra finds only ``conf/method/*.yaml``, so every installed method
    without a file there goes into Hydra's ConfigStore, group ``method``, with its defaults as written
    (its ``<name>.yaml`` beside the class, or the constructor's defaults; a ``defaults`` list composes
    as in a shipped YAML). Composition then checks ``method.KEY=VALUE`` overrides as for built-ins.
    """
    from hydra.core.config_store import ConfigStore

    from .registry import METHODS, config_dir, default_config_source

    store = ConfigStore.instance()
    for entry in METHODS:
        if (config_dir() / "method" / f"{entry.name}.yaml").is_file():
            continue
        config, path = default_config_source(entry)
        try:
            store.store(group="method", name=entry.name, node=config)
        except ValueError as err:  # OmegaConf rejects values YAML cannot hold (e.g. a torch.dtype default)
            source = path or f"the constructor defaults of {config['_target_']}"
            raise ConfigError(
                f"the default config of method {entry.name!r} ({source}) is not a valid config: {str(err).splitlines()[0]}; "
                f"give the plugin a {entry.name}.yaml beside its class with plain YAML values"
            ) from None


def _check_given(command: str, cfg: Any) -> None:
    """Reject a run whose config still has ``???`` values (the task would fail on reading them)."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be given, e.g. srkit {command} {missing[0]}=...; `srkit {command} --help` lists the options"
        )


def _command_line_error(err: Exception) -> ConfigError:
    """Hydra's report of a bad command line, on one line and with close matches."""
    first_line = str(err).splitlines()[0].rstrip(".")
    cause = err.__cause__
    parent, key, full_key = (getattr(cause, name, None) for name in ("parent_node", "key", "full_key"))
    if parent is not None and hasattr(parent, "keys") and key not in parent:  # an override of a key the config lacks
        prefix = str(full_key).rpartition(".")[0]
        keys = [str(k) for k in parent if k not in ("_target_", "hydra")]
        close = difflib.get_close_matches(str(key), keys, n=1)
        hint = f" Did you mean {'.'.join(filter(None, (prefix, close[0])))!r}?" if close else ""
        listing = f" Keys of {prefix}: {', '.join(keys)}." if prefix and keys else ""
        return ConfigError(f"{first_line}: no such key.{hint}{listing} (`--help` lists the options, `--cfg job` prints the config)")
    options = getattr(err, "options", None)  # Hydra's MissingConfigException: no such option of a config group
    if options:
        group, _, name = str(getattr(err, "missing_cfg_file", "")).rpartition("/")
        close = difflib.get_close_matches(name, options, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = " (`srkit list` describes them)" if group == "method" else ""
        return ConfigError(f"{first_line}.{hint} Options: {', '.join(options)}{listing}")
    message = re.sub(r"\s+", " ", str(err)).strip()
    override = getattr(err, "override", None)  # Hydra's OverrideParseException names the override apart
    return ConfigError(message if not override or override in message else f"cannot parse {override!r}: {message}")


def _exit_with_error(command: str, err: SrkitError) -> NoReturn:
    print(f"srkit {command}: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


# ------------------------------------------------------------------------------------------------
# srkit sr: strict options, output names, the resume manifest

MANIFEST_NAME = "srkit-manifest.json"  # in the output folder: what each result there was made from
_SR_KNOBS = ("steps", "seed", "tile", "tile_overlap", "tile_batch", "decoder_tile", "color_fix", "fast")  # passed to sr()
# What makes a result: recorded in the manifest, so a result is kept only for the same values. Not the device:
# devices differ by float rounding only.
_SETTINGS_KEYS = ("weights", "dtype", *_SR_KNOBS, "bits")
# Top-level keys beside the options: the method and the sampler settings a diffusion method's YAML adds.
_SR_COMPOSED_KEYS = ("method", "sampler")


def _tile(value: Any) -> int | str | None:
    if value == "auto" or value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise option_parsing.NotAllowed("a whole number >= 1, auto (the largest that free memory allows), or null (whole images)")


def _bits(value: Any) -> int | None:
    if value is None or (value in (8, 16) and not isinstance(value, bool)):
        return value
    raise option_parsing.NotAllowed("8 or 16, or null (the bit depth of each input)")


def _fast(value: Any) -> bool | str:
    from .types import FAST_DTYPES

    if value in FAST_DTYPES:
        return value
    try:
        return option_parsing.flag(value)
    except option_parsing.NotAllowed:
        raise option_parsing.NotAllowed(f"true (bfloat16), false (the exact path) or {' | '.join(FAST_DTYPES)}") from None


def _color_fix(value: Any) -> str | None:
    from .ops.color import check_color_fix

    return None if value is None else check_color_fix(value)  # its ConfigError names the colour fixes


# One parser per key of conf/sr.yaml (tests/test_cli_errors.py checks that they agree).
_SR_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "input": option_parsing.path(), "output": option_parsing.path(), "recursive": option_parsing.flag,
    "weights": option_parsing.text(null="the method's default files"), "device": option_parsing.text(), "dtype": option_parsing.text(),
    "steps": option_parsing.whole(1, null="the method's default"), "seed": option_parsing.whole(0, null="unseeded"), "tile": _tile,
    "tile_overlap": option_parsing.whole(0), "tile_batch": option_parsing.whole(1),
    "decoder_tile": option_parsing.whole(8, null="untiled decoding"), "color_fix": _color_fix, "fast": _fast, "bits": _bits,
    "overwrite": option_parsing.flag, "progress": option_parsing.flag,
}


def _sr_options(cfg: Any) -> dict[str, Any]:
    """The options of ``srkit sr``, each checked, or a ConfigError naming the key, its value and what it takes."""
    options = option_parsing.parse_options("sr", cfg, _SR_OPTIONS, _SR_COMPOSED_KEYS)
    if isinstance(options["tile"], int) and options["tile"] < max(2 * options["tile_overlap"], 8):  # known before any model
        raise ConfigError(f"tile={options['tile']} is too small for tile_overlap={options['tile_overlap']}: a tile must be at "
                          f"least 2 x tile_overlap and 8 pixels; pass tile={max(2 * options['tile_overlap'], 8)} or more, "
                          "or a smaller tile_overlap")
    return options


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _check_against_descriptor(name: str, options: dict[str, Any]) -> None:
    """What the method's descriptor rules out (steps, tiles), before its model is built (InvSR's takes minutes)."""
    from .errors import UnknownNameError
    from .registry import describe

    try:
        descriptor = describe(name)
    except UnknownNameError:  # a method given by _target_ only: its sr() checks these
        return
    descriptor.check_steps(options["steps"])
    if options["tile"] is not None and descriptor.tiling == "internal":
        raise ConfigError(f"{name} tiles internally; run it without tile=")


def _method_choice() -> str:
    """The method=NAME of the running command."""
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().runtime.choices["method"])


class _Job(NamedTuple):
    source: Path  # the input file
    name: str  # the input relative to the input folder (posix), as the manifest records it
    target: Path  # the output file
    key: str  # the output relative to the output folder (posix): its manifest entry


def _sr_jobs(source: Path, output: Path, *, recursive: bool, overwrite: bool) -> tuple[list[_Job], Path | None]:
    """What to write where, and the folder whose manifest records it (None: ``output`` names the one file to write).

    An output is named after its input with the extension ``.png``; where two inputs of a folder share that name
    (``x.png`` and ``x.jpg``), each keeps its own extension too (``x.png.png``, ``x.jpg.png``).
    """
    from .io import READ_EXTENSIONS, list_images

    if source.is_dir():
        files = list_images(source, recursive=recursive)
        relatives = [path.relative_to(source) for path in files]
    elif source.exists():
        if output.suffix.lower() in READ_EXTENSIONS and not output.is_dir():  # output=result.png: that file
            if output.suffix.lower() != ".png":
                raise ConfigError(f"output={output}: srkit sr writes PNG files; name a .png file or a folder")
            if output.exists() and not overwrite:
                raise ConfigError(f"output={output} exists; pass overwrite=true to replace it, or name another file")
            jobs = [_Job(source, source.name, output, output.name)]
            _check_not_an_input(jobs)
            return jobs, None
        files, relatives = [source], [Path(source.name)]
    else:
        raise SrkitError(f"input {str(source)!r} does not exist; pass input=<image file or folder>")
    names = _output_names(relatives)
    jobs = [_Job(file, relative.as_posix(), output / name, name.as_posix()) for file, relative, name in zip(files, relatives, names)]
    _check_not_an_input(jobs)
    return jobs, output


def _output_names(relatives: Sequence[Path]) -> list[Path]:
    """The output of each input (relative paths): ``x.jpg`` -> ``x.png``, or ``x.jpg.png`` where two inputs would
    share ``x.png``. Names are compared case-insensitively, as on macOS and Windows file systems."""
    plain = [relative.with_suffix(".png") for relative in relatives]
    counts: dict[str, int] = {}
    for name in plain:
        counts[name.as_posix().casefold()] = counts.get(name.as_posix().casefold(), 0) + 1
    names = [name if counts[name.as_posix().casefold()] == 1 else relative.with_name(f"{relative.name}.png")
             for relative, name in zip(relatives, plain)]
    writers: dict[str, Path] = {}
    for relative, name in zip(relatives, names):  # x.png.jpg's x.png.png can still meet x.png's
        other = writers.setdefault(name.as_posix().casefold(), relative)
        if other != relative:
            raise ConfigError(f"{other} and {relative} would both be written to {name}; rename one of them")
    return names


def _check_not_an_input(jobs: Sequence[_Job]) -> None:
    """Refuse to write a result over an input (output= the input folder, or the input file itself)."""
    inputs = {job.source.resolve() for job in jobs}
    clash = next((job.target for job in jobs if job.target.resolve() in inputs), None)
    if clash is not None:
        raise ConfigError(f"the result {clash} would replace that input; choose another output= (a folder of its own)")


def _prepare_output_folder(folder: Path, *, recursive: bool) -> None:
    """Create ``folder`` and check that it takes files (a one-line error before any model is built), and delete
    the partial files an interrupted write left there."""
    from .io import remove_partial_writes

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"the output folder {folder} is a file; choose another output=")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()  # nameless: a killed run leaves nothing behind
    except OSError as e:
        raise ConfigError(f"cannot write into the output folder {folder}: {e.strerror or e}; "
                          "choose another output= or fix the folder's permissions") from None
    partial = remove_partial_writes(folder, recursive=recursive)
    if partial:
        log.info("removed %d partial file(s) of an interrupted write: %s", len(partial), ", ".join(p.name for p in partial))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise InvalidImageError(f"cannot read {path}: {e.strerror or e}; check the file's permissions") from e
    return digest.hexdigest()


class _Manifest:
    """``srkit-manifest.json`` of an output folder: for each output, the input it was made from (name, SHA-256)
    and the settings that made it (method, config, weights, steps, seed, tiles, ...; kept once per settings).

    It is rewritten atomically after each result, so it never records a result that was not written.
    """

    VERSION = 1

    def __init__(self, folder: Path, settings: dict[str, Any]):
        self.path = folder / MANIFEST_NAME
        self.settings = json.loads(json.dumps(settings))  # as JSON holds it: tuples as lists, keys as text
        self.settings_id = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.known_settings, self.outputs = self._load()

    def _load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}, {}
        except (OSError, ValueError) as e:
            log.warning("%s cannot be read (%s); its results are redone", self.path, e)
            return {}, {}
        if not (isinstance(data, dict) and data.get("version") == self.VERSION
                and isinstance(data.get("settings"), dict) and isinstance(data.get("outputs"), dict)):
            log.warning("%s is not a manifest of this srkit version; its results are redone", self.path)
            return {}, {}
        return data["settings"], data["outputs"]

    def _entry(self, job: _Job, digest: str) -> dict[str, str]:
        return {"source": job.name, "sha256": digest, "settings": self.settings_id}

    def keeps(self, job: _Job, digest: str) -> bool:
        """Whether the output of ``job`` exists and was made from this input (``digest``) with these settings.

        An existing output the manifest has no record of is an error: srkit replaces only what it wrote.
        """
        if not job.target.exists():
            return False
        entry = self.outputs.get(job.key)
        if entry is None:
            raise ConfigError(
                f"{job.target} exists but {self.path} has no record of it (written by something else, or by an "
                "srkit without manifests); pass overwrite=true to replace it, or move it away"
            )
        if entry == self._entry(job, digest):
            return True
        log.info("%s was made from another file or with other settings; redoing it", job.target)
        return False

    def record(self, job: _Job, digest: str) -> None:
        from .io import atomic_file

        self.outputs[job.key] = self._entry(job, digest)
        self.known_settings[self.settings_id] = self.settings
        used = {entry.get("settings") for entry in self.outputs.values() if isinstance(entry, dict)}
        self.known_settings = {key: value for key, value in self.known_settings.items() if key in used}
        data = {"version": self.VERSION, "settings": self.known_settings, "outputs": self.outputs}
        with atomic_file(self.path) as file:
            file.write(json.dumps(data, indent=1, sort_keys=True).encode())


def _super_resolve(model: Any, source: Path, target: Path, options: dict[str, Any]) -> None:
    """One image: the model super-resolves the colour; an alpha channel is upscaled apart (bicubic) and kept.

    With a tile and a PNG output, the image is written band by band as the tiles finish (SRMethod.sr_rows), so
    memory follows the tile, not the image: the file's samples stay 8- or 16-bit and the output is never held whole.
    AdaIN's colour fix needs the whole output, so with it the output is assembled in memory.
    """
    from .io import decode_image, image_format

    image = decode_image(source)
    bits = options["bits"] or image.write_bits
    written = image_format(bits, 4 if image.has_alpha else 3)
    if written != image.format:
        log.warning("%s: %s is written as %s", source, image.format, written)
    if options["tile"] != "auto":
        _write_result(model, image, target, options, options["tile"])
        return
    from .tiling import auto_tile, with_auto_tile

    # The output of a streamed write is never held: only a band and one tile's working memory must fit.
    minimum = max(2 * options["tile_overlap"], model.size_multiple, 8)
    start = auto_tile(image.shape, scale=model.scale, device=model.device, minimum=minimum)
    with_auto_tile(lambda tile: _write_result(model, image, target, options, tile), start=start,
                   side=max(image.shape[-2:]), minimum=minimum, device=model.device)


def _write_result(model: Any, image: DecodedImage, target: Path, options: dict[str, Any], tile: int | None) -> None:
    """Super-resolve ``image`` with ``tile`` and write it (atomically: a failure leaves no file)."""
    from .io import to_samples, write_image, write_png_rows
    from .ops.resize import bicubic_upsample, bicubic_upsample_rows

    bits = options["bits"] or image.write_bits
    knobs = {**{key: options[key] for key in _SR_KNOBS}, "tile": tile}
    fix = options["color_fix"] or model.color_fix
    if tile is None or target.suffix.lower() != ".png" or fix == "adain":
        hr = model.sr(image.color[None], progress=options["progress"], **knobs)[0]
        alpha = None if image.alpha is None else bicubic_upsample(image.alpha[None], model.scale)[0].clamp(0, 1)
        write_image(target, hr, bits=bits, alpha=alpha)
        return
    height, width = image.shape[-2:]

    def alpha_rows(top: int, bottom: int) -> torch.Tensor:
        return image.crop_alpha(top, 0, bottom - top, width)

    def bands() -> Iterator[np.ndarray]:
        for first, rows in model.sr_rows(image, progress=options["progress"], **knobs):
            last = first + rows.shape[-2]
            alpha = None
            if image.has_alpha:
                alpha = bicubic_upsample_rows(alpha_rows, first, last, scale=model.scale, height=height)[0].clamp(0, 1)
            yield to_samples(rows[0], bits, alpha)

    write_png_rows(target, bands(), width=model.scale * width, height=model.scale * height,
                   channels=4 if image.has_alpha else 3, bits=bits)


class _ConsoleHandler(logging.Handler):
    """Each record as one ``srkit <command>: [warning: ]message`` line on stderr, printed above any progress bar."""

    def __init__(self, command: str):
        super().__init__()
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        try:
            tqdm.write(f"srkit {self.command}: {level}{record.getMessage()}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextmanager
def _console_log(command: str) -> Iterator[None]:
    """Show srkit's log records (info and above) on the console while a command runs."""
    logger = logging.getLogger("srkit")
    handler, level = _ConsoleHandler(command), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------
# Help: the options of a command's YAML with their comments

_KEY_LINE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?")
_DEFAULTS_ENTRY = re.compile(r"\s+- (?P<group>\w+): *(?P<option>\S+)\s*(?:#.*)?")
_HYDRA_KEYS = ("defaults", "hydra")  # Hydra's own keys, not options of the command
_LEFT_COLUMN_MAX = 30  # a wider key=default puts its comment on the next line


def _config_lines(config_name: str) -> list[str]:
    from .registry import config_dir

    return (config_dir() / f"{config_name}.yaml").read_text().splitlines()


def _config_groups(lines: Sequence[str]) -> dict[str, str]:
    """Group -> default option of a config's ``defaults`` list (``- method: bicubic``; not Hydra's own)."""
    groups: dict[str, str] = {}
    in_defaults = False
    for line in lines:
        if line.startswith("#"):
            continue
        if line and not line[0].isspace():
            in_defaults = line.startswith("defaults:")
        elif in_defaults and (entry := _DEFAULTS_ENTRY.fullmatch(line)):
            groups[entry["group"]] = entry["option"]
    return groups


def _option_rows(lines: Sequence[str]) -> list[tuple[str, str]]:
    """``(key=default, comment)`` of each ``key: value  # comment`` line of a config, nested keys dotted.

    A mapping block is a row of its own only when it has a comment; a list block is ``key=[...]``.
    """
    rows: list[tuple[str, str]] = []
    blocks: list[tuple[int, str]] = []  # (indent, key) of the mapping blocks around the current line
    for index, line in enumerate(lines):
        match = _KEY_LINE.fullmatch(line.rstrip())
        if match is None:
            continue  # blank, comment or list-item lines
        indent = len(match["indent"])
        while blocks and blocks[-1][0] >= indent:
            blocks.pop()
        key = ".".join([*(k for _, k in blocks), match["key"]])
        value, comment = match["value"].strip(), match["comment"] or ""
        is_mapping = not value and not next((text.strip() for text in lines[index + 1 :] if text.strip()), "").startswith("- ")
        if is_mapping:
            blocks.append((indent, match["key"]))
        if key.partition(".")[0] in _HYDRA_KEYS or (is_mapping and not comment):
            continue
        rows.append((key if is_mapping else f"{key}={value or '[...]'}", comment))
    return rows


def _group_comment(group: str) -> str:
    if group == "method":
        return "a method NAME of `srkit list` (installed plugins included); method.KEY=VALUE sets one of its options"
    from .registry import config_dir

    options = sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))
    return f"one of {', '.join(options)}; {group}.KEY=VALUE sets one of its keys"


def _columns(rows: Sequence[tuple[str, str]]) -> list[str]:
    """Two aligned columns; a left cell wider than the column puts its comment on the next line."""
    width = max((len(left) for left, _ in rows if len(left) <= _LEFT_COLUMN_MAX), default=0) + 2
    lines = []
    for left, comment in rows:
        if not comment:
            lines.append(f"  {left}")
        elif len(left) < width:
            lines.append(f"  {left:<{width}}{comment}")
        else:
            lines += [f"  {left}", f"  {'':<{width}}{comment}"]
    return lines


def _command_help(command: str) -> str:
    config_name, description, usage = COMMANDS[command]
    lines = [f"srkit {command}: {description}", f"usage: {usage}"]
    if config_name:
        config = _config_lines(config_name)
        rows = [(f"{group}={option}", _group_comment(group)) for group, option in _config_groups(config).items()]
        lines += ["", "options (key=default, ??? must be given):", *_columns(rows + _option_rows(config)), "",
                  f"`srkit {command} [key=value ...] --cfg job` prints the composed config (every key) instead of running."]
    return "\n".join(lines)


def _usage() -> str:
    rows = [(name, command.description) for name, command in COMMANDS.items()]
    lines = ["usage: srkit <command> [key=value ...] [--cfg job] [--help]", "", "commands:", *_columns(rows), "",
             "`srkit <command> --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(_usage(), file=sys.stderr)
        raise SystemExit(2)
    if args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"srkit: unknown command {command!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if "-h" in rest or "--help" in rest:
        print(_command_help(command))
        return
    try:
        if command == "list":
            _list_methods()
        else:
            _run_hydra(command, rest)
    except SrkitError as err:
        _exit_with_error(command, err)


if __name__ == "__main__":
    main()
