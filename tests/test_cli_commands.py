"""`srkit bench`, `calibrate`, `stability` and `convert` through the real command line (a subprocess): a bad value is
exit code 2 and one `srkit <command>: error: ...` line naming the key and what it takes, before any model is built and
with nothing written; good runs show progress bars and log lines on stderr."""

import json
import subprocess
import sys

import pytest
import torch

ROOT_TABLE = {  # one tiny table: bicubic on srkit-mini, one seed
    "paper": "P", "table": "T", "title": "t", "protocol": {"scale": 4, "crop_border": 4}, "metrics": ["psnr"],
    "seeds": [0], "rows": [{"dataset": "realsr", "label": "Bicubic", "method": "bicubic", "paper": [None]}],
}


def srkit(command, *args, cwd):
    return subprocess.run([sys.executable, "-m", "srkit.cli", command, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_one_error_line(result, command, message):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"srkit {command}: error: "), result.stderr
    assert message in lines[0]


def files_under(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


BAD_VALUES = [
    ("bench", "mini=maybe", "mini=maybe is not valid: mini takes true or false"),
    ("bench", "runs=1", "runs=1 is not valid: runs takes a whole number >= 2, or null"),
    ("bench", "runs=abc", "runs=abc is not valid: runs takes a whole number >= 2"),
    ("bench", "methods=[bicubik]", "methods takes one of the methods bicubic, ccsr,"),  # ... ('bicubik' is none; did you mean
    ("bench", "mini_size=128", "mini_size=128 is not valid: mini_size takes 256 | 512, or null"),
    ("bench", "dataset_root=nowhere", "dataset_root=nowhere is not valid: dataset_root takes an existing folder"),
    ("bench", "mini_degradation=bicubik", "mini_degradation takes one of the degradations bicubic,"),
    ("bench", "tables=[nope]", "unknown tables ['nope']; known: ccsr_table2"),
    ("bench", "+tabels=[x]", "srkit bench has no option 'tabels'. Did you mean 'tables'?"),
    ("stability", "runs=1", "runs=1 is not valid: runs takes a whole number >= 2"),
    ("stability", "seeds=[3,3]", "seeds takes a list of at least 2 different whole numbers >= 0"),
    ("stability", "metrics=[psnr,ssimm]", "metrics takes one of the metrics brisque, clipiqa, dists, fid, gmsd, haarpsi, liqe, lpips, "
                                          "lpips-vgg, maniqa, musiq, nima, niqe, pi, psnr, psnr-rgb, sharpness, ssim, ssim-yiq, "
                                          "topiq_fr, topiq_nr ('ssimm' is none; did you mean 'ssim'?)"),
    ("stability", "dataset=nowhere", "dataset takes an existing folder holding HR/ and LR/"),
    ("stability", "crop_border=-1", "crop_border=-1 is not valid: crop_border takes a whole number >= 0"),
    ("stability", "max_images=0", "max_images=0 is not valid: max_images takes a whole number >= 1, or null"),
    ("stability", "progress=maybe", "progress=maybe is not valid: progress takes true or false"),
    ("stability", "variants=[{label:a,sr:{steps:9}}]", "variant 'a': ccsr runs steps in [1, 2, 3, 4, 5, 6], not steps=9"),
    ("stability", "method=resshift", "variant 'CCSR-S2 (non-uniform)': resshift runs steps in [4, 15], not steps=2"),
    ("stability", "method=ccsrr", "Could not find 'method/ccsrr'. Did you mean 'ccsr'?"),
    ("stability", "+runz=3", "srkit stability has no option 'runz'. Did you mean 'runs'?"),
    ("calibrate", "mode=ref", "mode=ref is not valid: mode takes reference | non-reference"),
    ("calibrate", "crop=30", "crop=30 is not valid: crop takes a whole number >= 4, a multiple of 4, or null"),
    ("calibrate", "limit=0", "limit=0 is not valid: limit takes a whole number >= 1, or null"),
    ("calibrate", "per_step=maybe", "per_step=maybe is not valid: per_step takes true or false"),
    ("calibrate", "seed=abc", "seed=abc is not valid: seed takes a whole number >= 0"),
    ("calibrate", "dtype=float16", "dtype=float16 is not valid: pg-resshift runs in float32 | float64"),
    ("calibrate", "method=bicubic", "srkit calibrate fits posterior guidance's scales for a residual-shift method"),
    ("train", "train=zoo-resshift until=abc", "until=abc is not valid: until takes a whole number >= 1, or null"),
    ("train", "train=zoo-resshift resume=maybe", "resume=maybe is not valid: resume takes true or false"),
    ("demo", "zoo=[resshif]", "zoo takes one of the zoo methods ccsr, dmsr, invsr, lpnsr, pg-resshift, resshift ('resshif' is none; "
                              "did you mean 'resshift'?)"),
    ("demo", "tile=4", "tile=4 is not valid: tile takes a whole number >= 8, or null (whole image)"),
    ("demo", "+zooo=[]", "srkit demo has no option 'zooo'. Did you mean 'zoo'?"),
    ("convert", "", "source must be given, e.g. srkit convert source=..."),
    ("convert", "source=", "source= is not valid: source takes a file or folder path"),
    ("convert", "source=nope.pth", "source=nope.pth is not a file; pass source=<the official checkpoint"),
    ("convert", "source=junk.safetensors", "junk.safetensors is not a valid safetensors file"),
]


@pytest.mark.parametrize(("command", "override", "message"), BAD_VALUES, ids=[f"{c} {o}" for c, o, _ in BAD_VALUES])
def test_a_bad_value_is_one_error_line_before_any_model(tmp_path, command, override, message):
    (tmp_path / "junk.safetensors").write_bytes(b"garbage, not a safetensors header")
    before = files_under(tmp_path)
    out = ["out=out"] if command in ("bench", "stability") else []  # where they would write
    result = srkit(command, *override.split(), *out, cwd=tmp_path)
    assert_one_error_line(result, command, message)
    assert files_under(tmp_path) == before


def test_stability_with_its_documented_defaults_is_a_message_not_a_traceback(tmp_path):
    result = srkit("stability", "out=out", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "srkit stability: ccsr: 3 variants x 8 images x 10 seeds" in result.stderr  # checked, then the build
    assert "srkit stability: error: Stable Diffusion 'stabilityai/stable-diffusion-2-1-base': cannot find" in result.stderr
    assert "weights='synthetic'" in result.stderr


def test_stability_runs_with_a_progress_bar(tmp_path):
    result = srkit("stability", "method=bicubic", "variants=[{label:Bicubic,sr:{}}]", "runs=2", "metrics=[psnr]",
                   "max_images=1", "out=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stability: 100%" in result.stderr and "2/2" in result.stderr
    assert "srkit stability: wrote out/stability.json and out/stability.md" in result.stderr
    assert "| Bicubic |" in result.stdout and (tmp_path / "out" / "stability.json").is_file()


def test_bench_runs_each_unit_once_with_progress_and_log_lines(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny.yaml").write_text(json.dumps(ROOT_TABLE))
    result = srkit("bench", "+bench=mini", "methods=[bicubic]", "tables_dir=tables", "out=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "srkit bench: 1 tables, methods ['bicubic']" in result.stderr
    assert result.stderr.count("srkit bench: running bicubic") == 1 and "bench: 100%" in result.stderr
    assert "srkit bench: wrote 1 tables" in result.stderr and (tmp_path / "out" / "tiny.md").is_file()


def test_convert_writes_the_file(tmp_path):
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, tmp_path / "official.pth")
    result = srkit("convert", "source=official.pth", "output=out.safetensors", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == f"srkit convert: wrote {tmp_path / 'out.safetensors'}\n"
