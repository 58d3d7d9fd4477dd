"""Image files <-> tensors: validated reads, atomic writes, folder listing.

Every bad input raises :class:`~srkit.errors.InvalidImageError` with a message that names the
problem and the fix. Tensors are float32 ``(3, H, W)`` in [0, 1]; samples keep their full precision
(8-bit files map by /255, 16-bit files by /65535). Embedded ICC colour profiles of 8-bit images are
converted to sRGB on read. What a read or write changes about a file (a profile converted, a
profile it cannot apply) is logged as a one-line warning on the ``srkit.io`` logger.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import secrets
import shutil
import struct
import sys
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal

import numpy as np
import torch
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError
from .types import check_image_tensor

# Extension -> Pillow format, for both reading (list_images) and writing (write_image).
IMAGE_EXTENSIONS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}
# What list_images finds: the formats written, and GIF, which is read (its first frame) but never written.
READ_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif")
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")  # Pillow writes BMP's alpha as RGB and JPEG has none
AlphaMode = Literal["white", "black", "drop", "error"]
_ALPHA_MODES = ("white", "black", "drop", "error")
_TOLERANCE = 1e-3  # float samples this far outside [0, 1] are clamped, further ones rejected
# Full chroma and high quality: outputs of super-resolution are mostly judged on fine detail.
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}, "TIFF": {"compression": "tiff_deflate"}}
# 8-bit modes: the mode their samples are read in (gray, gray+alpha, RGB or RGBA) and what the file stores.
_EIGHT_BIT_MODES = {
    "1": ("L", "gray"), "L": ("L", "gray"), "LA": ("LA", "gray+alpha"), "La": ("LA", "gray+alpha"),
    "P": ("RGB", "palette"), "PA": ("RGBA", "palette+alpha"), "RGB": ("RGB", "RGB"), "RGBX": ("RGB", "RGB"),
    "RGBA": ("RGBA", "RGBA"), "RGBa": ("RGBA", "RGBA"), "CMYK": ("RGB", "CMYK"), "YCbCr": ("RGB", "YCbCr"),
    "HSV": ("RGB", "HSV"),
}
_CHANNEL_KINDS = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}
_WIDE_RAWMODE = re.compile(r"(RGBA?|RGBX);16([BLN])")  # 16-bit colour that Pillow unpacks to 8 bits
_OTHER_BYTE = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_PIXEL_LIMIT_LOCK = threading.Lock()
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # atomic_file's temporary files: .NAME.<12 hex digits>.tmp
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedImage:
    """An image file as :func:`decode_image` reads it: sRGB colour, its alpha kept apart, and what the file stored.

    The samples stay in the file's integer type (a quarter of float32's memory for 8-bit files); :attr:`color` and
    :attr:`alpha` convert them whole, :meth:`crop` a region (an :class:`srkit.types.ImageSource` for
    :meth:`SRMethod.sr_rows`, which converts tile by tile).
    """

    samples: np.ndarray  # (H, W, C): C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; uint8, uint16 or float32 in [0, 1]
    bits: int  # bits per sample in the file: 1, 8, 16 or 32
    format: str  # what the file stores, e.g. "8-bit palette", "16-bit gray+alpha" (see image_format)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(1, 3, H, W): the colour as one image batch."""
        return (1, 3, *self.samples.shape[:2])

    @property
    def has_alpha(self) -> bool:
        return self.samples.shape[-1] in (2, 4)

    def crop(self, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """The colour of a region as float32 (1, 3, height, width) in [0, 1]; gray replicated to three channels."""
        region = self.samples[top : top + height, left : left + width, : 3 if self.samples.shape[-1] > 2 else 1]
        color = _to_float(region)
        return color.expand(3, -1, -1)[None] if color.shape[0] == 1 else color[None]

    def crop_alpha(self, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """The alpha of a region as float32 (1, 1, height, width) in [0, 1] (the file must have one)."""
        return _to_float(self.samples[top : top + height, left : left + width, -1:])[None]

    @property
    def color(self) -> torch.Tensor:
        """float32 (3, H, W) in [0, 1]; gray replicated to three channels."""
        return self.crop(0, 0, *self.samples.shape[:2])[0].contiguous()

    @property
    def alpha(self) -> torch.Tensor | None:
        """float32 (1, H, W) in [0, 1]; None when the file has no alpha channel."""
        return self.crop_alpha(0, 0, *self.samples.shape[:2])[0] if self.has_alpha else None

    @property
    def write_bits(self) -> int:
        """The PNG bit depth that keeps every sample of the file: 16 for files with more than 8 bits."""
        return 16 if self.bits > 8 else 8


def image_format(bits: int, channels: int) -> str:
    """How formats are named in messages: ``image_format(16, 4) == "16-bit RGBA"``; channels 1 to 4."""
    return f"{bits}-bit {_CHANNEL_KINDS[channels]}"


def read_image(
    path: str | os.PathLike[str], *, alpha: AlphaMode = "white", max_pixels: int | None = 2**28
) -> torch.Tensor:
    """Read an image file as a float32 ``(3, H, W)`` tensor in [0, 1].

    PNG, JPEG, WebP, TIFF, BMP and GIF, 8- or 16-bit, are supported (other formats Pillow opens are
    read too); the EXIF orientation is applied and an embedded ICC profile converted to sRGB (8-bit
    images; see :func:`decode_image`). Gray is replicated to three channels; palette,
    CMYK and YCbCr images are converted to RGB. 32-bit float ('F') images are read as intensities
    in [0, 1] and rejected outside it. Of a multi-frame file (animated GIF/WebP/PNG, multi-page
    TIFF) the first frame is read.

    ``alpha`` says what to do with transparency: composite over ``"white"`` (default) or
    ``"black"``, ``"drop"`` the alpha channel, or raise (``"error"``) if any pixel is not opaque;
    :func:`decode_image` keeps it instead.
    ``max_pixels`` guards against decompression bombs (``None`` disables it); it replaces
    Pillow's own global limit. Truncated files raise unless the process has set Pillow's
    ``ImageFile.LOAD_TRUNCATED_IMAGES``; a file whose pixel data is complete is accepted.
    """
    if alpha not in _ALPHA_MODES:
        raise InvalidImageError(f"alpha must be one of {', '.join(map(repr, _ALPHA_MODES))}, got {alpha!r}")
    image = decode_image(path, max_pixels=max_pixels)
    color, opacity = image.color, image.alpha
    if opacity is None or alpha == "drop":
        return color
    if alpha == "error":
        if (opacity < 1).any():
            raise InvalidImageError(
                f"{path} has transparent pixels and alpha='error'; "
                "pass alpha='white', 'black' or 'drop' to say how to flatten it"
            )
        return color
    return color * opacity + (1 - opacity) if alpha == "white" else color * opacity


def decode_image(path: str | os.PathLike[str], *, max_pixels: int | None = 2**28) -> DecodedImage:
    """Read an image file as :func:`read_image` does, keeping its alpha channel and saying what it stored.

    An embedded ICC profile that is not sRGB is converted to sRGB (Pillow's ImageCms) with a warning;
    Pillow converts 8-bit images only, so a profile of a 16- or 32-bit file is left unapplied, with a warning.
    """
    path = _existing_file(path)
    samples, bits, kind = _samples(path, max_pixels)
    return DecodedImage(samples, bits, f"{bits}-bit {kind}")


def _to_float(samples: np.ndarray) -> torch.Tensor:
    """(h, w, c) samples as float32 (c, h, w) in [0, 1]: 8-bit by /255, 16-bit by /65535, floats as they are."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(samples.dtype, 1.0)
    return torch.from_numpy(np.ascontiguousarray(samples.transpose(2, 0, 1), dtype=np.float32) / np.float32(scale))


def write_image(
    path: str | os.PathLike[str], image: torch.Tensor, *, bits: int = 8, alpha: torch.Tensor | None = None
) -> Path:
    """Write a ``(3, H, W)``, ``(1, 3, H, W)`` or gray ``(1, H, W)`` tensor in [0, 1]; return the path.

    The format follows the extension (PNG, JPEG, WebP, TIFF, BMP); ``bits=16`` needs PNG. ``alpha``
    (``(1, H, W)`` in [0, 1]) is written as the alpha channel (RGBA or gray+alpha; PNG, WebP or TIFF).
    Samples are rounded (``x * 255`` or ``x * 65535``); values within 1e-3 outside [0, 1] are clamped.
    The write is atomic (:func:`atomic_file`): a failure leaves neither a partial file nor a changed
    target. Missing parent folders are created.
    """
    path = Path(path)
    fmt = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidImageError(
            f"cannot write {path.name!r}: unsupported extension {path.suffix!r}; "
            f"use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    if bits not in (8, 16):
        raise InvalidImageError(f"bits must be 8 or 16, got {bits!r}")
    if bits == 16 and fmt != "PNG":
        raise InvalidImageError(f"{fmt} cannot store 16-bit samples; write a .png file or pass bits=8")
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        raise InvalidImageError(
            f"{fmt} cannot store an alpha channel; write a .png, .webp or .tif file, or flatten the alpha first"
        )
    samples = to_samples(image, bits, alpha)
    _prepare_target(path)
    with atomic_file(path) as file:
        _encode(file, samples, fmt)
    return path


def _prepare_target(path: Path) -> None:
    """Check that ``path`` can be written as a file and create its missing parent folders."""
    if path.is_dir():
        raise InvalidImageError(f"{path} is a directory; pass a file name such as {path / 'out.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidImageError(f"cannot create the folder {path.parent}: {e.strerror}; choose another output path") from e


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file beside it, synced and renamed over it on success.

    A failure removes the temporary file and leaves ``path`` as it was; an OS error (permissions, a full
    disk) is re-raised as an :class:`InvalidImageError` naming the path. A process killed mid-write leaves
    the temporary file behind; :func:`remove_partial_writes` deletes such files.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as file:  # not mkstemp: its 0600 mode would end up on the target
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as e:
        temp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InvalidImageError(
                f"cannot write {path}: {e.strerror or e}; check the folder's permissions and free space, or write elsewhere"
            ) from e
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`: a reader sees the old file or the new one."""
    with atomic_file(path) as file:
        file.write(text.encode("utf-8"))


def copy_file_atomic(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy ``source`` to ``target`` through :func:`atomic_file` (an interrupted copy leaves ``target`` as it was)."""
    with open(source, "rb") as reader, atomic_file(target) as file:
        shutil.copyfileobj(reader, file)


def remove_partial_writes(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Delete the temporary files that :func:`atomic_file` leaves in ``folder`` when killed mid-write; return them."""
    folder = Path(folder)
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    partial = [path for path in candidates if _TEMP_NAME.fullmatch(path.name) and path.is_file()]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (by extension, case-insensitive: :data:`READ_EXTENSIONS`), sorted.

    Hidden files and folders (names starting with '.', e.g. macOS '._x.png') are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is a file, not a folder; use read_image() for one file" if folder.exists() else "does not exist (check the path)"
        raise InvalidImageError(f"{folder} {problem}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(
        p for p in candidates
        if p.suffix.lower() in READ_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )
    if not images:
        hint = "" if recursive else "; pass recursive=True to search subfolders"
        raise InvalidImageError(f"no images in {folder} (looked for {', '.join(READ_EXTENSIONS)}){hint}")
    return images


def _existing_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise InvalidImageError(f"no such file: {path} (check the path)")
    if path.is_dir():
        raise InvalidImageError(f"{path} is a directory, not an image file; use list_images() for folders")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"{path} is empty (0 bytes); it was not written completely: re-export or re-download it")
    return path


def _samples(path: Path, max_pixels: int | None) -> tuple[np.ndarray, int, str]:
    """The first frame as ``(H, W, C)`` samples, C being 1 (gray), 2 (gray+alpha), 3 or 4: uint8 for files of up to
    8 bits, uint16 for 16-bit files, float32 in [0, 1] for 32-bit ones; with the file's bits per sample and what it
    stores (``"RGB"``, ``"palette"``, ...)."""
    image, rawmode = _load(path, max_pixels)
    icc = image.info.get("icc_profile")
    wide = _wide_samples(path, image, rawmode, max_pixels)
    if wide is None:
        return _eight_bit_samples(path, image, icc)
    if icc and (foreign := _foreign_profile(path, icc)):
        log.warning("%s: its ICC profile %r is not applied (Pillow converts 8-bit images only); read as sRGB", path, foreign[1])
    return wide


def _wide_samples(
    path: Path, image: Image.Image, rawmode: str, max_pixels: int | None
) -> tuple[np.ndarray, int, str] | None:
    """The samples of a file with more than 8 bits per sample (16-bit, 32-bit integer or float); None for others."""
    # Pillow unpacks 16-bit colour and gray+alpha to 8 bits; decoding the same bytes again with
    # another unpacker recovers the low bytes, with Pillow's own decompression and filtering.
    if rawmode == "LA;16B":  # PNG gray+alpha: 4 bytes a pixel, read whole as (gray_hi, gray_lo, alpha_hi, alpha_lo)
        raw = np.asarray(_load(path, max_pixels, "RGBA")[0], np.uint16)
        return raw[..., 0::2] << 8 | raw[..., 1::2], 16, "gray+alpha"
    if wide := _WIDE_RAWMODE.fullmatch(rawmode):
        low = _load(path, max_pixels, f"{wide[1]};16{_OTHER_BYTE[wide[2]]}")[0]
        samples = np.asarray(image, np.uint16) << 8 | np.asarray(low, np.uint16)
        return samples, 16, _CHANNEL_KINDS[samples.shape[-1]]
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        samples = np.asarray(image)
        if mode == "I" and (samples.min() < 0 or samples.max() > 65535):
            raise InvalidImageError(
                f"{path} has 32-bit integer samples outside 0..65535; save it as an 8- or 16-bit image"
            )
        return np.atleast_3d(samples.astype(np.uint16)), 16 if mode.startswith("I;16") else 32, "gray"
    if mode == "F":
        samples = np.asarray(image, np.float32)
        if not np.isfinite(samples).all():
            raise InvalidImageError(f"{path} has NaN or infinite float samples; fix or re-export the file")
        lo, hi = float(samples.min()), float(samples.max())
        if lo < -_TOLERANCE or hi > 1 + _TOLERANCE:
            raise InvalidImageError(
                f"{path} has float samples in [{lo:.3g}, {hi:.3g}], outside [0, 1]; "
                "rescale them to [0, 1] or save the image as 8- or 16-bit"
            )
        return np.atleast_3d(samples.clip(0, 1)), 32, "float gray"
    return None


def _eight_bit_samples(path: Path, image: Image.Image, icc: bytes | None) -> tuple[np.ndarray, int, str]:
    if image.mode not in _EIGHT_BIT_MODES:
        raise InvalidImageError(
            f"{path} has unsupported color mode {image.mode!r}; convert it to RGB, e.g. with "
            "PIL.Image.open(path).convert('RGB').save(...)"
        )
    target, kind = _EIGHT_BIT_MODES[image.mode]
    if "transparency" in image.info:
        target, kind = "RGBA", f"{kind}+transparency"
    bits = 1 if image.mode == "1" else 8
    if image.mode != "CMYK":  # CMYK goes to RGB through its profile where it has one
        image = image.convert(target)
    if icc:
        image = _to_srgb(path, image, icc)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert(target)
    return np.atleast_3d(np.asarray(image, np.uint8)), bits, kind


def _foreign_profile(path: Path, icc: bytes) -> tuple[ImageCms.ImageCmsProfile, str] | None:
    """An embedded ICC profile that is not sRGB, with its description; None for sRGB (or an unreadable profile,
    with a warning)."""
    try:
        return _parse_profile(icc)
    except (OSError, ImageCms.PyCMSError) as e:
        log.warning("%s: its ICC profile cannot be read (%s); read as sRGB", path, e)
        return None


@functools.lru_cache(maxsize=8)  # the photos of one camera or export share a profile
def _parse_profile(icc: bytes) -> tuple[ImageCms.ImageCmsProfile, str] | None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    name = ImageCms.getProfileDescription(profile).strip() or "(unnamed)"
    if profile.profile.xcolor_space.strip() == "RGB":
        # sRGB by what it does, not by its name: the variants of sRGB ("IEC61966-2.1", "built-in", ...) map colours
        # to sRGB within rounding, and converting them would only add that rounding to every sample.
        grid = np.stack(np.meshgrid(*[np.linspace(0, 255, 9).round()] * 3, indexing="ij"), -1).reshape(1, -1, 3)
        mapped = ImageCms.profileToProfile(Image.fromarray(grid.astype(np.uint8)), profile, _SRGB, outputMode="RGB")
        assert mapped is not None  # profileToProfile returns None only when converting in place
        if np.abs(np.asarray(mapped, np.int16) - grid).max() <= 1:
            return None
    return profile, name


def _to_srgb(path: Path, image: Image.Image, icc: bytes) -> Image.Image:
    """``image`` (L, LA, RGB, RGBA or CMYK) converted from its ICC profile to sRGB (RGB or RGBA); unchanged when
    the profile is sRGB, and with a warning when it cannot be applied."""
    if (foreign := _foreign_profile(path, icc)) is None:
        return image
    profile, name = foreign
    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA") else None
    color = image.convert(image.mode.removesuffix("A")) if alpha is not None else image
    try:
        converted = ImageCms.profileToProfile(color, profile, _SRGB, outputMode="RGB")
    except ImageCms.PyCMSError as e:
        log.warning("%s: its ICC profile %r cannot be applied to this %s image (%s); read as sRGB", path, name, image.mode, e)
        return image
    assert converted is not None  # profileToProfile returns None only when converting in place
    log.warning("%s: converted from its ICC profile %r to sRGB", path, name)
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _load(path: Path, max_pixels: int | None, rawmode: str | None = None) -> tuple[Image.Image, str]:
    """Decode the first frame, upright per its EXIF orientation, and the rawmode Pillow chose for it.

    ``rawmode`` replaces Pillow's choice of how to unpack the decoded bytes into pixels.
    """
    try:
        # max_pixels takes over from Pillow's global limit, which would cap it at ~179 MP.
        with _PIXEL_LIMIT_LOCK:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except PermissionError as e:
        raise InvalidImageError(f"cannot read {path}: permission denied; check the file's permissions") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError(
            f"{path} is not an image Pillow can read (unknown format or broken header); "
            f"use a valid {', '.join(sorted(set(IMAGE_EXTENSIONS.values())))} file"
        ) from e
    except _DECODE_ERRORS as e:
        raise _corrupt(path, e) from e
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise InvalidImageError(
                f"{path} is {width}x{height} = {width * height:,} pixels, more than max_pixels={max_pixels:,} "
                "(a guard against decompression bombs); pass a larger max_pixels, or None, if you trust the file"
            )
        source = _rawmode(image.tile[0]) if image.tile else ""
        if rawmode is not None:
            image.tile = [t._replace(args=rawmode if isinstance(t.args, str) else (rawmode, *t.args[1:])) for t in image.tile]
        try:
            image.load()
            return ImageOps.exif_transpose(image), source
        except _DECODE_ERRORS as e:
            raise _corrupt(path, e) from e


def _rawmode(tile: ImageFile._Tile) -> str:
    """How Pillow unpacks a tile's bytes into pixels, e.g. 'RGB;16B' (empty if the codec has none)."""
    rawmode = tile.args[0] if isinstance(tile.args, tuple) and tile.args else tile.args
    return rawmode if isinstance(rawmode, str) else ""


def _corrupt(path: Path, error: Exception) -> InvalidImageError:
    return InvalidImageError(f"cannot decode {path}: {error} (the file is truncated or corrupt; re-export or re-download it)")


def to_samples(image: torch.Tensor, bits: int, alpha: torch.Tensor | None = None) -> np.ndarray:
    """Validate ``image`` (and ``alpha``) and round them to ``(H, W, C)`` uint8 or uint16 samples, alpha last: what
    :func:`write_image` writes, and the bands :func:`write_png_rows` takes."""
    if not isinstance(image, torch.Tensor):
        raise InvalidImageError(
            f"image must be a torch.Tensor of shape (3, H, W), got {type(image).__name__}; "
            "convert arrays with torch.from_numpy(array).permute(2, 0, 1).float() / 255"
        )
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise InvalidImageError(
                f"image is a batch of {image.shape[0]}; write_image writes one image: pass image[i] for each i"
            )
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise InvalidImageError(
            f"image must have shape (3, H, W), (1, 3, H, W) or gray (1, H, W), got {tuple(image.shape)}; "
            "for (H, W, 3) arrays use image.permute(2, 0, 1)"
        )
    check_image_tensor(image, name="image", channels=image.shape[0])
    if alpha is not None:
        if not isinstance(alpha, torch.Tensor) or alpha.shape != (1, *image.shape[1:]):
            shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
            raise InvalidImageError(f"alpha must be a (1, H, W) tensor of the image's size {(1, *image.shape[1:])}, got {shape}")
        check_image_tensor(alpha, name="alpha", channels=1)
        image = torch.cat([image, alpha.to(image)])
    scale, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    samples = (image.detach().to("cpu", torch.float32).clamp(0, 1) * scale).round()
    return samples.numpy().astype(dtype).transpose(1, 2, 0)


def _encode(file: BinaryIO, samples: np.ndarray, fmt: str) -> None:
    """Encode ``(H, W, C)`` samples into ``file``; uint16 samples are written as 16-bit PNG."""
    if samples.dtype == np.uint16:
        _write_png16(file, samples)
    else:
        Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples).save(file, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))


def _write_png16(file: BinaryIO, samples: np.ndarray) -> None:
    """A 16-bit gray, gray+alpha, RGB or RGBA PNG, which Pillow cannot write (it has no 16-bit colour modes)."""
    writer = PNGRowWriter(file, width=samples.shape[1], height=samples.shape[0], channels=samples.shape[2], bits=16)
    writer.write(samples)
    writer.close()


class PNGRowWriter:
    """A PNG encoded band by band: :meth:`write` takes ``(rows, W, C)`` uint8 or uint16 samples, top to bottom.

    Hand-written because Pillow encodes only whole images (and no 16-bit colour); the format is PNG's own
    (RFC 2083): IHDR, zlib-compressed IDAT chunks of filtered rows, IEND. Every row uses the Paeth filter, which
    suits photographs; its prediction uses the unfiltered bytes, so a band is filtered at once in numpy.
    """

    _COLOR_TYPES: ClassVar[dict[int, int]] = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA

    def __init__(self, file: BinaryIO, *, width: int, height: int, channels: int, bits: int):
        if bits not in (8, 16) or channels not in self._COLOR_TYPES:
            raise InvalidImageError(f"PNG rows must be 8- or 16-bit with 1 to 4 channels, got {bits}-bit x {channels}")
        self.file, self.width, self.height, self.channels, self.bits = file, width, height, channels, bits
        self.rows_written = 0
        self._dtype = np.dtype(">u2") if bits == 16 else np.dtype(np.uint8)
        self._previous = np.zeros(width * channels * self._dtype.itemsize, np.uint8)  # the row above the first: zeros
        self._compressor = zlib.compressobj(6)
        file.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, self._COLOR_TYPES[channels], 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.file.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    def write(self, samples: np.ndarray) -> None:
        """Append rows: ``(n, width, channels)`` samples of the writer's bit depth."""
        if samples.ndim != 3 or samples.shape[1:] != (self.width, self.channels):
            raise InvalidImageError(f"PNG rows of shape {samples.shape} do not fit a {self.width} x {self.channels} image")
        if self.rows_written + samples.shape[0] > self.height:
            raise InvalidImageError(f"more than the {self.height} rows the PNG header declares")
        raw = np.ascontiguousarray(samples.astype(self._dtype)).view(np.uint8).reshape(samples.shape[0], -1)
        up = np.concatenate([self._previous[None], raw[:-1]]).astype(np.int16)
        pixel = self.channels * self._dtype.itemsize  # Paeth's "left" is the same byte of the previous pixel
        left = np.zeros_like(up)
        left[:, pixel:] = raw[:, :-pixel]
        up_left = np.zeros_like(up)
        up_left[:, pixel:] = up[:, :-pixel]
        estimate = left + up - up_left
        distance_left, distance_up, distance_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
        predicted = np.where((distance_left <= distance_up) & (distance_left <= distance_up_left), left,
                             np.where(distance_up <= distance_up_left, up, up_left))
        filtered = np.empty((raw.shape[0], raw.shape[1] + 1), np.uint8)
        filtered[:, 0] = 4  # filter type Paeth
        filtered[:, 1:] = (raw.astype(np.int16) - predicted).astype(np.uint8)  # modulo 256
        data = self._compressor.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)
        self._previous = raw[-1].copy()
        self.rows_written += samples.shape[0]

    def close(self) -> None:
        """Flush the compressor and end the file; every declared row must have been written."""
        if self.rows_written != self.height:
            raise InvalidImageError(f"{self.rows_written} of the {self.height} rows the PNG header declares were written")
        self._chunk(b"IDAT", self._compressor.flush())
        self._chunk(b"IEND", b"")


def write_png_rows(
    path: str | os.PathLike[str],
    bands: Iterable[np.ndarray],
    *,
    width: int,
    height: int,
    channels: int,
    bits: int = 8,
) -> Path:
    """Write a PNG from ``(rows, width, channels)`` uint8/uint16 sample bands, top to bottom, atomically
    (:func:`atomic_file`); memory holds one band, so images larger than memory can be written."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidImageError(f"write_png_rows writes PNG files; {path.name!r} has the extension {path.suffix!r}")
    _prepare_target(path)
    with atomic_file(path) as file:
        writer = PNGRowWriter(file, width=width, height=height, channels=channels, bits=bits)
        for band in bands:
            writer.write(band)
        writer.close()
    return path


__all__ = [
    "IMAGE_EXTENSIONS", "READ_EXTENSIONS", "AlphaMode", "DecodedImage", "PNGRowWriter", "atomic_file", "copy_file_atomic",
    "decode_image", "image_format", "list_images", "read_image", "remove_partial_writes", "to_samples", "write_image",
    "write_png_rows", "write_text_atomic",
]
