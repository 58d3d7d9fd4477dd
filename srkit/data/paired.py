"""Paired HR/LR image folders, matched by file name."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InvalidImageError
from ..io import list_images, read_image

__all__ = ["Pair", "PairedFolder", "is_readable_image", "readable_images"]

log = logging.getLogger(__name__)


def is_readable_image(path: Path) -> bool:
    """Whether ``path`` opens as an image (PIL's ``verify``); a file that does not is logged as skipped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        log.warning("skipping %s: not a readable image (%s)", path, err)
        return False
    return True


def readable_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The images of ``folder`` that open as images, and the files skipped (logged); an empty folder is an error."""
    readable, skipped = [], []
    for path in list_images(folder):
        (readable if is_readable_image(path) else skipped).append(path)
    if not readable:
        raise InvalidImageError(f"{folder} holds no readable image ({len(skipped)} unreadable files); "
                                "pass a folder of PNG/JPEG/WebP/BMP/TIFF images")
    return readable, skipped


@dataclass
class Pair:
    """One benchmark pair: a name, the HR (3, H, W) and the LR (3, H / scale, W / scale), floats in [0, 1]."""

    name: str
    hr: Tensor
    lr: Tensor


class PairedFolder(Dataset[dict[str, Any]]):
    """HR and LR images in two folders, paired by file name without extension (``0001.png`` <-> ``0001.jpg``),
    as dicts ``{"name", "hr", "lr"}`` (what ``default_collate`` batches and the methods' ``losses(batch)`` read).

    Every HR must be exactly ``scale`` times its LR; unmatched names and size mismatches are
    reported when the dataset is built (names) or when an item is read (sizes). For training, ``crop``
    (HR pixels) takes an aligned random crop of both and ``flip`` a random flip and rotation, drawn from
    ``(seed, index, epoch)`` (:meth:`use_epoch`). ``exclude``: names left out (a validation split).
    """

    validation: Dataset | None = None  # the held-out pairs `srkit train` validates on (set by srkit.data.image_folders)

    def __init__(self, hr_dir: str | os.PathLike[str], lr_dir: str | os.PathLike[str], scale: int = 4,
                 crop: int | None = None, flip: bool = False, seed: int = 0, exclude: Collection[str] = ()):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise InvalidImageError(f"scale must be a positive integer, got {scale!r}")
        self.hr_dir, self.lr_dir, self.scale = Path(hr_dir), Path(lr_dir), scale
        self.crop, self.flip, self.seed, self.epoch = crop, bool(flip), int(seed), 0
        hr = self._by_name(self.hr_dir)
        lr = self._by_name(self.lr_dir)
        only_hr, only_lr = sorted(hr.keys() - lr.keys()), sorted(lr.keys() - hr.keys())
        if only_hr or only_lr:
            raise InvalidImageError(
                f"HR and LR folders do not match by file name: {len(only_hr)} only in {self.hr_dir} "
                f"({', '.join(only_hr[:5])}{', ...' if len(only_hr) > 5 else ''}), {len(only_lr)} only in {self.lr_dir} "
                f"({', '.join(only_lr[:5])}{', ...' if len(only_lr) > 5 else ''}); rename the files so that each HR "
                "has an LR with the same name (the extension may differ)"
            )
        self.items = [(name, hr[name], lr[name]) for name in sorted(hr) if name not in exclude]
        if not self.items:
            raise InvalidImageError(f"all {len(hr)} pairs of {self.hr_dir} are held out for validation; "
                                    "hold out fewer (data.val_images) or add images")

    @staticmethod
    def _by_name(folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in readable_images(folder)[0]:
            if path.stem in files:
                raise InvalidImageError(
                    f"{folder} has two images named {path.stem!r} ({files[path.stem].name}, {path.name}); keep one"
                )
            files[path.stem] = path
        return files

    def __len__(self) -> int:
        return len(self.items)

    def use_epoch(self, epoch: int) -> None:
        """The trainer's epoch (not ``set_epoch``, which Accelerate's loader calls with its own count of iterators)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from .degraded import item_generator, random_flip
        from .transforms import paired_random_crop

        name, hr_path, lr_path = self.items[index]
        hr, lr = read_image(hr_path), read_image(lr_path)
        expected = (lr.shape[1] * self.scale, lr.shape[2] * self.scale)
        if tuple(hr.shape[1:]) != expected:
            raise InvalidImageError(
                f"{hr_path.name} is {hr.shape[1]}x{hr.shape[2]} but {lr_path.name} is {lr.shape[1]}x{lr.shape[2]}: "
                f"at scale {self.scale} the HR must be {expected[0]}x{expected[1]}; check scale= or crop the HR "
                "to a multiple of the scale (srkit.data.transforms.mod_crop) before making the LR"
            )
        if self.crop is not None or self.flip:
            generator = item_generator(self.seed, index, epoch=self.epoch)
            if self.crop is not None:
                hr, lr = paired_random_crop(hr, lr, self.crop, self.scale, generator)
            if self.flip:
                hr, lr = random_flip([hr, lr], generator)
        return {"name": name, "hr": hr.contiguous(), "lr": lr.contiguous()}

    def __repr__(self) -> str:
        return f"PairedFolder({str(self.hr_dir)!r}, {str(self.lr_dir)!r}, scale={self.scale}, n={len(self)})"
