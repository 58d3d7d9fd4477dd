"""A method installed through the entry-point group `srkit.methods` works in Python and in
`srkit sr` / `srkit train` / `srkit bench`, with nothing outside its own folder (tests/plugins/srkit_nearest);
`srkit <command> --help` lists the options of the command's YAML with their comments."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from srkit.cli import COMMANDS, main
from srkit.registry import Entry

PLUGIN = Path(__file__).parent / "plugins" / "srkit_nearest"


def install(plugin: Path, site: Path) -> Path:
    """Install the plugin folder into ``site`` as pip would, without pip: the package and the dist-info
    holding the metadata and entry points of its pyproject.toml. Returns the installed package folder."""
    project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
    package = shutil.copytree(plugin, site / plugin.name, ignore=shutil.ignore_patterns("__pycache__"))
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist_info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
        for group, entries in project["entry-points"].items()
    ))
    return package


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder on which the plugin is installed; put it on PYTHONPATH to see the plugin."""
    folder = tmp_path_factory.mktemp("site")
    install(PLUGIN, folder)
    return folder


def run(site, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True)


def srkit(site, *args, cwd=None):
    return run(site, "-m", "srkit.cli", *args, cwd=cwd)


def make_png(path, size=(10, 6)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_load_finds_the_plugin_and_its_yaml(site):
    code = textwrap.dedent(
        """
        import sys, torch, srkit
        from srkit.registry import METHODS
        assert "srkit_nearest" not in sys.modules  # listing imports no plugin module
        assert "nearest" in srkit.list_methods()
        model = srkit.load("nearest")
        assert model.sr(torch.rand(1, 3, 5, 7)).shape == (1, 3, 10, 14)
        assert srkit.load("nearest", scale=3).scale == 3
        print(METHODS.get("nearest").default_config())
        """
    )
    result = run(site, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'_target_': 'srkit_nearest.Nearest', 'scale': 2}"


def test_default_config_is_the_yaml_beside_the_class_else_the_signature(tmp_path, monkeypatch):
    package = install(PLUGIN, tmp_path)
    spec = importlib.util.spec_from_file_location("srkit_nearest", package / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "srkit_nearest", module)  # removed again after the test
    spec.loader.exec_module(module)
    entry = Entry("method", "nearest", module.Nearest, module.Nearest.descriptor)

    (package / "nearest.yaml").write_text("scale: 4\n")  # no _target_: the entry point names the class
    assert entry.default_config() == {"_target_": "srkit_nearest.Nearest", "scale": 4}
    (package / "nearest.yaml").unlink()
    assert entry.default_config() == {"_target_": "srkit_nearest.Nearest", "scale": 2}  # the constructor's defaults


def test_sr_runs_the_plugin_with_an_override(site, tmp_path):
    source = make_png(tmp_path / "photo.png")
    result = srkit(site, "sr", f"input={source}", "method=nearest", "method.scale=3", f"output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out" / "photo.png") as out:
        assert out.size == (30, 18)


def test_a_misspelt_plugin_option_is_one_error_line(site, tmp_path):
    source = make_png(tmp_path / "photo.png")
    result = srkit(site, "sr", f"input={source}", "method=nearest", "method.sclae=3", f"output={tmp_path / 'out'}")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "srkit sr: error: Could not override 'method.sclae': no such key. Did you mean 'method.scale'? Keys of method: scale. "
        "(`--help` lists the options, `--cfg job` prints the config)"
    ]
    assert not (tmp_path / "out").exists()


def test_train_composes_the_plugin(site):
    result = srkit(site, "train", "method=nearest", "method.scale=4", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "_target_: srkit_nearest.Nearest\n  scale: 4" in result.stdout


def test_bench_mini_runs_the_plugin(site, tmp_path):
    out = tmp_path / "bench"
    result = srkit(site, "bench", "+bench=mini", "methods=[nearest]", f"out={out}")
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["command"]["methods"] == ["nearest"]
    rows = [row for table in record["tables"] for row in table["rows"] if row["method"] == "nearest"]
    assert rows and all(row["label"] == "nearest (srkit)" for row in rows)
    assert "nearest (srkit)" in (out / "invsr_table2.md").read_text()
    outputs = sorted((out / "images" / "srkit-mini").glob("nearest*/*.png"))
    assert outputs, "bench wrote no image of nearest"
    with Image.open(outputs[0]) as image:
        assert image.size == (128, 128)  # the 256-pixel srkit-mini HR crops downscaled x4, upscaled x2 by nearest


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "list"])
def test_help_lists_the_options_of_the_commands_yaml(command, capsys):
    from omegaconf import OmegaConf

    from srkit.registry import config_dir

    main([command, "--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"srkit {command}: {COMMANDS[command].description}\nusage: srkit {command}")
    assert "--cfg job" in text and "powered by Hydra" not in text
    config = OmegaConf.load(config_dir() / f"{COMMANDS[command].config}.yaml")
    rows = [line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.strip()]
    assert {row.partition("=")[0].partition(".")[0] for row in rows} >= set(config) - {"defaults", "hydra"}


def test_sr_help_aligns_each_option_with_its_comment(capsys):
    main(["sr", "--help"])
    lines = capsys.readouterr().out.splitlines()
    tile = next(line for line in lines if line.lstrip().startswith("tile="))
    overlap = next(line for line in lines if line.lstrip().startswith("tile_overlap="))
    comment = "tile size in LR pixels; null processes whole images; auto: from free memory, halved on OOM"
    assert tile.split(maxsplit=1) == ["tile=null", comment]
    assert tile.index("tile size") == overlap.index("LR pixels")
    method = next(line for line in lines if line.lstrip().startswith("method="))
    assert method.split()[0] == "method=bicubic" and "`srkit list`" in method


def test_bare_srkit_is_a_usage_error_and_help_is_not(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("usage: srkit <command>")
    main(["--help"])
    assert "srkit <command> --help" in capsys.readouterr().out
