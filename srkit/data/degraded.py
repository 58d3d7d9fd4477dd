"""On-the-fly pairs: HR images from a folder, LR made by a degradation drawn fresh per (seed, epoch, item)."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError, InvalidImageError
from ..io import read_image
from ..types import Degradation
from .paired import readable_images
from .transforms import center_crop, mod_crop, random_crop

__all__ = ["DegradedFolder", "item_generator", "make_degradation", "random_flip"]


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


def item_generator(seed: int, index: int, device: torch.device | str = "cpu", epoch: int = 0) -> torch.Generator:
    """A generator seeded from (seed, index, epoch) through NumPy's SeedSequence, so nearby items and epochs are
    decorrelated (and epoch 0 is the (seed, index) stream of earlier srkit versions)."""
    entropy = [int(seed), int(index)] + ([int(epoch)] if epoch else [])
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state) >> 1)


def random_flip(images: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """The same random horizontal flip and 90-degree rotation of every image (BasicSR's ``augment``)."""
    hflip, rotate = torch.randint(2, (2,), generator=generator).tolist()
    return [(image.flip(-1) if hflip else image).rot90(rotate, (-2, -1)) for image in images]


class DegradedFolder(Dataset[dict[str, Any]]):
    """HR images of ``hr_dir``, each degraded on the fly into a dict ``{"name", "hr", "lr"}`` (what
    ``default_collate`` batches and the methods' ``losses(batch)`` read).

    ``crop`` (HR pixels) takes a random crop with ``random_crop=True`` (training) or the central one;
    ``flip`` adds a random flip and rotation; the HR is then cropped to a multiple of the degradation's
    scale. Item ``i`` of epoch ``e`` (:meth:`use_epoch`, which the trainer calls) is deterministic and
    fresh every epoch: crop, flip and degradation draw from :func:`item_generator` ``(seed, i, epoch=e)``,
    as the papers degrade anew every iteration. Files that cannot be read are skipped (and counted in
    ``skipped``) when the dataset is built; ``exclude``: names (file names without extension) left out (a validation split).
    """

    validation: Dataset | None = None  # the held-out pairs `srkit train` validates on (set by srkit.data.image_folders)

    def __init__(
        self,
        hr_dir: str | os.PathLike[str],
        degradation: Degradation | str | Mapping[str, Any] = "bicubic",
        seed: int = 0,
        crop: int | None = None,
        random_crop: bool = False,
        flip: bool = False,
        exclude: Collection[str] = (),
    ):
        self.hr_dir = Path(hr_dir)
        readable, self.skipped = readable_images(self.hr_dir)
        self.paths = [path for path in readable if path.stem not in exclude]
        if not self.paths:
            raise InvalidImageError(f"all {len(readable)} images of {self.hr_dir} are held out for validation; "
                                    "hold out fewer (data.val_images) or add images")
        self.degradation = make_degradation(degradation)
        self.seed, self.crop, self.random_crop, self.flip = int(seed), crop, bool(random_crop), bool(flip)
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        """The trainer's epoch (not ``set_epoch``, which Accelerate's loader calls with its own count of iterators)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        generator = item_generator(self.seed, index, epoch=self.epoch)
        hr = read_image(path)
        if self.crop is not None:
            hr = random_crop(hr, self.crop, generator) if self.random_crop else center_crop(hr, self.crop)
        if self.flip:
            (hr,) = random_flip([hr], generator)
        hr = mod_crop(hr, self.degradation.scale).contiguous()
        lr = self.degradation(hr[None], generator)[0]
        return {"name": path.stem, "hr": hr, "lr": lr}

    def __repr__(self) -> str:
        return f"DegradedFolder({str(self.hr_dir)!r}, {self.degradation!r}, seed={self.seed}, crop={self.crop}, n={len(self)})"
