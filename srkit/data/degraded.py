"""On-the-fly pairs: HR images from a folder, LR made by a degradation with a per-item seed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..io import list_images, read_image
from ..types import Degradation
from .paired import Pair
from .transforms import center_crop, mod_crop, random_crop

__all__ = ["DegradedFolder", "item_generator", "make_degradation"]


def make_degradation(degradation: Degradation | str | Mapping[str, Any]) -> Degradation:
    """A degradation from an instance, a registered name (``"bicubic"``) or a config with ``_target_``."""
    from ..registry import build, instantiate

    if isinstance(degradation, str):
        result = build("degradation", degradation)
    elif isinstance(degradation, Mapping):
        result = instantiate(degradation, where="degradation")
    else:
        result = degradation
    if not isinstance(result, Degradation):
        raise ConfigError(f"expected a srkit Degradation, a registered degradation name or a config; got {type(result).__name__}")
    return result


def item_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from (seed, index) through NumPy's SeedSequence, so nearby items are decorrelated."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state) >> 1)


class DegradedFolder(Dataset[Pair]):
    """HR images of ``hr_dir``, each degraded on the fly into a :class:`Pair`.

    ``crop`` (HR pixels) takes a random crop with ``random_crop=True`` (training) or the central one;
    the HR is then cropped to a multiple of the degradation's scale. Item ``i`` is deterministic:
    crop position and degradation draw from :func:`item_generator` ``(seed, i)``.
    """

    def __init__(
        self,
        hr_dir: str | os.PathLike[str],
        degradation: Degradation | str | Mapping[str, Any] = "bicubic",
        seed: int = 0,
        crop: int | None = None,
        random_crop: bool = False,
    ):
        self.hr_dir = Path(hr_dir)
        self.paths = list_images(self.hr_dir)
        self.degradation = make_degradation(degradation)
        self.seed, self.crop, self.random_crop = int(seed), crop, bool(random_crop)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Pair:
        path = self.paths[index]
        generator = item_generator(self.seed, index)
        hr = read_image(path)
        if self.crop is not None:
            hr = random_crop(hr, self.crop, generator) if self.random_crop else center_crop(hr, self.crop)
        hr = mod_crop(hr, self.degradation.scale).contiguous()
        lr = self.degradation(hr[None], generator)[0]
        return Pair(path.stem, hr, lr)

    def __repr__(self) -> str:
        return f"DegradedFolder({str(self.hr_dir)!r}, {self.degradation!r}, seed={self.seed}, crop={self.crop}, n={len(self)})"
