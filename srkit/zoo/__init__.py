"""srkit-zoo: small models of the official architectures, trained here on srkit-mini-train, shipped in the package.

No official diffusion checkpoint can be downloaded here, so the zoo lets the diffusion methods run on weights that
mean something: ``srkit.load("resshift", weights="zoo")``. They are *small models trained on a few photos*
(``conf/train/zoo-*.yaml``; crops of the eight srkit-mini-train photographs, minutes of CPU), for seeing a method
work, for tests and for the mini benchmarks, not a substitute for the official weights.

A zoo **part** is one trained file: a module's weights (safetensors, loaded strictly into ``model.<module>``, a
dotted path such as ``sd.unet``) or a data file a constructor argument names (PG-ResShift's scale file). Each part
records the recipe that trained it, its sha256 (checked at every load), the config values that rebuild its network
(e.g. ``unet_config``, or its part of a nested ``backend_config``: SD's VAE and UNet are separate parts) and the
constructor values it only works with (``pinned``, e.g. a denoiser's ``steps``, the SD UNet's prompt: a load asking
for others is refused, not run on a schedule or a condition the network never saw); the parts are listed in
``zoo.yaml`` beside this file, which :func:`publish` writes (the SD parts stored in float16, for the size budget).
A **method** of the zoo is the parts it is built from (:data:`METHOD_PARTS`); a **prior** the frozen parts that
methods are trained on (:data:`PRIORS`: ``"sd"``, the SD VAE and UNet that InvSR, DM-SR and CCSR build on).

``weights`` specs: ``"zoo"`` (the parts of the method being loaded), ``"zoo:<method or prior>"`` (another entry's
parts, e.g. LPNSR's recipe trains its predictor on ``zoo:resshift``), ``"zoo:<part>"`` (one part, e.g. ResShift's
recipe trains its denoiser on ``zoo:vq-f4-mini``), or several joined by ``+`` (DM-SR's encoder recipe trains on
``zoo:sd+dmsr-estimator-mini``: the prior and the estimator trained before it). Whatever the zoo does not hold stays
at its seeded random init (srkit-synthetic-v1), which is what a recipe trains; a method whose training starts from a
copy of its prior takes the copy after the parts are loaded (:meth:`srkit.types.SRMethod.prior_loaded`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SrkitError, WeightsNotFoundError

__all__ = ["METHOD_PARTS", "PRIORS", "ZOO", "Part", "check_pinned", "is_zoo", "load_parts", "mini_train_scaling_factor",
           "part_config", "parts", "publish", "vae_scaling_factor", "zoo_dir"]

ZOO = "zoo"
MANIFEST = "zoo.yaml"
# The parts of each method of the zoo, in load order.
METHOD_PARTS: dict[str, tuple[str, ...]] = {
    "resshift": ("vq-f4-mini", "resshift-mini"),
    "pg-resshift": ("vq-f4-mini", "resshift-mini", "pg-resshift-mini-scales", "pg-resshift-mini-reference-scales"),
    "lpnsr": ("vq-f4-mini", "resshift-mini", "lpnsr-mini"),
    "invsr": ("sd-vae-mini", "sd-unet-mini", "invsr-mini"),
    "dmsr": ("sd-vae-mini", "sd-unet-mini", "dmsr-estimator-mini", "dmsr-encoder-mini"),
    "ccsr": ("sd-vae-mini", "sd-unet-mini", "ccsr-controlnet-mini", "ccsr-decoder-mini"),
}
# The frozen priors the zoo's methods are trained on, by name (``weights="zoo:sd"``): parts, not a method.
PRIORS: dict[str, tuple[str, ...]] = {"sd": ("sd-vae-mini", "sd-unet-mini")}
# The constructor values (dotted keys into the method's config) that define what each trained module computes:
# its network's config and, for SD's UNet, the latent space and the prompt it was trained in.
MODULE_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "autoencoder": ("autoencoder_config",), "unet": ("unet_config",), "noise_predictor": ("predictor_config",),
    "predictor": ("predictor_config",),
    "sd.vae.vae": ("backend_config.vae",),
    "sd.unet": ("backend_config.unet", "backend_config.vae.scaling_factor", "prompt"),
    # DM-SR's T (with what its t̂ measures: the target it regressed) and E_θ (a VAE encoder)
    "estimator": ("estimator_channels", "timestep_target", "timestep_scale"), "encoder": ("backend_config.vae",),
    # CCSR's stage 1 (its guidance scale: CFG needs a prompt the prior contrasts) and stage 2
    "controlnet": ("backend_config.controlnet", "guidance_scale"), "sd.vae.vae.decoder": ("backend_config.vae",),
}


@dataclass(frozen=True)
class Part:
    """One trained file of the zoo (see the module docstring)."""

    name: str
    file: str
    sha256: str
    recipe: str  # conf/train/<recipe>.yaml, or the command that wrote a data part
    module: str | None = None  # the model's module the file is loaded into; None: a data file named by `config`
    config: Mapping[str, Any] | None = None  # constructor values that rebuild it (a data part: {key: its file name})
    pinned: Mapping[str, Any] | None = None  # constructor values it was trained with and needs (unset is fine)

    @property
    def path(self) -> Path:
        return zoo_dir() / self.file


def zoo_dir() -> Path:
    return Path(__file__).parent


def is_zoo(spec: Any) -> bool:
    """Whether a ``weights`` spec names the zoo: the strings ``"zoo"`` / ``"zoo:<name>"`` (a path named zoo is a path)."""
    return isinstance(spec, str) and (spec == ZOO or spec.startswith(f"{ZOO}:"))


def _manifest() -> dict[str, Part]:
    from omegaconf import OmegaConf

    path = zoo_dir() / MANIFEST
    if not path.is_file():
        return {}
    record = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(record, dict)
    return {name: Part(name=name, **fields) for name, fields in (record.get("parts") or {}).items()}


def parts(spec: str, method: str) -> list[Part]:
    """The parts the weights ``spec`` (``"zoo"``, ``"zoo:<method>"``, ``"zoo:<part>"``, or several joined by ``+``, loaded
    in that order: ``"zoo:sd+dmsr-estimator-mini"``) names for ``method``."""
    known = _manifest()
    names: list[str] = []
    for target in [method] if str(spec) == ZOO else str(spec).split(":", 1)[1].split("+"):
        entry = METHOD_PARTS.get(target) or PRIORS.get(target) or ((target,) if target in known else None)
        if entry is None:
            choices = sorted({*METHOD_PARTS, *PRIORS, *known})
            raise ConfigError(f"weights={spec!r}: the zoo has no {target!r}; it has {', '.join(choices)} "
                              f"(weights='zoo' loads the parts of {method!r} when it has them; '+' joins several)")
        names += [name for name in entry if name not in names]
    missing = [name for name in names if name not in known]
    if missing:
        raise WeightsNotFoundError(
            f"weights={spec!r}: the zoo has not got {', '.join(missing)} yet (looked in {zoo_dir() / MANIFEST}); train "
            f"{'it' if len(missing) == 1 else 'them'} with `srkit train train=<recipe>` (conf/train/zoo-*.yaml) and add the "
            "run folder with `python -m srkit.zoo add <part> <run folder>`"
        )
    return [known[name] for name in names]


def part_config(found: list[Part]) -> dict[str, Any]:
    """The constructor values of ``found``, nested configs merged (SD's VAE and UNet parts each set part of
    ``backend_config``); a data part's file name becomes its path in the package."""
    config: dict[str, Any] = {}
    for part in found:
        for key, value in (part.config or {}).items():
            config[key] = str(part.path) if part.module is None else _merged(config.get(key), value)
    return config


def _merged(base: Any, update: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        return {**base, **{key: _merged(base.get(key), value) for key, value in update.items()}}
    return update


def _nested(config: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """``{"a": {"b": config["a"]["b"]}}`` for ``"a.b"``; empty where ``config`` has no such value."""
    head, _, rest = dotted.partition(".")
    value = config.get(head) if isinstance(config, Mapping) else None
    if value is None:
        return {}
    if not rest:
        return {head: value}
    inner = _nested(value, rest)
    return {head: inner} if inner else {}


def check_pinned(found: Sequence[Part], config: Mapping[str, Any]) -> None:
    """Refuse a method ``config`` (or the knobs of an ``sr()`` call) that sets a value other than one a part of
    ``found`` was trained with (e.g. ``steps=15`` on a 4-step denoiser, ``prompt="a cat"`` on the SD prior trained on
    the empty prompt); a key the method does not take is not its concern."""
    for part in found:
        for key, value in (part.pinned or {}).items():
            if config.get(key) not in (None, value):
                raise ConfigError(f"zoo part {part.name} was trained with {key}={value!r}, got {key}={config[key]!r}; "
                                  f"leave {key} unset (or {key}={value!r}) with the zoo's weights")


def _sha256(path: Path) -> str:
    from ..weights import file_sha256  # srkit.weights imports torch: not at `import srkit`

    return file_sha256(path)


def _checked(part: Part) -> Path:
    path = part.path
    if not path.is_file():
        raise WeightsNotFoundError(f"zoo part {part.name}: {path} is missing; reinstall srkit (the zoo ships inside the package)")
    digest = _sha256(path)
    if digest != part.sha256:
        raise ConfigError(f"zoo part {part.name}: {path} has sha256 {digest}, not the pinned {part.sha256}; "
                          "the file was changed or damaged: reinstall srkit")
    return path


def load_parts(model: Any, found: list[Part]) -> None:
    """Load every module part of ``found`` strictly into ``model`` and check the data parts' hashes."""
    from safetensors.torch import load_file

    from ..weights import load_state_dict_strict

    for part in found:
        path = _checked(part)
        if part.module is None:
            continue
        try:
            module = model.get_submodule(part.module)
        except AttributeError:
            raise ConfigError(f"zoo part {part.name} belongs in a model with a {part.module!r} module; "
                              f"{type(model).__name__} has none") from None
        load_state_dict_strict(module, load_file(str(path)), source=f"zoo part {part.name} ({path.name})")


def publish(part: str, source: str | os.PathLike[str], *, recipe: str, module: str | None = None, key: str | None = None,
            ema: bool = True, pinned: Mapping[str, Any] | None = None, dtype: str | None = None) -> Part:
    """Add a training run's module (its EMA copy when there is one) to the zoo as ``part``: the file, its sha256, its
    network config and recipe into ``zoo.yaml``; the run's ``log.jsonl`` and ``loss.png`` into ``logs/<part>/``.
    ``ema=False`` takes the live weights instead (when the EMA still averages in much of a short run's start).
    A file (e.g. a scale file from ``srkit calibrate``) is added as a data part, ``key`` naming the constructor
    argument that takes it. ``recipe``: ``conf/train/<recipe>.yaml`` or the command that made the file; ``pinned``:
    the constructor values the part needs (see :class:`Part`). ``dtype="float16"`` stores a module's weights in half
    precision (half the bytes; they load into the float32 model as those values). Every file is written atomically,
    the manifest last."""
    from omegaconf import OmegaConf

    from ..io import copy_file_atomic, write_text_atomic
    from ..registry import PRETRAINED_CONFIG

    source = Path(source)
    folder = zoo_dir()
    if source.is_file():
        if key is None:
            raise ConfigError("a data part needs the constructor argument that takes it: --key <name>")
        target = folder / f"{part}{source.suffix}"
        copy_file_atomic(source, target)
        entry = Part(part, target.name, _sha256(target), recipe, None, {key: target.name}, dict(pinned or {}) or None)
    elif (source / PRETRAINED_CONFIG).is_file():
        record = OmegaConf.to_container(OmegaConf.load(source / PRETRAINED_CONFIG), resolve=True)
        assert isinstance(record, dict)
        modules = {**record["modules"], **(record["ema"] if ema else {})}  # the EMA copy replaces the live weights
        if module is None:
            if len(modules) != 1:
                raise ConfigError(f"{source} holds {sorted(modules)}: pick one with --module")
            module = next(iter(modules))
        if module not in modules or module not in MODULE_CONFIG_KEYS:
            raise ConfigError(f"{source} holds no zoo module {module!r}; it holds {', '.join(sorted(modules))} and the zoo "
                              f"takes {', '.join(MODULE_CONFIG_KEYS)}")
        target = folder / f"{part}.safetensors"
        _store(source / modules[module], target, dtype)
        config: dict[str, Any] = {}
        for dotted in MODULE_CONFIG_KEYS[module]:
            config = _merged(config, _nested(record["config"], dotted))
        entry = Part(part, target.name, _sha256(target), recipe, module, config, dict(pinned or {}) or None)
        logs = folder / "logs" / part
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("log.jsonl", "loss.png", "validation.png"):
            if (source / name).is_file():
                copy_file_atomic(source / name, logs / name)
        if (source / "config.yaml").is_file():  # the run's composed config, interpolations resolved
            run_config = OmegaConf.to_container(OmegaConf.load(source / "config.yaml"), resolve=True)
            write_text_atomic(logs / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(run_config)))
    else:
        raise ConfigError(f"{source} is neither a file nor a srkit train run folder (no {PRETRAINED_CONFIG} in it); pass the "
                          "run's output folder or a data file such as a scale file")
    manifest_path = folder / MANIFEST
    current = OmegaConf.to_container(OmegaConf.load(manifest_path)) if manifest_path.is_file() else {}
    assert isinstance(current, dict)
    current.setdefault("parts", {})[part] = {k: v for k, v in entry.__dict__.items() if k != "name" and v is not None}
    write_text_atomic(manifest_path, "# srkit-zoo parts, written by `python -m srkit.zoo add` (srkit/zoo/__init__.py); "
                      "sha256 pinned\n" + OmegaConf.to_yaml(OmegaConf.create(current)))
    return entry


def vae_scaling_factor(source: str | os.PathLike[str], *, ema: bool = True) -> float:
    """The latent scaling factor (:func:`mini_train_scaling_factor`) of the SD VAE trained in the run folder
    ``source`` (its EMA copy, or the live weights with ``ema=False``: the copy that is published): the value a recipe
    on that VAE sets as ``backend_config.vae.scaling_factor`` (conf/train/zoo-sd-base.yaml)."""
    from ..registry import PRETRAINED_CONFIG, load_pretrained

    if not (Path(source) / PRETRAINED_CONFIG).is_file():
        raise ConfigError(f"{source} is not a srkit train run folder (no {PRETRAINED_CONFIG} in it); pass the VAE run's folder")
    model = load_pretrained(source, ema=ema)
    if not hasattr(model, "sd"):
        raise ConfigError(f"{source} holds a {model.descriptor.name} model, which has no SD VAE; pass an SD method's run")
    return mini_train_scaling_factor(model.sd.vae.vae)


def mini_train_scaling_factor(vae: Any) -> float:
    """:func:`srkit.backends.sd.latent_scaling_factor` of an ``AutoencoderKL`` on the srkit-mini-train photos, the
    zoo's training set."""
    from ..backends.sd import latent_scaling_factor
    from ..data.mini import mini_train_folder
    from ..io import list_images, read_image

    return latent_scaling_factor(vae, [read_image(path) * 2 - 1 for path in list_images(mini_train_folder())])


def _store(source: Path, target: Path, dtype: str | None) -> None:
    """Copy a safetensors file, its floating-point tensors cast to ``dtype`` when one is given."""
    from ..io import atomic_file, copy_file_atomic

    if dtype is None:
        copy_file_atomic(source, target)
        return
    import torch
    from safetensors.torch import load_file, save

    to = getattr(torch, dtype, None)
    if not isinstance(to, torch.dtype) or not to.is_floating_point:
        raise ConfigError(f"--dtype {dtype!r} is not a floating-point torch dtype; use float16 or bfloat16")
    state = {key: value.to(to) if value.is_floating_point() else value for key, value in load_file(str(source)).items()}
    if not all(value.isfinite().all() for value in state.values() if value.is_floating_point()):
        raise ConfigError(f"{source} has values outside the range of {dtype}; publish it without --dtype")
    with atomic_file(target) as file:
        file.write(save(state))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m srkit.zoo", description="add a trained part to srkit's zoo")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a training run's module (or a data file) as a part")
    add.add_argument("part")
    add.add_argument("source", help="a srkit train run folder, or a data file (e.g. a scale file)")
    add.add_argument("--module", help="the run's module to add (default: its only one)")
    add.add_argument("--key", help="a data file's constructor argument (e.g. scales)")
    add.add_argument("--live", action="store_true", help="the live weights, not the run's EMA copy")
    add.add_argument("--dtype", help="store a module's weights in this dtype (float16: half the bytes)")
    add.add_argument("--recipe", required=True, help="how it was made: conf/train/<recipe>.yaml, or the command")
    add.add_argument("--pin", action="append", default=[], metavar="KEY=VALUE",
                     help="a constructor value the part needs, e.g. steps=4 for a 4-step denoiser (repeatable)")
    scale = commands.add_parser("scaling-factor", help="a trained SD VAE's latent scaling factor on srkit-mini-train")
    scale.add_argument("source", help="a srkit train run folder of an SD method's VAE (e.g. train=zoo-sd-vae)")
    scale.add_argument("--live", action="store_true", help="the live weights, not the run's EMA copy")
    args = parser.parse_args(argv)
    if args.command == "scaling-factor":
        try:
            print(f"{vae_scaling_factor(args.source, ema=not args.live):.6g}")
        except SrkitError as err:
            raise SystemExit(f"python -m srkit.zoo: error: {err}") from None
        return
    try:
        pinned = dict(_pin(text) for text in args.pin)
        entry = publish(args.part, args.source, recipe=args.recipe, module=args.module, key=args.key,
                        ema=not args.live, pinned=pinned, dtype=args.dtype)
    except SrkitError as err:
        raise SystemExit(f"python -m srkit.zoo: error: {err}") from None
    print(json.dumps({k: v for k, v in entry.__dict__.items() if k != "config"}))


def _pin(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--pin``, the value read as YAML (``steps=4`` pins the integer 4)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--pin takes KEY=VALUE (e.g. steps=4), got {text!r}")
    return key, yaml.safe_load(value)
