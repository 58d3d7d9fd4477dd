"""Datasets: paired folders, on-the-fly degradation, and the bundled srkit-mini benchmark set."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

__all__ = ["image_folders"]


def image_folders(hr: str, lr: str | None = None, *, scale: int = 4, degradation: Any = "realesrgan", crop: int | None = 256,
                  flip: bool = True, seed: int = 0) -> Dataset:
    """The training data of ``srkit train data.hr=DIR [data.lr=DIR]``: LR/HR folders paired by name, or HR images
    degraded on the fly (``degradation``: a registered name or a config; Real-ESRGAN's second-order pipeline by default,
    as ResShift, LPNSR, InvSR and CCSR train), fresh every epoch; random ``crop`` (HR pixels) and ``flip``."""
    from .degraded import DegradedFolder
    from .paired import PairedFolder

    if lr is not None:
        return PairedFolder(hr, lr, scale=scale, crop=crop, flip=flip, seed=seed)
    return DegradedFolder(hr, degradation, seed=seed, crop=crop, random_crop=crop is not None, flip=flip)
