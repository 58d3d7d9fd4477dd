"""Weights: the cache location, official checkpoint loading, and the synthetic-weight rule.

``load_checkpoint`` reads any official file format (``.pth``/``.pt``/``.ckpt`` safely with
``weights_only=True``, or ``.safetensors``), unwraps the usual containers (``params_ema``,
``params``, ``state_dict``, ``model``, ...) and strips ``module.`` / ``_orig_mod.`` prefixes left by
DataParallel/DDP and ``torch.compile``. ``synthetic_state_dict`` makes the deterministic
``srkit-synthetic-v1`` weights that the reference goldens were computed with.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError, WeightsNotFoundError

__all__ = ["cache_file", "load_checkpoint", "srkit_home", "synthetic_state_dict", "synthetic_tensor", "unwrap_state_dict"]

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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read an official checkpoint file into a plain state dict on the CPU (no code is unpickled)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return unwrap_state_dict(load_file(str(path)), source=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses pickles that carry code; corrupt files land here too
        raise ConfigError(
            f"cannot read {path} with torch.load(weights_only=True): {err}. srkit never unpickles code; "
            "re-save the checkpoint as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors"
        ) from err
    return unwrap_state_dict(obj, source=str(path))


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
