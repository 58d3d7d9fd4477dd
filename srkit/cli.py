"""The ``srkit`` command: ``srkit <command> [key=value ...]``.

Each command is a Hydra application over the configs shipped in ``srkit.conf``; Hydra is
imported and initialised only inside the command, never by ``import srkit``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import SrkitError

COMMANDS: dict[str, tuple[str, str]] = {
    "sr": ("sr", "super-resolve an image file or a folder: srkit sr input=PATH method=NAME [key=value ...]"),
    "train": ("train", "train a method: srkit train method=NAME data._target_=pkg.Dataset [train.KEY=VALUE ...]"),
    "bench": ("bench", "measure the papers' tables with what is available: srkit bench [+bench=mini] [methods=[...]]"),
    "convert": ("convert", "official checkpoint -> srkit safetensors: srkit convert source=FILE [output=FILE] [component=NAME]"),
    "demo": ("demo", "super-resolve the bundled photograph with real pretrained weights and write a comparison"),
    "calibrate": ("calibrate", "fit pg-resshift's guidance scales on LR-HR pairs: srkit calibrate [data._target_=...] "
                  "[mode=reference|non-reference] [per_step=false] [output=FILE]"),
    "stability": ("stability", "G-STD/L-STD of a method's variants over N seeds (CCSR Tables I-III): "
                  "srkit stability [load.weights=...] [runs=N] [dataset=DIR]"),
    "list": ("", "list the available methods and what they support"),
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
                tile_batch=cfg.tile_batch, progress=cfg.progress,
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
    from .methods.pg_resshift import run_calibration

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

    from .registry import config_dir

    config_name, _ = COMMANDS[command]

    def task(cfg: Any) -> None:
        # Hydra reports exceptions with a stack trace; srkit's own errors are user errors and get
        # their message only (SystemExit passes through Hydra untouched).
        try:
            TASKS[command](cfg)
        except SrkitError as err:
            print(f"srkit {command}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    sys.argv = [f"srkit {command}", *argv]
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()


def _usage() -> str:
    lines = ["usage: srkit <command> [key=value ...] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<6} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"srkit: unknown command {command!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if command == "list":
        _list_methods()
    else:
        _run_hydra(command, rest)


if __name__ == "__main__":
    main()
