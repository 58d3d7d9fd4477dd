"""The validation split of ``srkit train``: images held out of the training folder by name, as fixed central crops."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..io import read_image
from ..types import Degradation
from .degraded import item_generator, make_degradation
from .paired import is_readable_image
from .transforms import center_crop, paired_center_crop

__all__ = ["ValidationPairs", "hold_out"]


def _rank(path: Path) -> str:
    return hashlib.sha256(path.stem.encode()).hexdigest()


def hold_out(paths: Sequence[Path], count: int) -> list[Path]:
    """The ``count`` readable images of ``paths`` whose names come first by SHA-256: the split depends on the names
    alone (not on the listing order, the extensions or the file contents), so every run on a folder holds out the
    same images, spread over the folder rather than its alphabetical head (often one scene or one camera)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigError(f"data.val_images must be a whole number >= 0, got {count!r}")
    if count and count >= len(paths):
        raise ConfigError(f"the training folder has {len(paths)} images, too few to hold out data.val_images={count} "
                          "for validation; set data.val_images lower (0: no validation) or give data.val_hr=DIR")
    chosen: list[Path] = []
    for path in sorted(paths, key=_rank):
        if len(chosen) == count:
            break
        if is_readable_image(path):
            chosen.append(path)
    return chosen


class ValidationPairs(Dataset[dict[str, Any]]):
    """Fixed validation pairs ``{"name", "hr", "lr"}``, the same at every validation of a run.

    ``items`` are ``(name, hr_path, lr_path)``; each HR is cut to its central ``crop`` square (HR pixels; at most
    the image's shorter side, a multiple of the scale; ``None``: the largest central square) to keep validation
    cheap. The LR is the matching central crop of ``lr_path``, or, where that is ``None``, the HR crop degraded by
    ``degradation`` with a generator seeded from ``(seed, name)``. Pairs are built on first access and kept.
    """

    def __init__(self, items: Sequence[tuple[str, Path, Path | None]], *, scale: int, crop: int | None,
                 degradation: Degradation | str | Mapping[str, Any] = "bicubic", seed: int = 0):
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
            raise ConfigError(f"data.val_crop must be a positive number of HR pixels or null, got {crop!r}")
        self.items, self.scale, self.crop, self.seed = list(items), int(scale), crop, int(seed)
        # Built only where an LR must be made: a paired split needs no degradation.
        self.degradation = make_degradation(degradation) if any(lr is None for _, _, lr in self.items) else None
        self._pairs: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _side(self, hr: Tensor, scale: int) -> int:
        """The crop side: ``crop`` or the image's shorter side, whichever is smaller, down to a multiple of ``scale``."""
        side = min(hr.shape[-2:]) if self.crop is None else min(self.crop, *hr.shape[-2:])
        return side - side % scale

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index not in self._pairs:
            name, hr_path, lr_path = self.items[index]
            hr = read_image(hr_path)
            if lr_path is None:
                assert self.degradation is not None
                hr = center_crop(hr, self._side(hr, self.degradation.scale)).contiguous()
                lr = self.degradation(hr[None], item_generator(self.seed, zlib.crc32(name.encode())))[0]
            else:
                hr, lr = paired_center_crop(hr, read_image(lr_path), self._side(hr, self.scale), self.scale)
            self._pairs[index] = {"name": name, "hr": hr.contiguous(), "lr": lr.contiguous()}
        return self._pairs[index]

    def __repr__(self) -> str:
        return f"ValidationPairs(n={len(self)}, crop={self.crop}, seed={self.seed})"
