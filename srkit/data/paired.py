"""Paired HR/LR image folders, matched by file name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InvalidImageError
from ..io import list_images, read_image

__all__ = ["Pair", "PairedFolder"]


@dataclass
class Pair:
    """One benchmark pair: a name, the HR (3, H, W) and the LR (3, H / scale, W / scale), floats in [0, 1]."""

    name: str
    hr: Tensor
    lr: Tensor


class PairedFolder(Dataset[Pair]):
    """HR and LR images in two folders, paired by file name without extension (``0001.png`` <-> ``0001.jpg``).

    Every HR must be exactly ``scale`` times its LR; unmatched names and size mismatches are
    reported when the dataset is built (names) or when an item is read (sizes).
    """

    def __init__(self, hr_dir: str | os.PathLike[str], lr_dir: str | os.PathLike[str], scale: int = 4):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise InvalidImageError(f"scale must be a positive integer, got {scale!r}")
        self.hr_dir, self.lr_dir, self.scale = Path(hr_dir), Path(lr_dir), scale
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
        self.items = [(name, hr[name], lr[name]) for name in sorted(hr)]

    @staticmethod
    def _by_name(folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in list_images(folder):
            if path.stem in files:
                raise InvalidImageError(
                    f"{folder} has two images named {path.stem!r} ({files[path.stem].name}, {path.name}); keep one"
                )
            files[path.stem] = path
        return files

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Pair:
        name, hr_path, lr_path = self.items[index]
        hr, lr = read_image(hr_path), read_image(lr_path)
        expected = (lr.shape[1] * self.scale, lr.shape[2] * self.scale)
        if tuple(hr.shape[1:]) != expected:
            raise InvalidImageError(
                f"{hr_path.name} is {hr.shape[1]}x{hr.shape[2]} but {lr_path.name} is {lr.shape[1]}x{lr.shape[2]}: "
                f"at scale {self.scale} the HR must be {expected[0]}x{expected[1]}; check scale= or crop the HR "
                "to a multiple of the scale (srkit.data.transforms.mod_crop) before making the LR"
            )
        return Pair(name, hr, lr)

    def __repr__(self) -> str:
        return f"PairedFolder({str(self.hr_dir)!r}, {str(self.lr_dir)!r}, scale={self.scale}, n={len(self)})"
