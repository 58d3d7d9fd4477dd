"""Training checkpoints that load without executing code.

Accelerate's ``save_state`` writes pickles (``random_states_0.pkl``, ``custom_checkpoint_N.pkl``) and
reads them back with ``weights_only=False``, so a planted file could run code on resume. A srkit
checkpoint folder holds instead:

* ``modules.safetensors`` -- every trained module, discriminator and EMA copy (``<name>.<key>``);
* ``optimizers.pt`` -- optimizer and LR-schedule states, plain tensors and numbers;
* ``rng-<rank>.pt`` -- each process's torch (CPU and CUDA), numpy and Python RNG states as tensors;
* ``progress.json`` -- step, epoch and batch position.

The ``.pt`` files are read with ``torch.load(weights_only=True)``, which refuses anything but tensors
and plain containers: a file that would run code is an error, and nothing runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["load_checkpoint", "read_rng", "rng_state", "save_checkpoint"]

MODULES, OPTIMIZERS, PROGRESS = "modules.safetensors", "optimizers.pt", "progress.json"


def rng_state() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), numpy and Python RNG states as tensors and numbers (:func:`read_rng` restores them)."""
    python_version, python_state, python_gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": python_version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": python_gauss},
        "numpy": {"keys": torch.from_numpy(numpy_keys.astype(np.int64)), "pos": int(numpy_pos),
                  "has_gauss": int(numpy_has_gauss), "gauss": float(numpy_gauss)},
    }


def read_rng(state: Mapping[str, Any]) -> None:
    """Restore the RNG states :func:`save_checkpoint` recorded for this process."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"]))


def save_checkpoint(folder: Path, *, modules: Mapping[str, nn.Module], stateful: Mapping[str, Any], progress: Mapping[str, int],
                    rank: int, main: bool, streams: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint files into ``folder`` (the caller renames it into place). ``stateful``: objects with
    ``state_dict()`` (optimizers, LR schedules), by name; ``streams``: this process's other RNG states (the data
    loader's). Only the main process writes the shared files."""
    from safetensors.torch import save_file

    if main:
        tensors = {f"{name}.{key}": value.detach().contiguous().cpu()
                   for name, module in modules.items() for key, value in module.state_dict().items()}
        save_file(tensors, str(folder / MODULES))
        torch.save({name: obj.state_dict() for name, obj in stateful.items()}, folder / OPTIMIZERS)
        (folder / PROGRESS).write_text(json.dumps(dict(progress)))
    torch.save({**rng_state(), "streams": dict(streams or {})}, folder / f"rng-{rank}.pt")


def _safe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that carries code, or a corrupt file
        raise ConfigError(
            f"refusing to resume from {path}: it is not a plain tensor file ({type(err).__name__}: {err}). srkit never "
            "unpickles code; delete this checkpoint folder (or pass resume=false) to start over"
        ) from None


def load_checkpoint(folder: Path, *, modules: Mapping[str, nn.Module], stateful: Mapping[str, Any],
                    rank: int) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Restore ``modules`` and ``stateful`` from ``folder`` (strictly, by name) and this process's RNG states;
    returns the progress record and the other RNG streams."""
    from safetensors.torch import load_file

    missing = [name for name in (MODULES, OPTIMIZERS, PROGRESS, f"rng-{rank}.pt") if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"checkpoint {folder} lacks {', '.join(missing)}; it was not written by this srkit version "
                          "(delete it, or pass resume=false, to start over)")
    tensors = load_file(str(folder / MODULES))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    states = _safe_load(folder / OPTIMIZERS)
    for name, obj in stateful.items():
        obj.load_state_dict(states[name])
    rng = _safe_load(folder / f"rng-{rank}.pt")
    read_rng(rng)
    return {k: int(v) for k, v in json.loads((folder / PROGRESS).read_text()).items()}, dict(rng.get("streams", {}))
