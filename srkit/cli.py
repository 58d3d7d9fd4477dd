"""The ``srkit`` command: ``srkit <command> [key=value ...]``.

Each command is a Hydra application over the configs shipped in ``srkit.conf``; Hydra is
imported and initialised only inside the command, never by ``import srkit``. Installed plugin
methods compose like the shipped ones (:func:`_store_plugin_methods`), ``srkit <command> --help``
lists the options of the command's YAML with their comments, and a bad command line is one
``srkit <command>: error: ...`` line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from .errors import ConfigError, SrkitError


class Command(NamedTuple):
    config: str  # its top-level YAML in srkit.conf, e.g. "sr" for conf/sr.yaml ("": no Hydra config)
    description: str
    usage: str


COMMANDS: dict[str, Command] = {
    "sr": Command("sr", "super-resolve an image file or a folder", "srkit sr input=PATH [method=NAME] [key=value ...]"),
    "train": Command("train", "train a method that has losses()",
                     "srkit train method=NAME data._target_=pkg.Dataset [train.KEY=VALUE ...]"),
    "bench": Command("bench", "measure the papers' tables with what is available",
                     "srkit bench [+bench=mini] [methods=[NAME,...]] [key=value ...]"),
    "convert": Command("convert", "official checkpoint -> srkit safetensors",
                       "srkit convert source=FILE [output=FILE] [component=NAME]"),
    "demo": Command("demo", "super-resolve the bundled photograph with real pretrained weights and write a comparison",
                    "srkit demo [output=DIR] [key=value ...]"),
    "calibrate": Command("calibrate", "fit pg-resshift's guidance scales on LR-HR pairs",
                         "srkit calibrate [data._target_=...] [mode=reference|non-reference] [per_step=false] [output=FILE]"),
    "stability": Command("stability", "G-STD/L-STD of a method's variants over N seeds (CCSR Tables I-III)",
                         "srkit stability [load.weights=...] [runs=N] [dataset=DIR]"),
    "list": Command("", "list the available methods and what they support", "srkit list"),
}


def run_sr(cfg: Any) -> dict[str, list[Path]]:
    """Super-resolve ``cfg.input`` (file or folder) into ``cfg.output``; returns written/skipped/failed."""
    from omegaconf import OmegaConf

    from .io import list_images, read_image, write_image
    from .registry import build_method

    source = Path(cfg.input)
    if source.is_dir():
        inputs = list_images(source, recursive=cfg.recursive)
    elif source.exists():
        inputs = [source]
    else:
        raise SrkitError(f"input {str(source)!r} does not exist; pass input=<image file or folder>")
    output = Path(cfg.output)
    method_config = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(method_config, dict)
    model = build_method(method_config, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype,
                         sampler=OmegaConf.to_container(cfg.sampler, resolve=True) if "sampler" in cfg else None)

    report: dict[str, list[Path]] = {"written": [], "skipped": [], "failed": []}
    for path in inputs:
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        target = (output / relative).with_suffix(".png")
        if target.exists() and not cfg.overwrite:
            report["skipped"].append(target)
            continue
        try:
            lr = read_image(path).unsqueeze(0)
            hr = model.sr(
                lr, steps=cfg.steps, seed=cfg.seed, tile=cfg.tile, tile_overlap=cfg.tile_overlap,
                tile_batch=cfg.tile_batch, decoder_tile=cfg.decoder_tile, color_fix=cfg.color_fix, progress=cfg.progress,
            )
            write_image(target, hr[0], bits=cfg.bits)
            report["written"].append(target)
        except SrkitError as err:
            if len(inputs) == 1:
                raise
            print(f"srkit: skipping {path}: {err}", file=sys.stderr)
            report["failed"].append(path)
    return report


def _sr_task(cfg: Any) -> None:
    report = run_sr(cfg)
    print(
        f"srkit sr: wrote {len(report['written'])}, kept {len(report['skipped'])} existing "
        f"(overwrite=true to redo), failed {len(report['failed'])} -> {Path(cfg.output).resolve()}"
    )
    if report["failed"]:
        raise SystemExit(1)


def _demo_task(cfg: Any) -> None:
    from .demo import run_demo

    paths = run_demo(output=Path(cfg.output), methods=list(cfg.methods), device=cfg.device, tile=cfg.tile)
    print("srkit demo: results written:")
    for name, path in paths.items():
        print(f"  {name:<12} {path.resolve()}")


def _train_task(cfg: Any) -> None:
    from .train import run_training

    history = run_training(cfg)
    print(f"srkit train: ran {len(history)} steps; checkpoints in {Path(cfg.train.output_dir).resolve()}")


def _bench_task(cfg: Any) -> None:
    from .metrics.bench import run_bench

    run_bench(cfg)


def _calibrate_task(cfg: Any) -> None:
    from .methods.pg_resshift.calibration import run_calibration

    run_calibration(cfg)


def _stability_task(cfg: Any) -> None:
    from .metrics.stability_study import run_stability

    run_stability(cfg)


def _convert_task(cfg: Any) -> None:
    from .weights.convert import convert_task

    convert_task(cfg)


def _list_methods() -> None:
    from . import describe, list_methods

    for name in list_methods():
        d = describe(name)
        steps = "-" if d.steps is None else ",".join(map(str, d.steps))
        print(f"{name:<14} x{d.scale}  steps {steps:<10} {', '.join(d.dtypes):<36} {d.title}")


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
    sys.argv = [f"srkit {command}", *argv]
    try:
        hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()
    except HydraException as err:
        raise _command_line_error(err) from None


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
    import difflib

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
        import difflib

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
