"""`srkit sr` rejects a bad command line before any model is built: exit code 2, one `srkit sr: error: ...` line
on stderr, no traceback, and nothing written."""

import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from srkit.cli import _SR_OPTIONS
from srkit.registry import config_dir


def srkit_sr(*args, cwd):
    return subprocess.run([sys.executable, "-m", "srkit.cli", "sr", *args], cwd=cwd, capture_output=True, text=True)


def make_png(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(path)
    return path


def assert_one_error_line(result, message):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("srkit sr: error: "), result.stderr
    assert message in lines[0]


def files_under(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


# weights= a missing file: bicubic would reject it, so these errors come before the model is built.
BAD_VALUES = {
    "overwrite=maybe": "overwrite=maybe is not valid: overwrite takes true or false (yes/no and 1/0 work too)",
    "recursive=2": "recursive=2 is not valid: recursive takes true or false",
    "progress=sometimes": "progress=sometimes is not valid: progress takes true or false",
    "tile=abc": "tile=abc is not valid: tile takes a whole number >= 1, auto (the largest that free memory allows), or null",
    "tile=1.5": "tile=1.5 is not valid: tile takes a whole number >= 1",
    "seed=abc": "seed=abc is not valid: seed takes a whole number >= 0, or null (unseeded)",
    "tile_batch=0": "tile_batch=0 is not valid: tile_batch takes a whole number >= 1",
    "tile_overlap=-1": "tile_overlap=-1 is not valid: tile_overlap takes a whole number >= 0",
    "tile=40": "tile=40 is too small for tile_overlap=32: a tile must be at least 2 x tile_overlap and 8 pixels; pass tile=64",
    "steps=0": "steps=0 is not valid: steps takes a whole number >= 1, or null (the method's default)",
    "decoder_tile=4": "decoder_tile=4 is not valid: decoder_tile takes a whole number >= 8",
    "bits=12": "bits=12 is not valid: bits takes 8 or 16, or null (the bit depth of each input)",
    "color_fix=sharp": "color_fix='sharp' is not a colour fix; use one of none, wavelet, adain, ycbcr",
    "fast=maybe": "fast=maybe is not valid: fast takes true (bfloat16), false (the exact path) or bfloat16 | float16",
    "output=": "output= is not valid: output takes a file or folder path",
    "+tiel=64": "+tiel=64: srkit sr has no option 'tiel'. Did you mean 'tile'?",
    "++overwrit=true": "srkit sr has no option 'overwrit'. Did you mean 'overwrite'?",
}


@pytest.mark.parametrize("override", BAD_VALUES)
def test_a_bad_value_is_one_error_line(tmp_path, override):
    make_png(tmp_path / "photo.png")
    result = srkit_sr("input=photo.png", "method=bicubic", "weights=/no/such/weights.pth", "output=out", override,
                      cwd=tmp_path)
    assert_one_error_line(result, BAD_VALUES[override])
    assert files_under(tmp_path) == ["photo.png"]


def test_an_empty_input_is_an_error_not_the_current_folder(tmp_path):
    make_png(tmp_path / "photo.png")
    result = srkit_sr("input=", "method=bicubic", "output=out", cwd=tmp_path)
    assert_one_error_line(result, "input= is not valid: input takes a file or folder path")
    assert files_under(tmp_path) == ["photo.png"]


def test_no_input_is_an_error(tmp_path):
    assert_one_error_line(srkit_sr("method=bicubic", cwd=tmp_path), "input must be given, e.g. srkit sr input=...")
    assert files_under(tmp_path) == []


def test_a_missing_input_is_an_error(tmp_path):
    assert_one_error_line(srkit_sr("input=nope.png", "method=bicubic", cwd=tmp_path), "input 'nope.png' does not exist")
    assert files_under(tmp_path) == []


def test_an_output_file_must_be_png(tmp_path):
    make_png(tmp_path / "photo.png")
    result = srkit_sr("input=photo.png", "method=bicubic", "output=result.jpg", cwd=tmp_path)
    assert_one_error_line(result, "output=result.jpg: srkit sr writes PNG files; name a .png file or a folder")
    assert files_under(tmp_path) == ["photo.png"]


def test_an_existing_output_file_needs_overwrite(tmp_path):
    make_png(tmp_path / "photo.png")
    (tmp_path / "result.png").write_bytes(b"an earlier result")
    result = srkit_sr("input=photo.png", "method=bicubic", "output=result.png", cwd=tmp_path)
    assert_one_error_line(result, "output=result.png exists; pass overwrite=true to replace it")
    assert (tmp_path / "result.png").read_bytes() == b"an earlier result"


def test_an_output_folder_that_is_a_file(tmp_path):
    make_png(tmp_path / "photo.png")
    (tmp_path / "taken").write_text("a file where the output folder should be")
    result = srkit_sr("input=photo.png", "method=bicubic", "output=taken", cwd=tmp_path)
    assert_one_error_line(result, "the output folder taken is a file; choose another output=")
    assert files_under(tmp_path) == ["photo.png", "taken"]


def test_an_output_folder_that_cannot_be_created(tmp_path):
    # A folder under a file cannot be created even by root (chmod would not stop root).
    make_png(tmp_path / "photo.png")
    (tmp_path / "taken").write_text("a file")
    result = srkit_sr("input=photo.png", "method=bicubic", "output=taken/out", cwd=tmp_path)
    assert_one_error_line(result, "cannot write into the output folder taken/out: Not a directory")
    assert files_under(tmp_path) == ["photo.png", "taken"]


def test_outputs_that_would_collide_even_with_their_extensions(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("x.png", "x.jpg", "x.png.jpg"):  # x.png -> x.png.png (beside x.jpg), and x.png.jpg -> x.png.png
        make_png(tmp_path / "in" / name)
    result = srkit_sr("input=in", "method=bicubic", "output=out", cwd=tmp_path)
    assert_one_error_line(result, "x.png and x.png.jpg would both be written to x.png.png; rename one of them")
    assert not (tmp_path / "out").exists()


def test_results_may_not_replace_the_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    make_png(tmp_path / "in" / "a.png")
    result = srkit_sr("input=in", "method=bicubic", "output=in", cwd=tmp_path)
    assert_one_error_line(result, "the result in/a.png would replace that input; choose another output=")
    assert files_under(tmp_path) == ["in", "in/a.png"]


def test_an_output_srkit_did_not_write_is_not_replaced(tmp_path):
    make_png(tmp_path / "photo.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photo.png").write_bytes(b"someone else's file")
    result = srkit_sr("input=photo.png", "method=bicubic", "output=out", cwd=tmp_path)
    assert_one_error_line(result, "out/photo.png exists but out/srkit-manifest.json has no record of it")
    assert files_under(tmp_path / "out") == ["photo.png"]
    assert (tmp_path / "out" / "photo.png").read_bytes() == b"someone else's file"


def test_every_key_of_sr_yaml_has_a_parser():
    config = OmegaConf.load(config_dir() / "sr.yaml")
    assert set(_SR_OPTIONS) == set(config) - {"defaults", "hydra"}


@pytest.mark.parametrize("name", ["my photo.png", "a,b=c.png", "фото é.png", "it's [1].png"])
def test_paths_work_as_typed(tmp_path, name):
    """Hydra's grammar rejects spaces, '=', ',', quotes, brackets and non-ASCII letters unquoted; srkit quotes paths."""
    make_png(tmp_path / name)
    result = srkit_sr(f"input={name}", f"output=out dir/{name}", "method=bicubic", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out dir" / name).is_file()


@pytest.mark.parametrize(("args", "message"), [
    (("method=invsr", "steps=9"), "invsr supports steps in [1, 2, 3, 4, 5], got 9"),
    (("method=bicubic", "steps=2"), "bicubic is not iterative; call sr() without steps="),
])
def test_steps_the_method_lacks_fail_before_the_model_is_built(tmp_path, args, message):
    make_png(tmp_path / "photo.png")
    # weights that do not exist: building the model would fail with another message
    result = srkit_sr("input=photo.png", "output=out", "weights=/no/such/weights", *args, cwd=tmp_path)
    assert_one_error_line(result, message)
    assert files_under(tmp_path) == ["photo.png"]
