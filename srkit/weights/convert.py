"""Official checkpoint -> srkit safetensors (``srkit convert source=... output=...``).

The output holds the unwrapped state dict (no ``params_ema``/``state_dict`` containers, no
``module.``/``_orig_mod.`` prefixes) and metadata: ``format`` (``srkit``), ``source`` (file name),
``source_sha256``, ``srkit_version`` and ``component``. It is written atomically (a temporary file
renamed into place), so an interrupted conversion never leaves a truncated file behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from . import load_checkpoint

__all__ = ["convert", "convert_task", "file_sha256"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _storable(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous tensors with no shared storage (safetensors refuses aliases, e.g. tied weights)."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen or not value.is_contiguous():
            value = value.contiguous().clone()
        seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out


def convert(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    component: str | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Convert ``source`` (``.pth``/``.pt``/``.ckpt``/``.bin``/``.safetensors``) to an srkit safetensors file.

    ``output`` defaults to ``source`` with the suffix ``.safetensors``; ``component`` (e.g.
    ``invsr-noise-predictor``) is recorded in the metadata. Returns the output path.
    """
    from safetensors.torch import save_file

    from .. import __version__

    source = Path(source).expanduser()
    state = load_checkpoint(source)
    target = Path(output).expanduser() if output is not None else source.with_suffix(".safetensors")
    if target.resolve() == source.resolve():
        from ..errors import ConfigError

        raise ConfigError(f"convert: output {target} would overwrite the source; choose another output path")
    metadata = {
        "format": "srkit", "source": source.name, "source_sha256": file_sha256(source),
        "srkit_version": __version__, "component": component or "", **(extra_metadata or {}),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_file(_storable(state), str(temp), metadata=metadata)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def convert_task(cfg: Any) -> None:
    """The ``srkit convert`` Hydra task (``conf/convert.yaml``): check the options, convert one file and print where
    it went."""
    from ..errors import ConfigError
    from ..options import parse_options, path, text

    options = parse_options("convert", cfg, {"source": path(), "output": path(null="next to the source"),
                                             "component": text(null="none recorded")})
    if not options["source"].is_file():
        raise ConfigError(f"source={options['source']} is not a file; pass source=<the official checkpoint "
                          "(.pth/.pt/.ckpt/.bin/.safetensors)>")
    target = convert(options["source"], options["output"], component=options["component"])
    print(f"srkit convert: wrote {target.resolve()}")
