"""Name -> plugin registries for methods, samplers, degradations and backends.

Lookups are lazy: an entry holds the import path of its factory and, for methods, a
:class:`~srkit.types.MethodDescriptor` as plain data, so listing or describing methods imports no
plugin module (and never diffusers or Hydra). Third-party packages add plugins through the
entry-point groups ``srkit.methods``, ``srkit.samplers``, ``srkit.degradations`` and
``srkit.backends``; an entry point names the plugin class (a method class carries its descriptor
as the class attribute ``descriptor``)::

    [project.entry-points."srkit.methods"]
    mymethod = "my_package.module:MyMethod"

Default configurations are the YAML files of ``srkit.conf`` (``conf/<kind>/<name>.yaml`` in the
repository), the same files the Hydra CLI composes, so Python and CLI share one set of defaults.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from . import zoo
from .errors import ConfigError, UnknownNameError, UnsupportedError
from .types import MethodDescriptor

KINDS = ("method", "sampler", "degradation", "backend")


@dataclass
class Entry:
    """A registered plugin: where its factory lives and what it is, without importing it."""

    kind: str
    name: str
    target: str | Callable[..., Any]  # "package.module:attr" or the factory itself
    descriptor: MethodDescriptor | None = None

    def factory(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        return import_target(self.target)

    def default_config(self) -> dict[str, Any]:
        """The defaults (with ``_target_``) of :func:`default_config_source`, its Hydra ``defaults`` list resolved."""
        config, path = default_config_source(self)
        return config if path is None else _with_defaults(config, where=str(path), kind=self.kind)


def _with_defaults(config: dict[str, Any], *, where: str, kind: str) -> dict[str, Any]:
    """Resolve a Hydra ``defaults`` list without Hydra, for the two forms srkit's YAMLs use.

    ``- /sampler@_global_.sampler: ddpm`` (in a method YAML) puts ``conf/sampler/ddpm.yaml`` at the
    top-level key ``sampler`` of the composed CLI config (so ``sampler.start_t=200`` overrides it);
    here, for ``srkit.load``, it becomes the method's ``sampler`` constructor argument.
    ``- ddpm`` (in a file of the same group, before ``_self_``) starts from that config: the file holds only what
    it changes (e.g. ``conf/sampler/ddim.yaml``: ``eta: 0``).
    """
    defaults = config.pop("defaults", None) or []
    for entry in defaults:
        if entry == "_self_":
            continue
        if isinstance(entry, str):
            config = merge_config(REGISTRIES[kind].get(entry).default_config(), config)
            continue
        key, option = next(iter(entry.items())) if isinstance(entry, Mapping) and len(entry) == 1 else ("", "")
        group, _, package = str(key).lstrip("/").partition("@_global_.")
        if not package or group not in REGISTRIES:
            raise ConfigError(f"{where}: unsupported defaults entry {entry!r}; use '- /<kind>@_global_.<key>: <name>'")
        config[package] = REGISTRIES[group].get(str(option)).default_config()
    return config


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``, recursively for nested configs of the same ``_target_``."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping) and value.get("_target_", current.get("_target_")) \
                == current.get("_target_"):  # the same kind of object: update its settings
            value = merge_config(current, value)
        merged[key] = value
    return merged


def import_target(path: str) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` (or Hydra's dotted ``"package.module.attr"``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot import {path!r}: {err}") from err
    return obj


def target_path(obj: Callable[..., Any]) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


class Registry:
    """Plugins of one kind, by name. Built-ins are added as data; entry points on first miss."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"srkit.{kind}s"
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False

    def register(
        self,
        name: str,
        target: str | Callable[..., Any],
        *,
        descriptor: MethodDescriptor | None = None,
        overwrite: bool = False,
    ) -> Entry:
        if name in self._entries and not overwrite:
            raise ConfigError(
                f"{self.kind} {name!r} is already registered (by {self._entries[name].target!r}); "
                "pass overwrite=True to replace it"
            )
        entry = Entry(self.kind, name, target, descriptor)
        self._entries[name] = entry
        return entry

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._entries:
                continue  # built-ins and explicit registrations win over installed plugins
            plugin = ep.load()
            descriptor = getattr(plugin, "descriptor", None)
            if self.kind == "method" and not isinstance(descriptor, MethodDescriptor):
                raise ConfigError(
                    f"entry point {ep.name!r} = {ep.value!r} in group {self.group!r} must name an SRMethod "
                    "subclass with a `descriptor: MethodDescriptor` class attribute"
                )
            self.register(ep.name, plugin, descriptor=descriptor)

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[Entry]:
        return (self._entries[n] for n in self.names())


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
METHODS = REGISTRIES["method"]


@cache
def config_dir() -> Path:
    """The folder of the shipped Hydra configs (``conf/`` in the repo, ``srkit/conf`` when installed)."""
    return Path(str(resources.files("srkit.conf")))


def build(kind: str, name: str, **overrides: Any) -> Any:
    """Instantiate the plugin ``name`` of ``kind`` from its default config plus ``overrides``."""
    entry = REGISTRIES[kind].get(name)
    config = entry.default_config()
    config.update(overrides)
    return instantiate(config, where=f"{kind} {name!r}")


def instantiate(config: Mapping[str, Any], *, where: str, **extra: Any) -> Any:
    """Call ``config['_target_']`` with the other keys, rejecting keys its signature lacks.

    Nested configs with their own ``_target_`` are instantiated first (Hydra's convention), so a
    composed CLI config and a Python-side config build identically without Hydra being imported.
    """
    config = dict(config)
    if "_target_" not in config:
        raise ConfigError(f"the config of {where} has no _target_ key")
    factory = import_target(config.pop("_target_"))
    kwargs = {k: _instantiate_nested(v, where=f"{where}.{k}") for k, v in config.items()}
    kwargs.update(extra)
    check_arguments(factory, kwargs, where=where)
    return factory(**kwargs)


def _instantiate_nested(value: Any, *, where: str) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            return instantiate(value, where=where)
        return {k: _instantiate_nested(v, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_instantiate_nested(v, where=where) for v in value]
    return value


def check_arguments(factory: Callable[..., Any], kwargs: Mapping[str, Any], *, where: str) -> None:
    import difflib

    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} has no option {key!r}.{hint} Options: {', '.join(accepted)}")


def load(
    name: str | os.PathLike[str],
    weights: str | Path | None = None,
    *,
    device: str | Any | None = None,
    dtype: str | Any | None = None,
    **overrides: Any,
) -> Any:
    """Build the method ``name`` ready for inference (eval mode, on ``device`` in ``dtype``).

    ``weights``: ``None`` (the method's default files, found locally), a file or folder path, a
    hub id (read from the local cache when offline), or ``"synthetic"`` (seeded random weights,
    for tests and timing). ``overrides`` are constructor arguments, the keys of ``conf/method/<name>.yaml``.
    ``name`` may also be a ``srkit train`` run folder (``srkit.load("outputs/train/resshift")``): the method it holds.
    """
    if name not in METHODS:
        if weights is None and (Path(name) / PRETRAINED_CONFIG).is_file():
            return load_pretrained(name, device=device, dtype=dtype, **overrides)
        if not isinstance(name, str):
            raise ConfigError(f"srkit.load({str(name)!r}): not a srkit train run folder (no {PRETRAINED_CONFIG} in it) "
                              f"and not a method name; pass a run folder, or srkit.load('<method>', weights=<path>) "
                              f"for a method's weights")
    if weights is not None and (Path(weights) / PRETRAINED_CONFIG).is_file():
        return load_pretrained(weights, name=name, device=device, dtype=dtype, **overrides)
    entry = METHODS.get(name)
    config = merge_config(entry.default_config(), overrides)
    return build_method(config, weights=weights, device=device, dtype=dtype, name=name)


def backend_config(name: str, overrides: Mapping[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """The constructor arguments of a backend's shipped config (``conf/backend/<name>.yaml``, no ``_target_``),
    updated by ``overrides`` (merged into nested configs such as ``unet``) and then by ``values``. Methods read
    their backends' configs here and hand them over: a backend never looks itself up."""
    config = REGISTRIES["backend"].get(name).default_config()
    config.pop("_target_", None)
    return merge_config(config, {**(overrides or {}), **values})


def build_method(
    config: Mapping[str, Any],
    *,
    weights: str | Path | None = None,
    device: str | Any | None = None,
    dtype: str | Any | None = None,
    name: str = "method",
    sampler: Mapping[str, Any] | None = None,
) -> Any:
    """Instantiate a method config (Python or Hydra-composed), load weights, move and set eval.

    ``sampler``: the composed CLI config's top-level ``sampler`` (see :func:`_with_defaults`), given
    to methods whose constructor takes a ``sampler``.
    """
    import torch

    if weights is not None and (Path(weights) / PRETRAINED_CONFIG).is_file():  # a training run's folder
        model = load_pretrained(weights, device=device, dtype=dtype)
        if target_path(type(model)) != str(config.get("_target_", "")).replace(":", "."):
            raise ConfigError(f"{weights} holds trained weights of {model.descriptor.name!r}, not of {config.get('_target_')!r}; "
                              f"pick that method (method={model.descriptor.name})")
        return model
    factory = import_target(str(config.get("_target_", "")))
    extra: dict[str, Any] = {}
    if sampler:
        if "sampler" not in inspect.signature(factory).parameters:
            raise ConfigError(f"{name} has no sampler settings; drop the sampler.* overrides")
        config = merge_config(config, {"sampler": sampler})
    zoo_parts = None
    if zoo.is_zoo(weights):  # srkit-zoo: built on seeded random weights, then the zoo's parts loaded over them
        method_name = factory.descriptor.name
        zoo_parts = zoo.parts(str(weights), method_name)
        defaults = METHODS.get(method_name).default_config()
        # The zoo's network configs fill the keys the caller left at the method's defaults.
        config = {**config, **{key: value for key, value in zoo.part_config(zoo_parts).items()
                               if config.get(key) == defaults.get(key)}}
    if "weights" in inspect.signature(factory).parameters:
        extra["weights"] = None if weights is None else "synthetic" if zoo_parts is not None else str(weights)
    elif weights not in (None, "synthetic"):
        raise ConfigError(f"{name} has no weights to load; drop weights={weights!r}")
    if zoo_parts is not None:
        zoo.check_pinned(zoo_parts, config)
    model = instantiate(config, where=f"method {name!r}", **extra)
    if zoo_parts is not None:
        zoo.load_parts(model, zoo_parts)
        model.prior_loaded()
        model.zoo_parts = tuple(zoo_parts)
    model.config, model.base_weights = dict(config), None if weights is None else str(weights)  # for save_pretrained
    descriptor: MethodDescriptor = model.descriptor
    torch_dtype = _parse_dtype(dtype) if dtype is not None else torch.float32
    if not descriptor.supports_dtype(torch_dtype):
        raise UnsupportedError(
            f"{descriptor.name} does not support dtype {torch_dtype}; supported: {', '.join(descriptor.dtypes)}"
        )
    target_device = _parse_device(device)
    return model.to(device=target_device, dtype=torch_dtype).eval()


def _parse_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}
    name = aliases.get(str(dtype), str(dtype)).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return value


def _parse_device(device: Any) -> Any:
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    return resolved


def list_methods() -> list[str]:
    """Names accepted by :func:`load`, built-in and installed plugins."""
    return METHODS.names()


def describe(name: str) -> MethodDescriptor:
    """The descriptor of a method (paper, scale, steps, dtypes, tiling, weight files), no import."""
    entry = METHODS.get(name)
    if entry.descriptor is None:
        raise ConfigError(f"method {name!r} has no descriptor")
    return entry.descriptor


def default_config_file(entry: Entry) -> Path | None:
    """The YAML file of ``entry``'s defaults: ``conf/<kind>/<name>.yaml`` for a built-in, else
    ``<name>.yaml`` beside the module of its factory (an installed plugin ships it in its own package).
    """
    shipped = config_dir() / entry.kind / f"{entry.name}.yaml"
    if shipped.is_file():
        return shipped
    module_file = getattr(inspect.getmodule(entry.factory()), "__file__", None)
    if module_file is None:  # e.g. a class defined by `python -c`
        return None
    beside = Path(module_file).parent / f"{entry.name}.yaml"
    return beside if beside.is_file() else None


def default_config_source(entry: Entry) -> tuple[dict[str, Any], Path | None]:
    """``entry``'s defaults as written, a Hydra ``defaults`` list unresolved, and the file they come from.

    From :func:`default_config_file` (``_target_`` added when a plugin's file leaves it to the entry
    point), or, without a file, the factory's signature defaults (path ``None``). The CLI stores this
    for Hydra to compose; :meth:`Entry.default_config` resolves the ``defaults`` list itself.
    """
    path = default_config_file(entry)
    if path is None:
        factory = entry.factory()
        defaults = {
            p.name: p.default
            for p in inspect.signature(factory).parameters.values()
            if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "weights"
        }
        return {"_target_": target_path(factory), **defaults}, None
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must be a mapping of {entry.kind} {entry.name!r}'s constructor arguments")
    if "_target_" not in config:
        config = {"_target_": target_path(entry.factory()), **config}
    return config, path


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``names[attr]`` (a submodule) on first access, so a
    method's package can hold its descriptor (read when listing methods) without importing its model code."""

    def __getattr__(attr: str) -> Any:
        if attr not in names:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        return getattr(importlib.import_module(f"{package}.{names[attr]}"), attr)

    return __getattr__


PRETRAINED_CONFIG = "srkit_method.yaml"


def save_pretrained(model: Any, folder: str | Path, *, modules: Mapping[str, Any], ema: Mapping[str, Any]) -> Path:
    """Write ``model``'s build config, its base weights and one safetensors file per module of ``modules`` (named by its
    path in the model, e.g. ``unet.safetensors``; ``ema`` copies as ``unet.ema.safetensors``) into ``folder``.
    Every file is written atomically."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        raise ConfigError(f"{type(model).__name__} was not built by srkit.load / build_method, so its config is unknown; "
                          "build it with srkit.load(name, ...) to save it")
    paths = {id(module): path for path, module in model.named_modules()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"method": model.descriptor.name, "weights": model.base_weights, "config": dict(config),
                              "modules": {}, "ema": {}}
    for name, module in modules.items():
        path = paths.get(id(module))
        if path is None:
            raise ConfigError(f"trained module {name!r} is not part of {model.descriptor.name}; it cannot be reloaded by name")
        for kind, source, suffix in (("modules", module, ""), ("ema", ema.get(name), ".ema")):
            if source is None:
                continue
            target = folder / f"{path}{suffix}.safetensors"
            tmp = target.with_name(f".{target.name}.tmp")
            save_file({k: v.detach().contiguous().cpu() for k, v in source.state_dict().items()}, str(tmp))
            os.replace(tmp, target)
            record[kind][path] = target.name
    try:
        text = OmegaConf.to_yaml(OmegaConf.create(record))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"the config of {model.descriptor.name} holds objects that cannot be written as YAML ({err}); "
                          "build the method from plain values to save it") from None
    tmp = folder / f".{PRETRAINED_CONFIG}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / PRETRAINED_CONFIG)
    return folder


def load_pretrained(folder: str | Path, *, name: str | None = None, ema: bool = True, device: Any = None, dtype: Any = None,
                    **overrides: Any) -> Any:
    """The method :func:`save_pretrained` wrote into ``folder``: rebuilt from its config on its base weights (for
    inference: ``for_training`` off), then every trained module loaded strictly (its EMA copy when there is one and
    ``ema``). ``name`` must match the saved method; ``overrides`` update the config."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from .weights import load_state_dict_strict

    folder = Path(folder)
    record = OmegaConf.to_container(OmegaConf.load(folder / PRETRAINED_CONFIG), resolve=True)
    assert isinstance(record, dict)
    if name is not None and record["method"] != name:
        raise ConfigError(f"{folder} holds trained weights of {record['method']!r}, not {name!r}; "
                          f"load it with srkit.load({record['method']!r}, weights={str(folder)!r})")
    config = merge_config(record["config"], overrides)
    if "for_training" in config:
        config["for_training"] = bool(overrides.get("for_training", False))
    model = build_method(config, weights=record["weights"], device="cpu", dtype=None, name=record["method"])
    files = {**record["modules"], **(record["ema"] if ema else {})}
    for path, filename in files.items():
        load_state_dict_strict(model.get_submodule(path), load_file(str(folder / filename)), source=str(folder / filename))
    torch_dtype = _parse_dtype(dtype) if dtype is not None else torch.float32
    return model.to(device=_parse_device(device), dtype=torch_dtype).eval()
