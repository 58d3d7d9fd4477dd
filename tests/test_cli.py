"""The `srkit` console script end to end: file -> load -> sr (tiled) -> file, folders, resume."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from srkit.io import decode_image, write_image


def srkit(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "srkit.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def make_png(path, size=(20, 12), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_sr_writes_a_4x_png(tmp_path):
    src = make_png(tmp_path / "photo.png")
    result = srkit("sr", f"input={src}", "method=bicubic", "method.scale=4", f"output={tmp_path / 'out'}", "tile=8", "tile_overlap=2")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out" / "photo.png") as out:
        assert out.size == (80, 48) and out.mode == "RGB"
    assert "wrote 1" in result.stdout


def test_colour_fix_and_decoder_tile_reach_sr(tmp_path):
    src = make_png(tmp_path / "photo.png")
    outputs = {}
    for fix in ("none", "adain"):
        result = srkit("sr", f"input={src}", "method=bicubic", f"color_fix={fix}", "decoder_tile=16", f"output={tmp_path / fix}")
        assert result.returncode == 0, result.stderr
        with Image.open(tmp_path / fix / "photo.png") as out:
            outputs[fix] = np.asarray(out, dtype=np.float64)
    assert np.abs(outputs["adain"] - outputs["none"]).max() > 1  # the colour fix ran on the whole output
    result = srkit("sr", f"input={src}", "method=bicubic", "color_fix=sharp", f"output={tmp_path / 'bad'}")
    assert result.returncode == 2 and "is not a colour fix" in result.stderr


def test_cfg_job_reflects_overrides(tmp_path):
    result = srkit("sr", "input=a.png", "method=bicubic", "method.scale=2", "tile=128", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "scale: 2" in result.stdout and "tile: 128" in result.stdout
    assert "_target_: srkit.methods.bicubic.method.Bicubic" in result.stdout


def test_folder_run_resumes_and_reports_bad_files(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        make_png(src / f"img{i}.png", seed=i)
    (src / "broken.png").write_bytes(b"not a png at all")

    first = srkit("sr", f"input={src}", f"output={out}", "method.scale=2")
    assert first.returncode == 1  # the broken file is reported, the rest is done
    assert "broken.png" in first.stderr and "wrote 3" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png", "srkit-manifest.json"]

    (out / "img1.png").write_bytes(b"existing result")  # to see whether a run redoes it
    resumed = srkit("sr", f"input={src}", f"output={out}", "method.scale=2")
    assert "wrote 0, kept 3 existing" in resumed.stdout and resumed.returncode == 1
    assert (out / "img1.png").read_bytes() == b"existing result"  # resumed, not redone

    again = srkit("sr", f"input={src}", f"output={out}", "method.scale=2", "overwrite=true")
    with Image.open(out / "img1.png") as redone:
        assert redone.size == (40, 24)
    assert again.returncode == 1


@pytest.mark.parametrize(("word", "redone"), [("no", False), ("0", False), ("yes", True), ("1", True)])
def test_overwrite_words_mean_what_they_say(tmp_path, word, redone):
    src = make_png(tmp_path / "photo.png")
    assert srkit("sr", f"input={src}", f"output={tmp_path / 'out'}").returncode == 0
    (tmp_path / "out" / "photo.png").write_bytes(b"existing result")
    result = srkit("sr", f"input={src}", f"output={tmp_path / 'out'}", f"overwrite={word}")
    assert result.returncode == 0, result.stderr
    assert ((tmp_path / "out" / "photo.png").read_bytes() != b"existing result") == redone


def test_recursive_no_reads_only_the_top_folder(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    make_png(tmp_path / "in" / "top.png")
    make_png(tmp_path / "in" / "sub" / "deep.png")
    result = srkit("sr", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "recursive=no")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["top.png"]


def test_inputs_that_share_a_stem_get_distinct_outputs(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_png(src / "x.png", seed=1)
    Image.fromarray(np.full((12, 20, 3), 200, np.uint8)).save(src / "x.jpg")
    make_png(src / "y.png", seed=2)
    result = srkit("sr", f"input={src}", f"output={out}", "method.scale=2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["x.jpg.png", "x.png.png", "y.png"]
    with Image.open(out / "x.jpg.png") as from_jpg, Image.open(out / "x.png.png") as from_png:
        assert np.asarray(from_jpg).std() < 5 < np.asarray(from_png).std()  # each from its own input


def test_resume_is_keyed_by_method_settings_and_input(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_png(src / "photo.png")

    def run(*args):
        result = srkit("sr", f"input={src}", f"output={out}", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout, (out / "photo.png").read_bytes()

    _, bicubic = run("method=bicubic")
    stdout, realesrgan = run("method=realesrgan", "weights=synthetic")
    assert "wrote 1" in stdout and realesrgan != bicubic  # another method into the same folder redoes the image
    assert "wrote 0, kept 1" in run("method=realesrgan", "weights=synthetic")[0]  # the same settings keep it
    assert "wrote 1" in run("method=realesrgan", "weights=synthetic", "seed=1", "tile=8", "tile_overlap=2")[0]
    make_png(src / "photo.png", seed=5)  # a new file under the same name
    assert "wrote 1" in run("method=realesrgan", "weights=synthetic", "seed=1", "tile=8", "tile_overlap=2")[0]

    manifest = json.loads((out / "srkit-manifest.json").read_text())
    entry = manifest["outputs"]["photo.png"]
    assert entry["source"] == "photo.png" and len(entry["sha256"]) == 64
    settings = manifest["settings"][entry["settings"]]
    assert settings["method"] == "realesrgan" and settings["weights"] == "synthetic"
    assert (settings["seed"], settings["tile"], settings["tile_overlap"]) == (1, 8, 2)
    assert settings["config"]["variant"] == "x4plus"
    assert list(manifest["settings"]) == [entry["settings"]]  # settings no output uses are dropped


def test_partial_files_of_an_interrupted_write_are_removed(tmp_path):
    src, out = make_png(tmp_path / "photo.png"), tmp_path / "out"
    out.mkdir()
    stale = out / ".photo.png.0123456789ab.tmp"  # what srkit.io.atomic_file leaves when killed mid-write
    stale.write_bytes(b"\x89PNG half")
    others = [out / ".notes.tmp", out / "photo.0123456789ab.tmp"]  # not srkit's
    for path in others:
        path.write_text("keep")
    result = srkit("sr", f"input={src}", f"output={out}")
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and all(path.exists() for path in others)
    assert "removed 1 partial file(s) of an interrupted write: .photo.png.0123456789ab.tmp" in result.stderr


def test_output_png_for_one_input_writes_that_file(tmp_path):
    src = make_png(tmp_path / "photo.png")
    result = srkit("sr", f"input={src}", f"output={tmp_path / 'result.png'}", "method.scale=2")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "result.png") as out:
        assert out.size == (40, 24)
    again = srkit("sr", f"input={src}", f"output={tmp_path / 'result.png'}", "method.scale=3", "overwrite=true")
    assert again.returncode == 0, again.stderr
    with Image.open(tmp_path / "result.png") as out:
        assert out.size == (60, 36)


def test_a_folder_run_reports_a_failed_write_and_goes_on(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    make_png(src / "a.png")
    make_png(src / "sub" / "b.png")
    out.mkdir()
    (out / "sub").write_text("a file where the results of in/sub should go")  # fails even for root
    result = srkit("sr", f"input={src}", f"output={out}", "recursive=true")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "wrote 1, kept 0 existing (overwrite=true to redo), failed 1" in result.stdout
    failure = [line for line in result.stderr.splitlines() if "b.png" in line]
    assert len(failure) == 1 and "srkit sr: error:" in failure[0] and "cannot create the folder" in failure[0]
    assert (out / "a.png").is_file()


def test_alpha_is_kept_and_upscaled_apart(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    for name in ("rgba", "rgb"):
        result = srkit("sr", f"input={tmp_path / name}.png", f"output={tmp_path / name}_x2.png", "method.scale=2")
        assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "rgba_x2.png") as out, Image.open(tmp_path / "rgb_x2.png") as rgb_only:
        assert out.mode == "RGBA" and out.size == (16, 12)
        samples = np.asarray(out)
        assert np.array_equal(samples[..., :3], np.asarray(rgb_only))  # the colour is super-resolved as without alpha
    alpha = torch.from_numpy(rgba[..., 3].astype(np.float32) / 255)[None, None]
    expected = (F.interpolate(alpha, scale_factor=2, mode="bicubic").clamp(0, 1) * 255).round()[0, 0].numpy()
    assert np.array_equal(samples[..., 3], expected.astype(np.uint8))


def test_16_bit_input_gives_16_bit_output_and_format_changes_are_warned(tmp_path):
    samples = np.random.default_rng(0).integers(0, 65536, (1, 6, 8), dtype=np.uint16)
    write_image(tmp_path / "gray16.png", torch.from_numpy(samples.astype(np.float32) / 65535), bits=16)
    result = srkit("sr", f"input={tmp_path / 'gray16.png'}", f"output={tmp_path / 'out'}", "method.scale=2")
    assert result.returncode == 0, result.stderr
    out = decode_image(tmp_path / "out" / "gray16.png")
    assert (out.bits, out.format) == (16, "16-bit RGB")
    assert (np.round(out.color.numpy() * 65535) % 257).any()  # not 8-bit samples widened
    assert result.stderr.splitlines() == [f"srkit sr: warning: {tmp_path / 'gray16.png'}: 16-bit gray is written as 16-bit RGB"]

    eight = srkit("sr", f"input={tmp_path / 'gray16.png'}", f"output={tmp_path / 'out8'}", "method.scale=2", "bits=8")
    assert eight.returncode == 0, eight.stderr
    assert decode_image(tmp_path / "out8" / "gray16.png").format == "8-bit RGB"
    assert "16-bit gray is written as 8-bit RGB" in eight.stderr


def test_folder_runs_read_gif_and_tiff_with_a_progress_bar(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    palette = Image.new("P", (8, 6))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(src / "a.gif")
    make_png(tmp_path / "b.png")
    Image.open(tmp_path / "b.png").save(src / "b.tif")
    Image.open(tmp_path / "b.png").save(src / "c.tiff")
    result = srkit("sr", f"input={src}", f"output={tmp_path / 'out'}", "method.scale=2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png", "c.png"]
    assert "images: 100%" in result.stderr and "3/3" in result.stderr
    assert f"srkit sr: warning: {src / 'a.gif'}: 8-bit palette is written as 8-bit RGB" in result.stderr

    quiet = srkit("sr", f"input={src}", f"output={tmp_path / 'quiet'}", "method.scale=2", "progress=false")
    assert quiet.returncode == 0 and "images:" not in quiet.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sr", "input=/no/such/file.png"], "does not exist"),
        (["sr", "input=x.png", "method=bicubc"], "Could not find 'method/bicubc'"),
        (["sr", "input=x.png", "method.scal=2"], "Could not override 'method.scal'"),
        (["srr"], "Did you mean 'sr'"),
    ],
)
def test_clear_errors(tmp_path, args, message):
    result = srkit(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_image_single_file_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    result = srkit("sr", f"input={bad}", f"output={tmp_path / 'out'}")
    assert result.returncode == 2 and "srkit sr: error:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "bad.png").exists()


def test_list_shows_methods():
    result = srkit("list")
    assert result.returncode == 0 and "bicubic" in result.stdout and "realesrgan" in result.stdout


@pytest.mark.parametrize("command", ["sr", "train", "bench", "convert", "demo", "calibrate", "stability"])
def test_every_command_composes_its_config(command):
    from hydra import compose, initialize_config_dir

    from srkit.cli import COMMANDS, TASKS
    from srkit.registry import config_dir

    assert command in COMMANDS and command in TASKS
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        overrides = {"sr": ["input=x.png"], "train": ["method=bicubic"]}.get(command, [])
        cfg = compose(COMMANDS[command][0], overrides=overrides)
    assert cfg is not None
