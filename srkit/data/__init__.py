"""Datasets: paired folders, on-the-fly degradation, and the bundled srkit-mini benchmark set."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

__all__ = ["image_folders"]


def image_folders(hr: str, lr: str | None = None, *, scale: int = 4, degradation: Any = "realesrgan", crop: int | None = 256,
                  flip: bool = True, seed: int = 0, val_hr: str | None = None, val_lr: str | None = None, val_images: int = 0,
                  val_crop: int | None = 256) -> Dataset:
    """The training data of ``srkit train data.hr=DIR [data.lr=DIR]``: LR/HR folders paired by name, or HR images
    degraded on the fly (``degradation``: a registered name or a config; Real-ESRGAN's second-order pipeline by default,
    as ResShift, LPNSR, InvSR and CCSR train), fresh every epoch; random ``crop`` (HR pixels) and ``flip``.

    Its ``validation`` attribute holds the validation pairs (:class:`~srkit.data.validation.ValidationPairs`, central
    ``val_crop`` squares): the images of ``val_hr`` (with their ``val_lr`` namesakes, or degraded once), or else
    ``val_images`` images held out of ``hr`` by name (:func:`~srkit.data.validation.hold_out`) and never trained on;
    ``None`` without either.
    """
    from pathlib import Path

    from ..errors import ConfigError
    from ..io import list_images
    from .degraded import DegradedFolder
    from .paired import PairedFolder, readable_images
    from .validation import ValidationPairs, hold_out

    if val_lr is not None and val_hr is None:
        raise ConfigError("data.val_lr needs data.val_hr: give the validation HR folder too (its images pair with val_lr by name)")
    if val_hr is not None and Path(val_hr).resolve() in {Path(hr).resolve(), *([Path(lr).resolve()] if lr else [])}:
        raise ConfigError(f"data.val_hr={val_hr} is a training folder, so validation would score images it trains on; "
                          "give a separate folder, or leave val_hr null to hold out data.val_images images of data.hr")
    held_out = hold_out(list_images(hr), val_images) if val_hr is None else []
    names = {path.stem for path in held_out}
    train: PairedFolder | DegradedFolder
    if lr is not None:  # PairedFolder checks that every HR, held out or not, has its LR namesake
        train = PairedFolder(hr, lr, scale=scale, crop=crop, flip=flip, seed=seed, exclude=names)
    else:
        train = DegradedFolder(hr, degradation, seed=seed, crop=crop, random_crop=crop is not None, flip=flip, exclude=names)
    lr_files = {path.stem: path for path in list_images(lr) if path.stem in names} if lr is not None else {}
    if val_hr is not None:
        pairs = (PairedFolder(val_hr, val_lr, scale=scale).items if val_lr is not None
                 else [(path.stem, path, None) for path in readable_images(Path(val_hr))[0]])
    else:
        pairs = [(path.stem, path, lr_files.get(path.stem)) for path in held_out]
    if pairs:
        train.validation = ValidationPairs(pairs, scale=scale, crop=val_crop, degradation=degradation, seed=seed)
    return train
