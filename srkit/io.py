"""Image files <-> tensors: validated reads, atomic writes, folder listing.

Every bad input raises :class:`~srkit.errors.InvalidImageError` with a message that names the
problem and the fix. Tensors are float32 ``(3, H, W)`` in [0, 1]; samples keep their full precision
(8-bit files map by /255, 16-bit files by /65535). Colour profiles are not applied.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
import sys
import threading
import zlib
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError
from .types import check_image_tensor

# Extension -> Pillow format, for both reading (list_images) and writing (write_image).
IMAGE_EXTENSIONS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}
AlphaMode = Literal["white", "black", "drop", "error"]
_ALPHA_MODES = ("white", "black", "drop", "error")
_TOLERANCE = 1e-3  # float samples this far outside [0, 1] are clamped, further ones rejected
# Full chroma and high quality: outputs of super-resolution are mostly judged on fine detail.
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}, "TIFF": {"compression": "tiff_deflate"}}
# 8-bit modes and the mode their samples are read in: gray, gray+alpha, RGB or RGBA.
_EIGHT_BIT_MODES = {
    "1": "L", "L": "L", "LA": "LA", "La": "LA", "P": "RGB", "PA": "RGBA", "RGB": "RGB", "RGBX": "RGB",
    "RGBA": "RGBA", "RGBa": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "HSV": "RGB",
}
_WIDE_RAWMODE = re.compile(r"(RGBA?|RGBX);16([BLN])")  # 16-bit colour that Pillow unpacks to 8 bits
_OTHER_BYTE = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_PIXEL_LIMIT_LOCK = threading.Lock()
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


def read_image(
    path: str | os.PathLike[str], *, alpha: AlphaMode = "white", max_pixels: int | None = 2**28
) -> torch.Tensor:
    """Read an image file as a float32 ``(3, H, W)`` tensor in [0, 1].

    PNG, JPEG, WebP, TIFF and BMP, 8- or 16-bit, are supported (other formats Pillow opens are
    read too); the EXIF orientation is applied. Gray is replicated to three channels; palette,
    CMYK and YCbCr images are converted to RGB. 32-bit float ('F') images are read as intensities
    in [0, 1] and rejected outside it. Of a multi-frame file (animated GIF/WebP/PNG, multi-page
    TIFF) the first frame is read.

    ``alpha`` says what to do with transparency: composite over ``"white"`` (default) or
    ``"black"``, ``"drop"`` the alpha channel, or raise (``"error"``) if any pixel is not opaque.
    ``max_pixels`` guards against decompression bombs (``None`` disables it); it replaces
    Pillow's own global limit. Truncated files raise unless the process has set Pillow's
    ``ImageFile.LOAD_TRUNCATED_IMAGES``; a file whose pixel data is complete is accepted.
    """
    if alpha not in _ALPHA_MODES:
        raise InvalidImageError(f"alpha must be one of {', '.join(map(repr, _ALPHA_MODES))}, got {alpha!r}")
    path = _existing_file(path)
    samples = _samples(path, max_pixels)
    if samples.shape[-1] in (2, 4):
        samples, opacity = samples[..., :-1], samples[..., -1:]
        if alpha == "error" and (opacity < 1).any():
            raise InvalidImageError(
                f"{path} has transparent pixels and alpha='error'; "
                "pass alpha='white', 'black' or 'drop' to say how to flatten it"
            )
        if alpha == "white":
            samples = samples * opacity + (1 - opacity)
        elif alpha == "black":
            samples = samples * opacity
    if samples.shape[-1] == 1:
        samples = np.repeat(samples, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(samples.transpose(2, 0, 1), dtype=np.float32))


def write_image(path: str | os.PathLike[str], image: torch.Tensor, *, bits: int = 8) -> Path:
    """Write a ``(3, H, W)``, ``(1, 3, H, W)`` or gray ``(1, H, W)`` tensor in [0, 1]; return the path.

    The format follows the extension (PNG, JPEG, WebP, TIFF, BMP); ``bits=16`` needs PNG. Samples
    are rounded (``x * 255`` or ``x * 65535``); values within 1e-3 outside [0, 1] are clamped.
    The write is atomic: the file is encoded to a temporary file beside the target, synced and
    renamed over it, so a failure leaves neither a partial file nor a changed target. Missing
    parent folders are created.
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
    samples = _quantize(image, bits)
    if path.is_dir():
        raise InvalidImageError(f"{path} is a directory; pass a file name such as {path / 'out.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidImageError(f"cannot create the folder {path.parent}: {e.strerror}; choose another output path") from e
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as file:  # not mkstemp: its 0600 mode would end up on the target
            _encode(file, samples, fmt)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder``, by extension (case-insensitive), sorted.

    Hidden files and folders (names starting with '.', e.g. macOS '._x.png') are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is a file, not a folder; use read_image() for one file" if folder.exists() else "does not exist (check the path)"
        raise InvalidImageError(f"{folder} {problem}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(
        p for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )
    if not images:
        hint = "" if recursive else "; pass recursive=True to search subfolders"
        raise InvalidImageError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}){hint}")
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


def _samples(path: Path, max_pixels: int | None) -> np.ndarray:
    """The first frame as float32 ``(H, W, C)`` in [0, 1], C being 1 (gray), 2 (gray+alpha), 3 or 4."""
    image, rawmode = _load(path, max_pixels)
    # Pillow unpacks 16-bit colour and gray+alpha to 8 bits; decoding the same bytes again with
    # another unpacker recovers the low bytes, with Pillow's own decompression and filtering.
    if rawmode == "LA;16B":  # PNG gray+alpha: 4 bytes a pixel, read whole as (gray_hi, gray_lo, alpha_hi, alpha_lo)
        raw = np.asarray(_load(path, max_pixels, "RGBA")[0], np.uint16)
        return (raw[..., 0::2] << 8 | raw[..., 1::2]).astype(np.float32) / 65535
    if wide := _WIDE_RAWMODE.fullmatch(rawmode):
        low = _load(path, max_pixels, f"{wide[1]};16{_OTHER_BYTE[wide[2]]}")[0]
        return (np.asarray(image, np.uint16) << 8 | np.asarray(low, np.uint16)).astype(np.float32) / 65535
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        samples = np.asarray(image).astype(np.float32)
        if mode == "I" and (samples.min() < 0 or samples.max() > 65535):
            raise InvalidImageError(
                f"{path} has 32-bit integer samples outside 0..65535; save it as an 8- or 16-bit image"
            )
        return np.atleast_3d(samples / 65535)
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
        return np.atleast_3d(samples.clip(0, 1))
    target = "RGBA" if "transparency" in image.info else _EIGHT_BIT_MODES.get(mode)
    if target is None:
        raise InvalidImageError(
            f"{path} has unsupported color mode {mode!r}; convert it to RGB, e.g. with "
            "PIL.Image.open(path).convert('RGB').save(...)"
        )
    return np.atleast_3d(np.asarray(image.convert(target), np.float32) / 255)


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


def _quantize(image: torch.Tensor, bits: int) -> np.ndarray:
    """Validate ``image`` and round it to ``(H, W, C)`` uint8 or uint16 samples."""
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
    """A 16-bit gray or RGB PNG, which Pillow cannot write (it has no 16-bit RGB mode)."""
    height, width, channels = samples.shape
    rows = np.zeros((height, 1 + 2 * width * channels), np.uint8)  # column 0: filter type 0 (none)
    rows[:, 1:] = samples.astype(">u2").reshape(height, -1).view(np.uint8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    color_type = 0 if channels == 1 else 2
    file.write(b"\x89PNG\r\n\x1a\n")
    file.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)))
    file.write(chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
    file.write(chunk(b"IEND", b""))


__all__ = ["IMAGE_EXTENSIONS", "AlphaMode", "list_images", "read_image", "write_image"]
