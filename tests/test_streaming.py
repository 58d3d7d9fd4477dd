"""Memory-bounded super-resolution: tiles blended into bands (tiled_rows), colour fixes band by band, PNGs written
row by row, and `srkit sr tile=...` writing the same image as the in-memory path."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from srkit.errors import InvalidImageError, UnsupportedError
from srkit.io import PNGRowWriter, decode_image, to_samples, write_png_rows
from srkit.ops.color import LOCAL_FIX_REACH, color_fix, color_fix_rows
from srkit.ops.resize import bicubic_upsample, bicubic_upsample_rows
from srkit.tiling import tiled_apply, tiled_rows
from srkit.types import MethodDescriptor, SRMethod


class LocalNet(SRMethod):
    """A small translation-equivariant x4 network (3x3 convs then nearest upsampling), seeded."""

    descriptor = MethodDescriptor(name="local-net", title="a local x4 network", paper="(test)", scale=4)

    def __init__(self, color_fix: str = "wavelet"):
        super().__init__(scale=4, color_fix=color_fix)
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def _sr(self, lr, *, steps, generator, **knobs):
        return F.interpolate(torch.sigmoid(self.conv(lr)), scale_factor=4, mode="nearest")


def image(h, w, seed=0, batch=1):
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def assemble(bands, shape):
    out = torch.full(shape, float("nan"))
    expected_first = 0
    for first, rows in bands:
        assert first == expected_first, "bands come top to bottom, without gaps or overlaps"
        out[..., first : first + rows.shape[-2], :] = rows
        expected_first = first + rows.shape[-2]
    assert expected_first == shape[-2]
    return out


def test_tiled_rows_yield_before_the_last_tile_runs():
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2

    x = image(200, 90)
    rows = tiled_rows(fn, x, scale=1, tile=40, overlap=8)
    first, band = next(rows)
    total_tiles = 6 * 3  # tile_starts(200, 40, 8) has 6 starts, tile_starts(90, 40, 8) 3
    assert first == 0 and len(calls) < total_tiles
    rest = assemble([(first, band), *rows], (1, 3, 200, 90))
    assert len(calls) == total_tiles
    torch.testing.assert_close(rest, tiled_apply(fn, x, scale=1, tile=40, overlap=8), rtol=0, atol=1e-6)


def test_tiled_rows_read_through_a_crop_function():
    samples = (image(70, 50) * 255).round().to(torch.uint8)
    crops = []

    def crop(source, top, left, h, w):
        crops.append((h, w))
        return source[..., top : top + h, left : left + w].float() / 255

    bands = list(tiled_rows(lambda t: t, samples, scale=1, tile=32, overlap=8, crop=crop))
    assert all(size == (32, 32) for size in crops)
    torch.testing.assert_close(assemble(bands, (1, 3, 70, 50)), samples.float() / 255)


@pytest.mark.parametrize("kind", ["wavelet", "ycbcr", "none"])
@pytest.mark.parametrize("sizes", [[7, 50, 3, 100, 40], [200], [1] * 200])
def test_color_fix_rows_equal_the_whole_image_fix(kind, sizes):
    img, ref = image(200, 37, seed=1), image(200, 37, seed=2)
    starts = np.cumsum([0, *sizes[:-1]])
    bands = [(int(s), img[..., s : s + n, :]) for s, n in zip(starts, sizes)]
    fixed = assemble(color_fix_rows(bands, lambda a, b: ref[..., a:b, :], kind, height=200), img.shape)
    torch.testing.assert_close(fixed, color_fix(img, ref, kind), rtol=0, atol=1e-5)


def test_adain_cannot_be_fixed_band_by_band():
    assert "adain" not in LOCAL_FIX_REACH
    with pytest.raises(Exception, match="needs the whole image"):
        list(color_fix_rows([(0, image(8, 8))], lambda a, b: image(8, 8), "adain", height=8))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_rows_equal_the_whole_upsampling(scale):
    x = image(41, 23, seed=3)
    whole = bicubic_upsample(x, scale)
    for first, last in [(0, 5), (7, 60), (scale * 41 - 9, scale * 41), (0, scale * 41)]:
        rows = bicubic_upsample_rows(lambda a, b: x[..., a:b, :], first, last, scale=scale, height=41)
        # float32 rounding of the source coordinate (y + 0.5) / scale differs when 1 / scale is inexact (scale 3)
        torch.testing.assert_close(rows, whole[..., first:last, :], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fix", ["wavelet", "ycbcr", "none"])
def test_sr_rows_equal_sr_with_the_same_tiles(fix):
    model = LocalNet()
    lr = image(90, 70, seed=4)
    expected = model.sr(lr, tile=32, tile_overlap=8, color_fix=fix)
    got = assemble(model.sr_rows(lr, tile=32, tile_overlap=8, color_fix=fix), expected.shape)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


def test_sr_rows_from_8_bit_samples_equal_sr(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 45, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    decoded = decode_image(tmp_path / "in.png")
    assert decoded.samples.dtype == np.uint8  # 8-bit files stay 8-bit in memory
    model = LocalNet()
    expected = model.sr(decoded.color[None], tile=24, tile_overlap=8)
    got = assemble(model.sr_rows(decoded, tile=24, tile_overlap=8), expected.shape)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


def test_sr_rows_refuses_adain_and_checks_before_running():
    model = LocalNet(color_fix="adain")
    with pytest.raises(UnsupportedError, match="adain needs the statistics of the whole output"):
        next(model.sr_rows(image(40, 40), tile=32))
    with pytest.raises(UnsupportedError, match="decoder_tile"):
        next(LocalNet().sr_rows(image(40, 40), tile=32, decoder_tile=3))


@pytest.mark.parametrize(("bits", "channels"), [(8, 1), (8, 2), (8, 3), (8, 4), (16, 1), (16, 3), (16, 4)])
def test_png_rows_round_trip(tmp_path, bits, channels):
    rng = np.random.default_rng(bits + channels)
    samples = rng.integers(0, 2**bits, (33, 21, channels), dtype=np.uint16 if bits == 16 else np.uint8)
    samples[:5] = samples[0]  # flat areas exercise Paeth's other predictions
    path = write_png_rows(tmp_path / "x.png", [samples[:1], samples[1:20], samples[20:]], width=21, height=33,
                          channels=channels, bits=bits)
    assert np.array_equal(decode_image(path).samples, samples)
    if bits == 8:  # Pillow reads it as well
        assert np.array_equal(np.atleast_3d(np.asarray(Image.open(path))), samples)


def test_png_rows_must_match_the_header(tmp_path):
    with pytest.raises(InvalidImageError, match="3 of the 4 rows"):
        write_png_rows(tmp_path / "x.png", [np.zeros((3, 5, 3), np.uint8)], width=5, height=4, channels=3)
    assert not list(tmp_path.iterdir()), "a failed write leaves no file, not even a temporary one"
    with open(tmp_path / "y.bin", "wb") as file, pytest.raises(InvalidImageError, match="do not fit"):
        PNGRowWriter(file, width=5, height=4, channels=3, bits=8).write(np.zeros((1, 6, 3), np.uint8))


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "srkit.cli", "sr", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "I;16"])
def test_cli_tiled_png_is_written_band_by_band_and_equals_the_api(tmp_path, mode):
    rng = np.random.default_rng(5)
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (50, 38), dtype=np.uint16)).save(tmp_path / "in.png")
    else:
        Image.fromarray(rng.integers(0, 256, (50, 38, len(mode)), dtype=np.uint8), mode).save(tmp_path / "in.png")
    result = run_cli("input=in.png", "output=out.png", "method=bicubic", "tile=16", "tile_overlap=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import srkit

    decoded = decode_image(tmp_path / "in.png")
    hr = srkit.load("bicubic").sr(decoded.color[None], tile=16, tile_overlap=4)[0]
    alpha = None if decoded.alpha is None else bicubic_upsample(decoded.alpha[None], 4)[0].clamp(0, 1)
    expected = to_samples(hr, decoded.write_bits, alpha)
    written = decode_image(tmp_path / "out.png").samples
    assert written.shape == expected.shape and written.dtype == expected.dtype
    assert np.abs(written.astype(np.int64) - expected).max() <= 1  # float rounding at a quantisation edge


def test_cli_with_adain_and_a_tile_assembles_in_memory(tmp_path, monkeypatch):
    """AdaIN needs image-wide statistics: the CLI falls back to sr() and still writes the image."""
    from srkit import cli

    Image.fromarray(np.random.default_rng(6).integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    calls = []
    original = SRMethod.sr_rows
    monkeypatch.setattr(SRMethod, "sr_rows", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    monkeypatch.chdir(tmp_path)
    cli.main(["sr", "input=in.png", "output=adain.png", "method=bicubic", "tile=16", "tile_overlap=4", "color_fix=adain"])
    cli.main(["sr", "input=in.png", "output=wavelet.png", "method=bicubic", "tile=16", "tile_overlap=4", "color_fix=wavelet"])
    assert len(calls) == 1  # wavelet streamed, adain not
    assert Image.open(tmp_path / "adain.png").size == (120, 120)


class NeedsSmallTiles(LocalNet):
    """Runs out of memory on inputs larger than ``limit`` pixels a side, as a model on a small accelerator would."""

    def __init__(self, limit):
        super().__init__(color_fix="none")
        self.limit, self.sides = limit, []

    def _sr(self, lr, *, steps, generator, **knobs):
        self.sides.append(max(lr.shape[-2:]))
        if max(lr.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._sr(lr, steps=steps, generator=generator)


def test_auto_tile_halves_after_out_of_memory_until_it_fits(monkeypatch, caplog):
    from srkit import tiling

    monkeypatch.setattr(tiling, "free_memory", lambda device: 2**40)  # the whole image looks affordable
    model = NeedsSmallTiles(limit=40)
    lr = image(100, 90, seed=7)
    got = model.sr(lr, tile="auto", tile_overlap=8)
    assert model.sides[0] == 100 and 48 in model.sides  # untiled, then 48 (100 // 2, a multiple of 8), then 24
    assert "retrying with tile=24" in caplog.text
    torch.testing.assert_close(got, NeedsSmallTiles(limit=40).sr(lr, tile=24, tile_overlap=8))


def test_auto_tile_starts_from_free_memory(monkeypatch):
    from srkit import tiling

    cpu = torch.device("cpu")
    per_pixel = 3 * 4 * 16 * tiling.AUTO_TILE_WORKING_FACTOR  # x4: 16 output pixels per LR pixel
    monkeypatch.setattr(tiling, "free_memory", lambda device: 2 * per_pixel * 100 * 100)
    assert tiling.auto_tile((1, 3, 100, 100), scale=4, device=cpu) is None
    tile = tiling.auto_tile((1, 3, 400, 400), scale=4, device=cpu, minimum=16)
    assert tile == 96  # the largest multiple of 8 whose tile fits: 100 -> 96
    assert tiling.auto_tile((1, 3, 4000, 4000), scale=4, device=cpu, minimum=128) >= 128


def test_auto_tile_gives_up_at_the_smallest_tile_and_passes_other_errors(monkeypatch):
    from srkit import tiling

    monkeypatch.setattr(tiling, "free_memory", lambda device: 2**40)
    with pytest.raises(Exception, match=r"out of memory even with tile=16, the smallest tile for this model \(16\)"):
        NeedsSmallTiles(limit=4).sr(image(64, 64), tile="auto", tile_overlap=8)

    class Broken(LocalNet):
        def _sr(self, lr, **kwargs):
            raise RuntimeError("a bug, not memory")

    with pytest.raises(RuntimeError, match="a bug"):
        Broken().sr(image(64, 64), tile="auto")
    with pytest.raises(Exception, match="tile must be a whole number of LR pixels, 'auto' or None"):
        LocalNet().sr(image(8, 8), tile="big")


def test_cli_tile_auto_writes_the_image(tmp_path):
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    result = run_cli("input=in.png", "output=out.png", "method=bicubic", "tile=auto", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (120, 160)
