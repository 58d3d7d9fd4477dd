"""srkit.io: reading, atomic writing and listing image files; all inputs are built here."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import srkit.io as sio
from srkit.errors import InvalidImageError
from srkit.io import decode_image, list_images, read_image, remove_partial_writes, write_image

RNG = np.random.default_rng(0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16(path: Path, samples: np.ndarray, *, size: tuple[int, int] | None = None, icc: bytes | None = None) -> Path:
    """A 16-bit PNG of (H, W, C) uint16 samples: gray, gray+alpha, RGB or RGBA; ``icc``: an embedded profile."""
    h, w, c = samples.shape
    rows = np.zeros((h, 1 + 2 * w * c), np.uint8)
    rows[:, 1:] = samples.astype(">u2").reshape(h, -1).view(np.uint8)
    w, h = size or (w, h)
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    profile = _png_chunk(b"iCCP", b"test\0\0" + zlib.compress(icc)) if icc else b""
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + profile
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes())) + _png_chunk(b"IEND", b"")
    )
    return path


def _linear_rgb_profile() -> bytes:
    """An ICC v2 RGB matrix/TRC profile with sRGB's primaries (adapted to D50) and gamma 1.0: linear light.

    Written here because no RGB profile other than sRGB ships offline (Pillow creates sRGB, LAB and XYZ only).
    """

    def s15f16(*values: float) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15f16(x, y, z)

    text = b"Linear RGB\0"
    description = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    gamma_one = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0100)
    tags = [(b"desc", description), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", gamma_one), (b"gTRC", gamma_one), (b"bTRC", gamma_one)]
    table, data, start = [], b"", 128 + 4 + 12 * len(tags)
    for signature, body in tags:
        body += bytes(-len(body) % 4)  # tag data is 4-byte aligned
        table.append(struct.pack(">4sII", signature, start + len(data), len(body)))
        data += body
    header = (struct.pack(">I4sI", start + len(data), bytes(4), 0x02100000) + b"mntrRGB XYZ " + bytes(12) + b"acsp"
              + bytes(28) + s15f16(0.9642, 1.0, 0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


def _tiff16(path: Path, samples: np.ndarray, *, order: str = "<", deflate: bool = False) -> Path:
    """A one-strip baseline TIFF of (H, W, 3 or 4) uint16 samples (Pillow cannot write these)."""
    h, w, c = samples.shape
    data = samples.astype(f"{order}u2").tobytes()
    data = zlib.compress(data) if deflate else data
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, None), (259, 3, 1, 8 if deflate else 1), (262, 3, 1, 2),
            (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data))]
    if c == 4:
        tags.append((338, 3, 1, 2))  # extra sample: unassociated alpha
    bits_at = 8 + 2 + 12 * len(tags) + 4
    out = [b"II*\x00" if order == "<" else b"MM\x00*", struct.pack(order + "IH", 8, len(tags))]
    for tag, kind, count, value in tags:
        value = bits_at if tag == 258 else bits_at + 2 * c if tag == 273 else value
        field = struct.pack(order + "HH", value, 0) if kind == 3 and count == 1 else struct.pack(order + "I", value)
        out.append(struct.pack(order + "HHI", tag, kind, count) + field)
    out += [struct.pack(order + "I", 0), struct.pack(f"{order}{c}H", *[16] * c), data]
    path.write_bytes(b"".join(out))
    return path


def _tensor(samples: np.ndarray, scale: int) -> torch.Tensor:
    return torch.from_numpy(samples.astype(np.float32) / scale).permute(2, 0, 1)


# --------------------------------------------------------------------------------------------
# Reading


def test_png_8bit_round_trip_is_exact(tmp_path):
    samples = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    image = _tensor(samples, 255)
    path = write_image(tmp_path / "x.png", image)
    assert path == tmp_path / "x.png"
    assert np.array_equal(np.asarray(Image.open(path)), samples)
    out = read_image(path)
    assert out.dtype == torch.float32 and out.shape == (3, 9, 13)
    assert torch.equal(out, image)


def test_png_16bit_round_trip_keeps_values_8bit_cannot(tmp_path):
    samples = RNG.integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    image = _tensor(samples, 65535)
    assert not torch.equal((image * 255).round() / 255, image)  # these values need 16 bits
    path = write_image(tmp_path / "x.png", image, bits=16)
    assert np.array_equal(np.asarray(Image.open(path)), samples >> 8)  # a valid PNG: Pillow reads its high bytes
    assert torch.equal(read_image(path), image)


def test_png_16bit_gray_round_trip(tmp_path):
    samples = RNG.integers(0, 65536, (6, 5, 1), dtype=np.uint16)
    path = write_image(tmp_path / "g.png", _tensor(samples, 65535), bits=16)
    assert Image.open(path).mode == "I;16"
    assert torch.equal(read_image(path), _tensor(samples, 65535).expand(3, -1, -1))


@pytest.mark.parametrize("channels", [2, 4])
def test_png_16bit_with_alpha_reads_full_precision(tmp_path, channels):
    samples = RNG.integers(0, 65536, (4, 6, channels), dtype=np.uint16)
    samples[..., -1] = 65535
    samples[0, 0, -1] = 1234
    out = read_image(_png16(tmp_path / "a.png", samples), alpha="drop")
    color = _tensor(samples[..., :-1], 65535)
    assert torch.equal(out, color.expand(3, -1, -1))
    opacity = 1234 / 65535
    white = read_image(tmp_path / "a.png")
    assert torch.allclose(white[:, 0, 0], color[:, 0, 0] * opacity + 1 - opacity, atol=1e-6)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("deflate", [False, True], ids=["raw", "deflate"])
@pytest.mark.parametrize("channels", [3, 4])
def test_tiff_16bit_reads_full_precision(tmp_path, order, deflate, channels):
    samples = RNG.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    samples[..., 3:] = 65535
    path = _tiff16(tmp_path / "x.tif", samples, order=order, deflate=deflate)
    assert torch.equal(read_image(path), _tensor(samples[..., :3], 65535))


def test_tiff_float_reads_as_intensities(tmp_path):
    samples = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    samples[0, 0] = 1 + 5e-4  # within tolerance: clamped
    Image.fromarray(samples, mode="F").save(tmp_path / "f.tif")
    out = read_image(tmp_path / "f.tif")
    assert torch.equal(out, torch.from_numpy(samples.clip(0, 1)).expand(3, -1, -1))


def test_gray_is_replicated_to_three_channels(tmp_path):
    samples = np.array([[0, 51, 255]], np.uint8)
    Image.fromarray(samples).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 1, 3)
    assert torch.equal(out, torch.tensor([0.0, 51 / 255, 1.0]).view(1, 1, 3).expand(3, 1, 3))


def test_rgba_alpha_options(tmp_path):
    Image.fromarray(np.array([[[200, 100, 0, 51], [10, 20, 30, 255]]], np.uint8), "RGBA").save(tmp_path / "a.png")
    color, a = torch.tensor([200, 100, 0]) / 255, 51 / 255
    white, black, drop = (read_image(tmp_path / "a.png", alpha=mode) for mode in ("white", "black", "drop"))
    assert torch.allclose(white[:, 0, 0], color * a + (1 - a), atol=1e-6)
    assert torch.allclose(black[:, 0, 0], color * a, atol=1e-6)
    assert torch.allclose(drop[:, 0, 0], color)
    assert torch.allclose(white[:, 0, 1], torch.tensor([10, 20, 30]) / 255)  # opaque pixels are unchanged


def test_gray_alpha_and_opaque_rgba_with_alpha_error(tmp_path):
    Image.fromarray(np.array([[[100, 0], [100, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert torch.allclose(read_image(tmp_path / "la.png")[:, 0], torch.tensor([[1.0, 100 / 255]] * 3))
    Image.new("RGBA", (2, 2), (1, 2, 3, 255)).save(tmp_path / "opaque.png")
    assert torch.allclose(read_image(tmp_path / "opaque.png", alpha="error")[:, 0, 0], torch.tensor([1, 2, 3]) / 255)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1])
    image.save(tmp_path / "p.png", transparency=1)
    out = read_image(tmp_path / "p.png", alpha="black")
    assert torch.equal(out[:, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))


def test_cmyk_is_converted(tmp_path):
    Image.new("CMYK", (2, 2), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    assert torch.equal(read_image(tmp_path / "c.tif")[:, 0, 0], torch.tensor([0.0, 1.0, 1.0]))


def test_exif_orientation_is_applied(tmp_path):
    samples = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display rotates 90 degrees clockwise
    Image.fromarray(samples).save(tmp_path / "o.png", exif=exif)
    out = read_image(tmp_path / "o.png")
    assert torch.equal(out[0], torch.from_numpy(np.rot90(samples, k=-1).astype(np.float32) / 255))


def test_jpeg_and_webp_read_and_write(tmp_path):
    Image.new("RGB", (16, 16), (200, 50, 100)).save(tmp_path / "in.jpg", quality=95)
    expected = torch.tensor([200, 50, 100]).view(3, 1, 1) / 255
    assert (read_image(tmp_path / "in.jpg") - expected).abs().max() < 3 / 255
    samples = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(samples).save(tmp_path / "in.webp", lossless=True)
    assert torch.equal(read_image(tmp_path / "in.webp"), _tensor(samples, 255))
    for name in ("out.jpg", "out.webp"):
        assert (read_image(write_image(tmp_path / name, expected.expand(3, 16, 16))) - expected).abs().max() < 3 / 255


def test_tiff_and_bmp_8bit_round_trip(tmp_path):
    image = _tensor(RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8), 255)
    for name in ("x.tif", "x.TIFF", "x.bmp"):
        assert torch.equal(read_image(write_image(tmp_path / name, image)), image)


def test_animated_gif_reads_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "a.gif").n_frames == 2
    assert torch.equal(read_image(tmp_path / "a.gif")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_decode_image_keeps_alpha_and_says_what_the_file_stored(tmp_path):
    rgba = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = decode_image(tmp_path / "rgba.png")
    assert torch.equal(image.color, _tensor(rgba[..., :3], 255)) and torch.equal(image.alpha, _tensor(rgba[..., 3:], 255))
    assert (image.bits, image.format, image.write_bits) == (8, "8-bit RGBA", 8)
    samples = RNG.integers(0, 65536, (3, 4, 2), dtype=np.uint16)
    image = decode_image(_png16(tmp_path / "la16.png", samples))
    assert torch.equal(image.alpha, _tensor(samples[..., 1:], 65535))
    assert (image.format, image.write_bits) == ("16-bit gray+alpha", 16)
    Image.new("P", (2, 2)).save(tmp_path / "p.gif")
    Image.new("L", (2, 2)).save(tmp_path / "g.png")
    formats = {name: decode_image(tmp_path / name) for name in ("p.gif", "g.png")}
    assert {name: (image.format, image.alpha) for name, image in formats.items()} == {
        "p.gif": ("8-bit palette", None), "g.png": ("8-bit gray", None)}
    write_image(tmp_path / "rgb16.png", GOOD, bits=16)
    assert decode_image(tmp_path / "rgb16.png").format == "16-bit RGB"


def test_a_foreign_icc_profile_is_converted_to_srgb(tmp_path, caplog):
    linear = _linear_rgb_profile()
    Image.fromarray(np.full((2, 3, 4), 128, np.uint8), "RGBA").save(tmp_path / "linear.png", icc_profile=linear)
    with caplog.at_level(logging.WARNING, logger="srkit.io"):
        image = decode_image(tmp_path / "linear.png")
    srgb = 1.055 * 0.5 ** (1 / 2.4) - 0.055  # linear 128/255 ~ 0.5 is sRGB 0.735 (188/255)
    assert (image.color - srgb).abs().max() < 1.5 / 255
    assert torch.equal(image.alpha, torch.full((1, 2, 3), 128 / 255))  # alpha is not a colour: kept as it is
    assert caplog.messages == [f"{tmp_path / 'linear.png'}: converted from its ICC profile 'Linear RGB' to sRGB"]


def test_an_srgb_profile_changes_nothing(tmp_path, caplog):
    samples = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(samples).save(tmp_path / "srgb.png", icc_profile=srgb)
    with caplog.at_level(logging.WARNING, logger="srkit.io"):
        assert torch.equal(read_image(tmp_path / "srgb.png"), _tensor(samples, 255))
    assert caplog.messages == []


def test_a_profile_pillow_cannot_apply_is_warned(tmp_path, caplog):
    samples = RNG.integers(0, 65536, (2, 3, 3), dtype=np.uint16)
    _png16(tmp_path / "linear16.png", samples, icc=_linear_rgb_profile())
    with caplog.at_level(logging.WARNING, logger="srkit.io"):
        assert torch.equal(read_image(tmp_path / "linear16.png"), _tensor(samples, 65535))  # unconverted, full precision
    assert caplog.messages == [f"{tmp_path / 'linear16.png'}: its ICC profile 'Linear RGB' is not applied "
                               "(Pillow converts 8-bit images only); read as sRGB"]
    Image.new("L", (2, 2), 100).save(tmp_path / "gray.png", icc_profile=_linear_rgb_profile())  # an RGB profile on gray
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="srkit.io"):
        assert torch.equal(read_image(tmp_path / "gray.png"), torch.full((3, 2, 2), 100 / 255))
    assert len(caplog.messages) == 1 and "cannot be applied to this L image" in caplog.messages[0]


# --------------------------------------------------------------------------------------------
# Malformed inputs


def _truncated(tmp_path: Path, name: str) -> Path:
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    return tmp_path / name


def _corrupt_png(tmp_path: Path) -> Path:
    Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    data = bytearray((tmp_path / "c.png").read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = bytes(40)  # garbage in the compressed stream
    (tmp_path / "c.png").write_bytes(bytes(data))
    return tmp_path / "c.png"


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _saved(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


BAD_FILES = {
    "missing": (lambda d: d / "nope.png", {}, "no such file"),
    "directory": (lambda d: d, {}, "is a directory"),
    "zero bytes": (lambda d: _file(d / "e.png", b""), {}, "is empty"),
    "text as png": (lambda d: _file(d / "t.png", b"hello, not an image\n"), {}, "not an image"),
    "zero width png": (lambda d: _png16(d / "z.png", np.zeros((2, 2, 3), np.uint16), size=(0, 2)), {}, "not an image"),
    "truncated png": (lambda d: _truncated(d, "t.png"), {}, "truncated or corrupt"),
    "truncated jpeg": (lambda d: _truncated(d, "t.jpg"), {}, "truncated or corrupt"),
    "corrupt png data": (_corrupt_png, {}, "truncated or corrupt"),
    "too many pixels": (lambda d: _saved(d / "big.png", Image.new("RGB", (100, 50))), {"max_pixels": 4999},
                        r"5,000 pixels, more than max_pixels=4,999.*pass a larger max_pixels"),
    "transparent with alpha=error": (lambda d: _saved(d / "a.png", Image.new("RGBA", (2, 2), (0, 0, 0, 10))),
                                     {"alpha": "error"}, "has transparent pixels.*alpha='white'"),
    "unknown alpha option": (lambda d: _saved(d / "a.png", Image.new("RGB", (2, 2))), {"alpha": "gray"},
                             "alpha must be one of"),
    "unsupported mode": (lambda d: _saved(d / "lab.tif", Image.new("LAB", (2, 2))), {}, "unsupported color mode 'LAB'"),
    "float out of range": (lambda d: _saved(d / "f.tif", Image.fromarray(np.full((2, 2), 3.5, np.float32), "F")), {},
                           r"outside \[0, 1\]; rescale"),
    "float nan": (lambda d: _saved(d / "n.tif", Image.fromarray(np.full((2, 2), np.nan, np.float32), "F")), {},
                  "NaN or infinite"),
    "int32 out of range": (lambda d: _saved(d / "i.tif", Image.fromarray(np.full((2, 2), 70000, np.int32), "I")), {},
                           "32-bit integer samples outside 0..65535"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_clear_errors(tmp_path, case):
    make, kwargs, message = BAD_FILES[case]
    with pytest.raises(InvalidImageError, match=message):
        read_image(make(tmp_path), **kwargs)


def test_unreadable_file_is_not_called_corrupt(tmp_path, monkeypatch):
    Image.new("RGB", (2, 2)).save(tmp_path / "x.png")

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(InvalidImageError, match="permission denied; check the file's permissions"):
        read_image(tmp_path / "x.png")


def test_max_pixels_none_disables_the_guard(tmp_path):
    Image.new("RGB", (100, 50)).save(tmp_path / "big.png")
    assert read_image(tmp_path / "big.png", max_pixels=None).shape == (3, 50, 100)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global limit is restored


GOOD = torch.full((3, 4, 5), 0.5)
BAD_TENSORS = {
    "not a tensor": (np.zeros((3, 4, 5), np.float32), {}, "must be a torch.Tensor"),
    "two channels": (torch.zeros(2, 4, 5), {}, r"must have shape \(3, H, W\)"),
    "2-d": (torch.zeros(4, 5), {}, r"got \(4, 5\)"),
    "channels last": (torch.zeros(4, 5, 3), {}, r"image.permute\(2, 0, 1\)"),
    "batch of two": (torch.zeros(2, 3, 4, 5), {}, "batch of 2.*pass image"),
    "uint8": (torch.zeros(3, 4, 5, dtype=torch.uint8), {}, r"dtype torch.uint8.*x.float\(\) / 255"),
    "nan": (GOOD.clone().index_fill_(1, torch.tensor([0]), float("nan")), {}, "NaN"),
    "0..255 range": (GOOD * 255, {}, r"expected \[0, 1\].*divide by 255"),
    "slightly negative": (GOOD - 0.51, {}, r"expected \[0, 1\]"),
    "empty": (torch.zeros(3, 0, 5), {}, "is empty"),
    "bits 12": (GOOD, {"bits": 12}, "bits must be 8 or 16"),
}


@pytest.mark.parametrize("case", BAD_TENSORS)
def test_bad_tensors_raise_clear_errors(tmp_path, case):
    image, kwargs, message = BAD_TENSORS[case]
    with pytest.raises(InvalidImageError, match=message):
        write_image(tmp_path / "out.png", image, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "bits", "message"), [
    ("out.gif", 8, r"unsupported extension '.gif'; use one of .png, .jpg"),
    ("out", 8, "unsupported extension ''"),
    ("out.jpg", 16, "JPEG cannot store 16-bit samples; write a .png file or pass bits=8"),
    ("out.webp", 16, "WEBP cannot store 16-bit"),
])
def test_bad_output_paths_raise_clear_errors(tmp_path, name, bits, message):
    with pytest.raises(InvalidImageError, match=message):
        write_image(tmp_path / name, GOOD, bits=bits)


def test_output_path_that_is_a_folder_or_under_a_file(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InvalidImageError, match="is a directory; pass a file name"):
        write_image(tmp_path / "dir.png", GOOD)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidImageError, match="cannot create the folder"):
        write_image(tmp_path / "file" / "out.png", GOOD)


# --------------------------------------------------------------------------------------------
# Writing


def test_write_accepts_batch_of_one_gray_and_clamps_within_tolerance(tmp_path):
    image = torch.tensor([[[-5e-4, 0.5, 1 + 5e-4]]]).expand(3, 1, 3)
    path = write_image(tmp_path / "a" / "b" / "x.png", image[None])  # parent folders are created
    assert np.asarray(Image.open(path))[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    gray = write_image(tmp_path / "g.png", image[:1])
    assert Image.open(gray).mode == "L"


def test_write_rounds_and_keeps_the_input(tmp_path):
    image = torch.tensor([0.3 / 255, 0.5 / 255 + 1e-4, 254.6 / 255]).view(1, 1, 3).expand(3, 1, 3).clone()
    before = image.clone()
    path = write_image(tmp_path / "r.png", image)
    assert np.asarray(Image.open(path))[0, :, 0].tolist() == [0, 1, 255]
    assert torch.equal(image, before)


def _failing_encoder(file, samples, fmt):
    file.write(b"\x89PNG partial data")
    raise RuntimeError("disk full")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sio, "_encode", _failing_encoder)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(tmp_path / "out.png", GOOD)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_leaves_the_target_untouched(tmp_path, monkeypatch):
    target = write_image(tmp_path / "out.png", GOOD)
    before = target.read_bytes()
    monkeypatch.setattr(sio, "_encode", _failing_encoder)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(target, torch.zeros(3, 4, 5))
    assert target.read_bytes() == before
    assert list(tmp_path.iterdir()) == [target]


def test_overwrite_replaces_the_target_and_leaves_no_temp_file(tmp_path):
    target = write_image(tmp_path / "out.png", GOOD)
    write_image(target, torch.zeros(3, 4, 5))
    assert torch.equal(read_image(target), torch.zeros(3, 4, 5))
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_alpha_round_trip_is_exact(tmp_path, bits, channels):
    scale, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    samples = RNG.integers(0, scale + 1, (5, 7, channels + 1)).astype(dtype)
    color, alpha = _tensor(samples[..., :-1], scale), _tensor(samples[..., -1:], scale)
    path = write_image(tmp_path / "a.png", color, bits=bits, alpha=alpha)
    image = decode_image(path)
    assert torch.equal(image.color, color.expand(3, -1, -1)) and torch.equal(image.alpha, alpha)
    assert image.format == f"{bits}-bit {'gray+alpha' if channels == 1 else 'RGBA'}"


@pytest.mark.parametrize(("name", "alpha", "message"), [
    ("a.jpg", torch.ones(1, 4, 5), "JPEG cannot store an alpha channel; write a .png, .webp or .tif file"),
    ("a.bmp", torch.ones(1, 4, 5), "BMP cannot store an alpha channel"),
    ("a.png", torch.ones(1, 4, 6), r"alpha must be a \(1, H, W\) tensor of the image's size \(1, 4, 5\), got \(1, 4, 6\)"),
    ("a.png", torch.full((1, 4, 5), 2.0), r"alpha .*expected \[0, 1\]"),
])
def test_bad_alpha_raises_clear_errors(tmp_path, name, alpha, message):
    with pytest.raises(InvalidImageError, match=message):
        write_image(tmp_path / name, GOOD, alpha=alpha)
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_while_writing_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio.os, "replace", full_disk)
    with pytest.raises(InvalidImageError, match=r"cannot write .*out\.png: No space left on device; check the folder"):
        write_image(tmp_path / "out.png", GOOD)
    assert list(tmp_path.iterdir()) == []


def test_remove_partial_writes_deletes_what_a_killed_write_leaves(tmp_path):
    (tmp_path / "sub").mkdir()
    killed = ("import os, sys\nfrom srkit.io import atomic_file\n"
              "with atomic_file(sys.argv[1]) as a, atomic_file(sys.argv[2]) as b:\n"
              "    a.write(b'partial'); b.write(b'partial'); os._exit(9)")
    run = subprocess.run([sys.executable, "-c", killed, str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.json")])
    assert run.returncode == 9
    (top,), (nested,) = tmp_path.glob(".a.png.*.tmp"), (tmp_path / "sub").glob(".b.json.*.tmp")
    keep = [tmp_path / ".notes.tmp", tmp_path / "x.0123456789ab.tmp", tmp_path / ".a.png.not-hex.tmp"]
    for path in keep:
        path.write_text("not a partial write")
    assert remove_partial_writes(tmp_path) == [top]
    assert remove_partial_writes(tmp_path, recursive=True) == [nested]
    assert sorted(path.name for path in tmp_path.rglob("*")) == sorted(["sub", *(path.name for path in keep)])


# --------------------------------------------------------------------------------------------
# Listing


def test_list_images_sorted_case_insensitive_and_recursive(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.tiff", "f.gif", "notes.txt", ".hidden.png", "sub/d.webp", ".cache/e.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b.PNG", tmp_path / "c.tiff", tmp_path / "f.gif"]
    assert list_images(tmp_path, recursive=True) == [
        tmp_path / "a.jpg", tmp_path / "b.PNG", tmp_path / "c.tiff", tmp_path / "f.gif", tmp_path / "sub" / "d.webp",
    ]


def test_list_images_errors(tmp_path):
    with pytest.raises(InvalidImageError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="is a file, not a folder"):
        list_images(tmp_path / "f.png")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "x.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"no images in .*pass recursive=True"):
        list_images(tmp_path / "empty")
    assert list_images(tmp_path / "empty", recursive=True) == [tmp_path / "empty" / "sub" / "x.png"]
