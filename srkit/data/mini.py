"""srkit-mini: a small deterministic benchmark set built on first use from photographs shipped on PyPI.

The HR images are central 256x256 and 512x512 crops (where the photo is large enough) of real
photographs bundled with scikit-image and scikit-learn (licences: ``docs/datasets.md``). The LR
images are made by a registered degradation (``bicubic``, ``realesrgan``, ``resshift_test``, ...) with
a fixed seed per image. Everything is cached as PNG under ``srkit_home()/mini/`` with a manifest
of sha256 checksums; a cached file whose checksum no longer matches is rebuilt, and a change of
the source photos (a new package version) invalidates the whole cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import secrets
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import ConfigError, UnsupportedError
from ..io import read_image, write_image
from ..weights import srkit_home
from .degraded import item_generator
from .paired import Pair
from .transforms import center_crop

__all__ = [
    "MINI_SEED", "PHOTOS", "SIZES", "TRAIN_PHOTOS", "Pair", "Photo", "mini_crops", "mini_hr_folder", "mini_pairs", "mini_root",
    "mini_train_data", "mini_train_folder",
]

SIZES = (256, 512)
MINI_SEED = 2025  # base seed of the stochastic degradations; item seeds mix it with crc32(name)


@dataclass(frozen=True)
class Photo:
    """A photograph inside an installed package: the package to import and the file inside it."""

    name: str
    module: str  # importable package that ships the file
    distribution: str  # what to pip install
    file: str  # path relative to the package folder
    licence: str


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "skimage", "scikit-image", "data/astronaut.png", "public domain (NASA)"),
    Photo("chelsea", "skimage", "scikit-image", "data/chelsea.png", "CC0 (Stefan van der Walt)"),
    Photo("coffee", "skimage", "scikit-image", "data/coffee.png", "CC0 (Rachel Michetti)"),
    Photo("hubble_deep_field", "skimage", "scikit-image", "data/hubble_deep_field.jpg", "public domain (NASA)"),
    Photo("motorcycle_left", "skimage", "scikit-image", "data/motorcycle_left.png", "Middlebury 2014 stereo; none stated"),
    Photo("rocket", "skimage", "scikit-image", "data/rocket.jpg", "public domain (SpaceX)"),
    Photo("china", "sklearn", "scikit-learn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele)"),
    Photo("flower", "sklearn", "scikit-learn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion)"),
)


# srkit-mini-train: the other photographs these packages (and matplotlib) ship, disjoint from PHOTOS, to train the
# zoo's small models on. motorcycle_right is left out: it is the other view of the evaluation's motorcycle_left.
# Several are gray (replicated to RGB), textures or microscopy: what ships offline (moon is left out: its docstring
# states no licence); docs/datasets.md has their licences.
TRAIN_PHOTOS = (
    Photo("camera", "skimage", "scikit-image", "data/camera.png", "CC0 (Lav Varshney)"),
    Photo("ihc", "skimage", "scikit-image", "data/ihc.png", "no known copyright restrictions (CMMI)"),
    Photo("retina", "skimage", "scikit-image", "data/retina.jpg", "CC0 (Mikael Häggström, Wikimedia)"),
    Photo("coins", "skimage", "scikit-image", "data/coins.png", "no known copyright restrictions (Brooklyn Museum)"),
    Photo("brick", "skimage", "scikit-image", "data/brick.png", "CC0 (CC0Textures)"),
    Photo("grass", "skimage", "scikit-image", "data/grass.png", "CC0 (linolafett, DeviantArt)"),
    Photo("gravel", "skimage", "scikit-image", "data/gravel.png", "CC0 (CC0Textures)"),
    Photo("grace_hopper", "matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          "U.S. Navy photograph (public domain); matplotlib states none"),
)


def mini_root() -> Path:
    """Where srkit-mini is cached: ``srkit_home()/mini``."""
    return srkit_home() / "mini"


def _source(photo: Photo) -> Path:
    spec = importlib.util.find_spec(photo.module)
    if spec is None or spec.origin is None:
        raise UnsupportedError(
            f"srkit-mini needs the photo {photo.name!r} shipped by {photo.distribution}, which is not installed: "
            f"pip install {photo.distribution} (or pip install 'srkit[data]')"
        )
    path = Path(spec.origin).parent / photo.file
    if not path.is_file():
        raise UnsupportedError(
            f"{photo.distribution} is installed but {path} is missing; "
            f"reinstall it: pip install --force-reinstall {photo.distribution}"
        )
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mini_crops(size: int | None = None) -> list[tuple[str, Tensor]]:
    """The HR crops ``(name, (3, s, s))``, ``name = f"{photo}_{s}"``, for ``s`` in :data:`SIZES` (or only ``size``)."""
    sizes = _sizes(size)
    crops = []
    for photo in PHOTOS:
        image = read_image(_source(photo))
        for s in sizes:
            if min(image.shape[1:]) >= s:
                crops.append((f"{photo.name}_{s}", center_crop(image, s).contiguous()))
    return crops


def _sizes(size: int | None) -> tuple[int, ...]:
    if size is None:
        return SIZES
    if size not in SIZES:
        raise ConfigError(f"srkit-mini has HR crops of {', '.join(map(str, SIZES))} pixels, not {size!r}; pass size=None for all")
    return (size,)


class _Manifest:
    """``manifest.json``: the sha256 of each cached file and of each source photo."""

    def __init__(self, root: Path, photos: tuple[Photo, ...] = PHOTOS):
        self.path = root / "manifest.json"
        data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
        sources = {p.name: _sha256(_source(p)) for p in photos}
        self.files: dict[str, str] = data.get("files", {}) if data.get("sources") == sources else {}
        self.sources = sources
        self.root = root

    def valid(self, relpath: str) -> bool:
        path = self.root / relpath
        return relpath in self.files and path.is_file() and _sha256(path) == self.files[relpath]

    def record(self, relpath: str) -> None:
        self.files[relpath] = _sha256(self.root / relpath)

    def save(self) -> None:
        temp = self.path.with_name(f".manifest.{secrets.token_hex(6)}.tmp")
        temp.write_text(json.dumps({"sources": self.sources, "files": dict(sorted(self.files.items()))}, indent=1))
        os.replace(temp, self.path)


def mini_pairs(degradation: str = "bicubic", scale: int = 4, size: int | None = None) -> list[Pair]:
    """The srkit-mini pairs for a registered ``degradation`` at ``scale`` (HR crops of ``size``, or all).

    Built and cached on first use; later calls read the PNG files (identical tensors either way).
    """
    from ..registry import build

    sizes = _sizes(size)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1 or any(s % scale for s in sizes):
        raise ConfigError(f"srkit-mini: scale must be a positive integer dividing the crop sizes {sizes}, got {scale!r}")
    root = mini_root()
    root.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(root)
    names = _crop_names(sizes)
    lr_dir = f"lr/{degradation}_x{scale}"
    missing = [n for n in names if not (manifest.valid(f"hr/{n}.png") and manifest.valid(f"{lr_dir}/{n}.png"))]
    if missing:
        model = build("degradation", degradation, scale=scale)
        for name, hr in mini_crops(size):
            if name not in missing:
                continue
            if not manifest.valid(f"hr/{name}.png"):
                write_image(root / "hr" / f"{name}.png", hr)
                manifest.record(f"hr/{name}.png")
            hr = read_image(root / "hr" / f"{name}.png")
            lr = model(hr[None], item_generator(MINI_SEED, zlib.crc32(name.encode())))[0]
            write_image(root / lr_dir / f"{name}.png", lr.clamp(0, 1))
            manifest.record(f"{lr_dir}/{name}.png")
        manifest.save()
    return [Pair(n, read_image(root / "hr" / f"{n}.png"), read_image(root / lr_dir / f"{n}.png")) for n in names]


def _crop_names(sizes: tuple[int, ...]) -> list[str]:
    """Names of the crops :func:`mini_crops` makes, from the photos' headers (no decoding)."""
    from PIL import Image

    names = []
    for photo in PHOTOS:
        with Image.open(_source(photo)) as image:
            short = min(image.size)
        names += [f"{photo.name}_{s}" for s in sizes if short >= s]
    return names


def mini_hr_folder(size: int = 256) -> Path:
    """The folder of srkit-mini's HR crops of ``size`` (built on first use): a validation set for training."""
    mini_pairs("bicubic", 4, size)
    folder = mini_root() / "hr"
    names = {f"{name}.png" for name in _crop_names(_sizes(size))}
    subset = mini_root() / f"hr_{size}"
    subset.mkdir(exist_ok=True)
    for name in names:  # a folder of just this size's crops, as hard links to the checked cache (no copies)
        (subset / name).unlink(missing_ok=True)
        os.link(folder / name, subset / name)
    return subset


def mini_train_folder() -> Path:
    """srkit-mini-train: the :data:`TRAIN_PHOTOS` as RGB PNGs (gray replicated), cached under ``srkit_home()/mini-train``."""
    root = srkit_home() / "mini-train"
    root.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(root, TRAIN_PHOTOS)
    for photo in TRAIN_PHOTOS:
        relpath = f"hr/{photo.name}.png"
        if not manifest.valid(relpath):
            write_image(root / relpath, read_image(_source(photo)))
            manifest.record(relpath)
    manifest.save()
    return root / "hr"


def mini_train_data(**options: Any) -> Any:
    """:func:`srkit.data.image_folders` on srkit-mini-train, validated on srkit-mini's 256-pixel HR crops (never trained
    on): ``srkit train data=mini_train``. ``options`` are image_folders' (crop, degradation, seed, ...)."""
    from . import image_folders

    options.setdefault("val_hr", str(mini_hr_folder(256)))
    return image_folders(str(mini_train_folder()), **options)
