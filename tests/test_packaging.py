"""The wheel ships every package, the configs (`conf/` as `srkit.conf`) and the bundled assets,
and the CLI finds its configs after a regular (non-editable) install."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomllib

from srkit import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "srkit").rglob("__init__.py")
    }
    assert on_disk | {"srkit.conf"} == listed


def venv_with_wheel(venv: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel, which imports torch & co. from the running interpreter's site-packages
    whether the suite runs inside a venv or not (``--system-site-packages`` would see the base interpreter's, not
    a running venv's). The wheel is installed first, so pip sees no other srkit; the running folders come as
    plain path lines of a ``.pth`` file, after the venv's own, and their ``.pth`` files (an editable srkit) are
    not processed: the wheel's srkit is the one imported."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    running = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]
    Path(venv_site, "running_interpreter.pth").write_text("\n".join(running) + "\n")
    return python


@pytest.mark.slow
def test_wheel_install_finds_configs(tmp_path):
    # Build from a copy of the tracked tree: setuptools leaves a build/ folder next to its input.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True,
    )
    wheel = next(tmp_path.glob("srkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    zoo_files = [f"srkit/zoo/{part.file}" for part in zoo._manifest().values()]
    for required in ["srkit/conf/sr.yaml", "srkit/conf/method/bicubic.yaml", "srkit/conf/train/zoo-resshift.yaml",
                     "srkit/metrics/tables/invsr_table2.yaml",
                     "srkit/assets/astronaut.png", "srkit/cli.py", "srkit/zoo/zoo.yaml", *zoo_files]:
        assert required in names
    assert not any(n.startswith("conf/") for n in names)

    venv = tmp_path / "venv"
    python = venv_with_wheel(venv, wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(venv / "bin" / "srkit"), "sr", "input=x.png", "method.scale=3", "--cfg", "job"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )
    assert "scale: 3" in result.stdout
    where = subprocess.run(
        [str(python), "-c", "import srkit.registry as r; print(r.config_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert str(venv) in where
    zoo_model = subprocess.run(  # the zoo's weights ship inside the wheel, sha256 checked at load
        [str(python), "-c", "import srkit; print(type(srkit.load('resshift', weights='zoo').autoencoder).__name__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert "VQModelTorch" in zoo_model
    bench = subprocess.run(  # the table specs ship too: `srkit bench` runs from the wheel alone
        [str(venv / "bin" / "srkit"), "bench", "+bench=mini", "methods=[bicubic]", "tables=[lpnsr_table4]", "out=bench",
         "progress=false"], cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert (tmp_path / "bench" / "lpnsr_table4.md").is_file()


# What only training, the SD prompt encoder, metrics, plots or the benchmark photos need (pyproject extras).
NOT_INFERENCE = ("transformers", "kornia", "accelerate", "lpips", "matplotlib", "pyiqa", "skimage", "sklearn")


@pytest.mark.slow
def test_core_install_pulls_no_training_packages(tmp_path):
    """`pip install .` resolved against the package index as a fresh machine would (nothing installed counts)."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-build-isolation", "-q",
         "--report", str(report), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    installed = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    assert {"srkit", "torch", "diffusers", "spandrel", "hydra-core", "safetensors"} <= installed
    extras_only = {"transformers", "kornia", "accelerate", "lpips", "matplotlib", "pyiqa", "timm", "scikit-image", "scikit-learn"}
    pulled = installed & extras_only
    assert not pulled, f"the core install pulls {sorted(pulled)}; move them to an extra"


def test_realesrgan_sr_runs_without_the_extras_packages(tmp_path, models_dir):
    """The inference path imports none of the extras' packages: `srkit sr method=realesrgan` with them unimportable."""
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    blocked = ", ".join(repr(name) for name in NOT_INFERENCE)
    program = (  # a None entry in sys.modules makes `import name` raise ImportError, as for a package not installed
        f"import sys; sys.modules.update(dict.fromkeys(({blocked},)))\n"
        "from srkit.cli import main\n"
        "main(['sr', 'input=in.png', 'output=out', 'method=realesrgan'])\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(tmp_path / "out" / "in.png").size == (80, 96)


def test_missing_extra_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    from srkit.errors import MissingDependencyError, import_optional

    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate -> ImportError
    with pytest.raises(MissingDependencyError, match=r'srkit train needs the package .accelerate.*pip install "srkit\[train\]"'):
        import_optional("accelerate", extra="train", needed_for="srkit train")


def test_version_is_written_once():
    import srkit

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    from importlib.metadata import version

    assert version("srkit") == srkit.__version__
