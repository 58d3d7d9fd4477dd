"""Weights: the one resolver for every component, official checkpoint loading, the synthetic rule.

``resolve(spec, filename=..., hub_id=...)`` turns what a user passed as ``weights=`` into a local
path: a file, a folder (of official files, or a diffusers folder), a Hugging Face hub id read from
the local cache (only from the cache when offline; ``HF_HUB_OFFLINE`` is honoured), ``None`` (the
component's default file, searched in ``SRKIT_HOME/weights``, ``./weights`` and the hub cache), or
``"synthetic"``. ``load_state_dict`` reads what ``resolve`` found; official ``.pth``/``.ckpt`` files
are converted once into a safetensors cache under ``SRKIT_HOME/converted`` (rewritten when the
source changes) so later loads are memory-mapped and never unpickle.

``load_checkpoint`` reads any official file format (``.pth``/``.pt``/``.ckpt`` safely with
``weights_only=True``, or ``.safetensors``), unwraps the usual containers (``params_ema``,
``params``, ``state_dict``, ``model``, ...) and strips ``module.`` / ``_orig_mod.`` prefixes left by
DataParallel/DDP and ``torch.compile``. ``synthetic_state_dict`` makes the deterministic
``srkit-synthetic-v1`` weights that the reference goldens were computed with.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, WeightsNotFoundError
from ..types import MethodDescriptor

__all__ = [
    "SYNTHETIC",
    "cache_file",
    "cached_safetensors",
    "companion",
    "file_sha256",
    "hub_offline",
    "load_checkpoint",
    "load_state_dict",
    "load_state_dict_strict",
    "load_weights",
    "resolve",
    "resolve_weights",
    "resolve_weights_together",
    "search_dirs",
    "srkit_home",
    "summarise_load_error",
    "synthetic_state_dict",
    "synthetic_tensor",
    "unwrap_state_dict",
]

# Containers official trainers wrap state dicts in, in order of preference (EMA weights first).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "module", "generator")
PREFIXES = ("module.", "_orig_mod.")


def srkit_home() -> Path:
    """The root of srkit's cache: ``$SRKIT_HOME`` if set, else ``~/.cache/srkit``."""
    value = os.environ.get("SRKIT_HOME")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "srkit"


def cache_file(*parts: str) -> Path:
    """The path ``srkit_home()/parts...``, with its parent folders created."""
    path = srkit_home().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def unwrap_state_dict(obj: object, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """The tensor mapping inside an official checkpoint object, with wrapper prefixes removed."""
    while isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            found = ", ".join(map(str, list(obj)[:8]))
            raise ConfigError(
                f"{source}: no state dict found; expected a mapping of tensors or one wrapped in "
                f"{'/'.join(WRAPPER_KEYS)}, found keys {found}"
            )
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ConfigError(f"{source}: expected a non-empty mapping of tensors, got {type(obj).__name__}")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        while name.startswith(PREFIXES):
            name = name.split(".", 1)[1]
        state[name] = value
    return state


# torch's weights_only unpickler names the first object it refuses as "GLOBAL <module.name>".
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read an official checkpoint file into a plain state dict on the CPU (no code is unpickled).

    A file that cannot be read is a :class:`ConfigError` saying whether it is corrupt or holds pickled objects,
    and how to get a good file; torch's own advice (retry with ``weights_only=False``, which runs the file's code)
    is never passed on.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as err:
            raise ConfigError(f"{path} is not a valid safetensors file ({err}); {_how_to_replace(path)}") from None
        return unwrap_state_dict(state, source=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused is None:  # the unpickler met bytes that are no pickle at all
            raise ConfigError(f"{path} is corrupt: it is not a PyTorch checkpoint; {_how_to_replace(path)}") from None
        raise ConfigError(
            f"{path} is not a plain state dict: it holds the Python object {refused[1]}, and srkit never unpickles objects "
            "(unpickling runs code). Re-save it as tensors only (torch.save(model.state_dict(), ...) or safetensors), "
            f"or {_how_to_replace(path)}"
        ) from None
    except (RuntimeError, EOFError, OSError):  # a truncated or damaged zip archive or legacy pickle
        damage = "it is empty" if path.stat().st_size == 0 else "it is truncated or damaged"
        raise ConfigError(f"{path} is corrupt ({damage}); {_how_to_replace(path)}") from None
    return unwrap_state_dict(obj, source=str(path))


def _how_to_replace(path: Path) -> str:
    """How to get a good copy of ``path``: the source of the built-in method's file of that name, if there is one."""
    from ..registry import REGISTRIES

    for entry in REGISTRIES["method"]:
        descriptor = entry.descriptor
        for weight_file in descriptor.weights if descriptor is not None else ():
            if weight_file.filename == path.name and weight_file.source:
                return f"download {path.name} again from {weight_file.source}"
    return "download the file again from where it was published, or pass weights= another file"


def synthetic_tensor(name: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float64) -> Tensor:
    """The ``srkit-synthetic-v1`` value of the parameter ``name`` (shared/reference/README.md, section 0.2).

    Seeded by the CRC32 of the key, so values depend only on the key and the shape: fan-in scaled
    normals for tensors with two or more dims, ``1 + 0.1 r`` for 1-D ``*weight`` (norms), ``0.1 r``
    otherwise (biases).
    """
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    r = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    if len(shape) >= 2:
        value = r / math.sqrt(math.prod(shape[1:]))
    elif name.endswith("weight"):
        value = 1 + 0.1 * r
    else:
        value = 0.1 * r
    return value.to(dtype)


def synthetic_state_dict(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """``model.state_dict()`` with every parameter replaced by its synthetic-v1 value (buffers kept)."""
    params = dict(model.named_parameters())
    state = {}
    for key, value in model.state_dict().items():
        if key in params:
            value = synthetic_tensor(key, value.shape, dtype or value.dtype)
        state[key] = value
    return state


# --------------------------------------------------------------------------------------------
# The resolver: weights= -> a local path

SYNTHETIC: Literal["synthetic"] = "synthetic"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name"


def companion(value: str | None, weights: str | os.PathLike[str] | None) -> str | None:
    """A method's secondary weights ``value``: synthetic when unspecified and the main ``weights`` are."""
    return SYNTHETIC if value is None and weights is not None and str(weights) == SYNTHETIC else value


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` read at call time)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def search_dirs() -> list[Path]:
    """Folders searched for a component's default file: ``SRKIT_HOME/weights`` and ``./weights``."""
    return [srkit_home() / "weights", Path.cwd() / "weights"]


def _from_hub(hub_id: str, filename: str | None, subfolder: str | None, looked: list[str]) -> Path | None:
    """A file (or, without ``filename``, the snapshot folder) of ``hub_id``; cache only when offline."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    offline = hub_offline()
    looked.append(f"hub id {hub_id!r} in the Hugging Face cache {constants.HF_HUB_CACHE}" + ("" if offline else " and on the hub"))
    try:
        if filename is None:
            return Path(snapshot_download(hub_id, local_files_only=offline))
        return Path(hf_hub_download(hub_id, filename, subfolder=subfolder, local_files_only=offline))
    except (OSError, ValueError, HfHubHTTPError):  # not cached / not on the hub / no connection
        return None


# The ways to provide any missing file, after the file's own (copy it into SRKIT_HOME/weights, or download it).
_OTHER_WAYS = ("pass weights=<path to the file or folder>", "pass weights=<hub id> of a repository in the local Hugging Face cache",
               "for tests and timing only: weights='synthetic' (seeded random weights)")


class _MissingFile(WeightsNotFoundError):
    """One weights file not found, with its parts kept apart so that :func:`resolve_weights_together` can report
    several missing files in one message."""

    def __init__(self, what: str, target: str, looked: list[str], fetch: str):
        self.what, self.target, self.looked, self.fetch = what, target, looked, fetch
        places = "\n".join(f"  - {place}" for place in looked)
        super().__init__(f"{what}: cannot find {target}. Looked in:\n{places}\nTo provide it: " + "; or ".join([fetch, *_OTHER_WAYS]))


def _not_found(what: str, target: str, looked: list[str], filename: str | None, hub_id: str | None,
               source: str = "", folder: Path | None = None) -> _MissingFile:
    """The error for a file not found; ``folder``: the folder the user gave, where the file belongs."""
    home = srkit_home() / "weights"
    if hub_id is None:
        fetch = f"copy {filename or target} into {folder or home}" + (f" (it is published at {source})" if source else "")
    elif filename is not None:
        fetch = f"download it: hf download {hub_id} {filename} --local-dir {home}"
    else:
        fetch = f"download it: hf download {hub_id} (or with --local-dir {home / hub_id.rsplit('/', 1)[-1]})"
    return _MissingFile(what, target, looked, fetch)


def resolve(
    spec: str | os.PathLike[str] | None,
    *,
    filename: str | None = None,
    hub_id: str | None = None,
    subfolder: str | None = None,
    what: str = "weights",
    source: str = "",
) -> Path | Literal["synthetic"]:
    """The local path of the weights ``spec`` names, or ``"synthetic"``.

    ``spec``: ``None`` (the default ``filename`` of the component, or the ``hub_id`` snapshot when it
    is a folder component), a file, a folder (``filename`` is looked up inside it and inside its
    ``subfolder``; without ``filename`` the folder itself is the answer, e.g. a diffusers folder),
    a hub id ``owner/name`` (from the local cache when offline) or ``"synthetic"``.
    Raises :class:`WeightsNotFoundError` naming every place it looked and how to provide the file.
    """
    if spec is not None and str(spec) == SYNTHETIC:
        return SYNTHETIC
    looked: list[str] = []
    if spec is None:
        if filename is None and hub_id is None:
            raise ConfigError(f"{what}: no weights given and no default file known; pass weights=<path or hub id>")
        name = filename or str(hub_id).rsplit("/", 1)[-1]
        for folder in search_dirs():
            candidate = folder / name
            looked.append(str(candidate))
            if candidate.exists():
                return candidate
        found = _from_hub(hub_id, filename, subfolder, looked) if hub_id else None
        if found is not None:
            return found
        raise _not_found(what, repr(name), looked, filename, hub_id, source)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if filename is None:
            return path
        for candidate in ([path / subfolder / filename] if subfolder else []) + [path / filename]:
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate
        raise _not_found(what, repr(filename), looked, filename, hub_id, source, folder=path)
    looked.append(f"{path} (no such file or folder)")
    is_hub_id = bool(HUB_ID.match(str(spec)))
    if is_hub_id:
        found = _from_hub(str(spec), filename, subfolder, looked)
        if found is not None:
            return found
    raise _not_found(what, repr(str(spec)), looked, filename, str(spec) if is_hub_id else hub_id, source)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(descriptor: MethodDescriptor, role: str, spec: str | os.PathLike[str] | None) -> Path | Literal["synthetic"]:
    """The one weights path of a method: ``spec`` (see :func:`resolve`) for the descriptor's weight file ``role``,
    whose file name, hub repository and source are data in :attr:`MethodDescriptor.weights`. A ``sha256`` listed
    there is checked."""
    entry = descriptor.weight_file(role)
    filename = None if entry.folder and spec is not None else entry.filename
    path = resolve(spec, filename=filename, hub_id=entry.hub_id, what=f"{descriptor.name} {role}", source=entry.source)
    if entry.sha256 and isinstance(path, Path) and path.is_file():
        digest = file_sha256(path)
        if digest != entry.sha256:
            raise ConfigError(f"{path} is not {descriptor.name}'s {entry.filename}: sha256 {digest} != {entry.sha256}; "
                              f"download it again from {entry.source or 'its source'}")
    return path


def resolve_weights_together(
    descriptor: MethodDescriptor, specs: Mapping[str, str | os.PathLike[str] | None]
) -> dict[str, Path | Literal["synthetic"]]:
    """:func:`resolve_weights` of several roles of one method (``role -> spec``), checked as a whole before any is
    loaded: one file given for two or more roles asks for the folder holding them (instead of a key mismatch when
    the second role reads the first one's file), and every missing file is named in one error, not one per run."""
    roles_of_file: dict[str, list[str]] = {}
    for role, spec in specs.items():
        if spec is not None and str(spec) != SYNTHETIC and Path(spec).expanduser().is_file():
            roles_of_file.setdefault(str(spec), []).append(role)
    for file, roles in roles_of_file.items():
        if len(roles) > 1:
            needed = [f"{descriptor.weight_file(role).filename} ({role})" for role in roles]
            folder = "both files" if len(roles) == 2 else f"all {len(roles)} files"
            raise ConfigError(
                f"{descriptor.name}: weights={file} is one file, but {descriptor.name} needs {len(roles)}: "
                f"{', '.join(needed)}; pass weights=<the folder holding {folder}>"
            )
    found: dict[str, Path | Literal["synthetic"]] = {}
    missing: list[_MissingFile] = []
    for role, spec in specs.items():
        try:
            found[role] = resolve_weights(descriptor, role, spec)
        except _MissingFile as err:
            missing.append(err)
    if len(missing) == 1:
        raise missing[0]
    if missing:
        files = "\n".join(f"  - {err.what}: {err.target}, looked in {', '.join(err.looked)}; to provide it: {err.fetch}"
                          for err in missing)
        raise WeightsNotFoundError(
            f"{descriptor.name}: cannot find {len(missing)} of its weight files:\n{files}\n"
            "Or pass weights=<a folder holding these files>; for tests and timing only: weights='synthetic' "
            "(seeded random weights)"
        )
    return found


def _source_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def cached_safetensors(path: str | os.PathLike[str], *, component: str | None = None) -> Path:
    """A safetensors copy of an official checkpoint under ``SRKIT_HOME/converted`` (``path`` itself if safetensors).

    The cache entry is keyed by the source's absolute path and records its size and modification
    time; it is rewritten (atomically) when the source changes.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() == ".safetensors":
        return path
    from safetensors import SafetensorError, safe_open

    from .convert import convert

    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    target = cache_file("converted", f"{path.stem}-{key}.safetensors")
    stamp = _source_stamp(path)
    if target.is_file():
        try:
            with safe_open(str(target), framework="pt") as handle:
                if (handle.metadata() or {}).get("source_stamp") == stamp:
                    return target
        except SafetensorError:  # a damaged cache entry is rewritten like a stale one
            pass
    return convert(path, target, component=component, extra_metadata={"source_stamp": stamp})


def load_state_dict(
    spec: str | os.PathLike[str] | None,
    *,
    filename: str | None = None,
    hub_id: str | None = None,
    subfolder: str | None = None,
    what: str = "weights",
) -> dict[str, Tensor]:
    """Resolve ``spec`` (see :func:`resolve`) and read it as a plain state dict, via the safetensors cache."""
    path = resolve(spec, filename=filename, hub_id=hub_id, subfolder=subfolder, what=what)
    if path == SYNTHETIC:
        raise ConfigError(f"{what}: 'synthetic' weights depend on the model; use load_weights(model, 'synthetic')")
    assert isinstance(path, Path)
    if path.is_dir():
        expected = filename or "a .pth/.safetensors file"
        raise ConfigError(f"{what}: {path} is a folder; pass the checkpoint file inside it (expected {expected})")
    try:
        source = cached_safetensors(path, component=what)
    except OSError:  # a read-only SRKIT_HOME: read the source directly
        source = path
    return load_checkpoint(source)


def load_weights(
    model: nn.Module,
    spec: str | os.PathLike[str] | None,
    *,
    filename: str | None = None,
    hub_id: str | None = None,
    subfolder: str | None = None,
    what: str = "weights",
    prefix: str = "",
) -> nn.Module:
    """Load ``spec`` into ``model`` strictly (every key, every shape; with ``prefix``, the keys that start with it,
    stripped); ``"synthetic"`` loads srkit-synthetic-v1: the one place synthetic weights are made."""
    if spec is not None and str(spec) == SYNTHETIC:
        model.load_state_dict(synthetic_state_dict(model))
        return model
    state = load_state_dict(spec, filename=filename, hub_id=hub_id, subfolder=subfolder, what=what)
    if prefix:  # the model is one part of a file holding several (e.g. DM-SR's estimator.* and encoder.*)
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    load_state_dict_strict(model, state, source=what)
    return model


_SIZE_MISMATCH = re.compile(r"size mismatch for (?P<key>[^:]+): copying a param with shape torch\.Size\(\[(?P<file>[^\]]*)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[(?P<model>[^\]]*)\]\)")
_KEY_LIST = re.compile(r"(?P<kind>Missing|Unexpected) key\(s\) in state_dict: (?P<keys>.*?)\.\s*$", re.MULTILINE)
_MISMATCH_EXAMPLES = 3  # keys quoted from a mismatch report; the count says how many more


def summarise_load_error(err: RuntimeError) -> str:
    """torch's ``load_state_dict`` report (one line per tensor: hundreds for a large network) as one line: how many
    tensors have other shapes, are missing or are unexpected, with the first few of each."""
    text = str(err)

    def head(items: list[str]) -> str:
        more = len(items) - _MISMATCH_EXAMPLES
        return ", ".join(items[:_MISMATCH_EXAMPLES]) + (f" (+{more} more)" if more > 0 else "")

    mismatches = [f"{m['key']} is ({m['file']}) in the file, ({m['model']}) in the network" for m in _SIZE_MISMATCH.finditer(text)]
    parts = [f"{len(mismatches)} tensor(s) of another shape: {head(mismatches)}"] * bool(mismatches)
    for listing in _KEY_LIST.finditer(text):
        keys = re.findall(r'"([^"]+)"', listing["keys"])
        parts.append(f"{len(keys)} {listing['kind'].lower()} key(s): {head(keys)}")
    return "; ".join(parts) or text.splitlines()[0]


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Copy ``state`` into ``model``, requiring exactly its keys (buffers included) and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        problems = [f"{len(missing)} missing keys: {head(missing)}"] * bool(missing)
        problems += [f"{len(unexpected)} unexpected keys: {head(unexpected)}"] * bool(unexpected)
        problems += [f"{len(wrong)} shape mismatches: {head(wrong)}"] * bool(wrong)
        raise ConfigError(
            f"{source}: the checkpoint does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check that the file is the right one for this component and that the config (channels, depths, "
            "in/out channels) matches the one it was trained with"
        )
    model.load_state_dict(dict(state))
