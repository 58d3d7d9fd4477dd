"""Every config group composes and instantiates; Python and CLI share one set of defaults."""

import inspect

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

import srkit
from srkit.registry import REGISTRIES, config_dir, import_target

GROUP_FILES = sorted((path.parent.name, path.stem) for path in config_dir().glob("*/*.yaml"))
# Plugin groups are registries: each option is a registered plugin built here. The application
# groups `train/` and `bench/` are instantiated by their commands' tests (tests/test_train.py,
# tests/test_benchmarks.py), which compose them through `conf/train.yaml` / `conf/bench.yaml`.
# ~950 M synthetic parameters each (the SD-based methods build a whole SD backend)
HEAVY = {("backend", "sd_turbo"), ("backend", "sd21_base"), ("method", "dmsr"), ("method", "invsr"), ("method", "ccsr")}
PLUGIN_FILES = [
    pytest.param(g, n, marks=pytest.mark.slow) if (g, n) in HEAVY else (g, n) for g, n in GROUP_FILES if g in REGISTRIES
]


def compose_sr(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("sr", overrides=["input=x.png", *overrides])


def test_every_group_has_options():
    groups = {group for group, _ in GROUP_FILES}
    assert {"method", "degradation", "backend", "train", "bench"} <= groups


@pytest.mark.parametrize(("group", "name"), PLUGIN_FILES)
def test_group_option_composes_and_instantiates(group, name):
    override = f"{group}={name}" if group == "method" else f"+{group}={name}"
    cfg = compose_sr([override])
    node = cfg[group]
    target = import_target(node._target_)
    kwargs = {"weights": "synthetic"} if "weights" in inspect.signature(target).parameters else {}
    obj = instantiate(node, **kwargs)
    assert isinstance(obj, target)
    # The YAML keys mirror the constructor's arguments: nothing unknown, nothing invented.
    params = inspect.signature(target).parameters
    assert set(OmegaConf.to_container(node)) - {"_target_"} <= set(params)
    # The registry knows every shipped option under the same name.
    assert name in REGISTRIES[group]


def test_overrides_reach_the_object():
    cfg = compose_sr(["method=bicubic", "method.scale=2", "tile=64", "dtype=float64"])
    assert cfg.method.scale == 2 and cfg.tile == 64
    assert instantiate(cfg.method).scale == 2


def test_load_works_inside_an_application_that_uses_hydra(tmp_path):
    (tmp_path / "app.yaml").write_text("lr: 0.1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        app_cfg = compose("app")
        model = srkit.load("bicubic", scale=2)
        assert GlobalHydra.instance().is_initialized()  # the host's Hydra state is untouched
        assert compose("app").lr == app_cfg.lr
    assert model.sr(torch.rand(1, 3, 4, 4)).shape == (1, 3, 8, 8)
    assert not GlobalHydra.instance().is_initialized()


def test_load_does_not_initialise_hydra():
    srkit.load("bicubic")
    assert not GlobalHydra.instance().is_initialized()
