"""The `srkit` console script end to end: file -> load -> sr (tiled) -> file, folders, resume."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


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
    out.mkdir()
    (out / "img1.png").write_bytes(b"existing result")  # as if a previous run had written it

    result = srkit("sr", f"input={src}", f"output={out}", "method.scale=2")
    assert result.returncode == 1  # the broken file is reported, the rest is done
    assert "broken.png" in result.stderr
    assert (out / "img1.png").read_bytes() == b"existing result"  # resumed, not redone
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png"]  # no partial file

    again = srkit("sr", f"input={src}", f"output={out}", "method.scale=2", "overwrite=true")
    with Image.open(out / "img1.png") as redone:
        assert redone.size == (40, 24)
    assert again.returncode == 1


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
