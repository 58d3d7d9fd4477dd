"""The sr() template, for every built-in method through srkit.load: odd sizes give exactly scale x the input,
model(lr) is sr(lr), a wrong output size is a clear error, decoder_tile reaches the exact tiled decoder; methods
composed by config alone (hooks and samplers swapped); the methods floor's structure."""

import ast
from pathlib import Path

import pytest
import torch
from test_ccsr import TINY as CCSR_TINY
from test_dmsr import TINY as DMSR_TINY
from test_invsr import TINY as INVSR_TINY
from test_resshift import TINY_UNET, TINY_VQ

import srkit
from srkit import MethodDescriptor, SRMethod
from srkit.diffusion import DiffusionMethod
from srkit.errors import UnsupportedError
from srkit.methods.pg_resshift.guidance import PosteriorGuidance, PosteriorGuidanceStep

pytestmark = pytest.mark.usefixtures("one_thread")

RESSHIFT_TINY = {"unet_config": TINY_UNET, "autoencoder_config": TINY_VQ}
TINY_CONFIGS = {  # every built-in method, at a size that runs in about a second on one CPU thread
    "bicubic": {},
    "realesrgan": {"variant": "animevideo-x4"},
    "resshift": RESSHIFT_TINY,
    "pg-resshift": RESSHIFT_TINY,
    "lpnsr": {**RESSHIFT_TINY, "predictor_config": TINY_UNET},
    "invsr": INVSR_TINY,
    "dmsr": DMSR_TINY,
    "ccsr": {"backend_config": CCSR_TINY},
}


def test_every_built_in_method_has_a_tiny_config():
    built_in = {name for name in srkit.list_methods() if srkit.registry.METHODS.get(name).target.__class__ is str}
    assert built_in == set(TINY_CONFIGS)


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def method(request) -> SRMethod:
    return srkit.load(request.param, weights="synthetic", device="cpu", **TINY_CONFIGS[request.param])


def test_odd_sizes_give_exactly_scale_times_the_input(method):
    lr = torch.rand(1, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    out = method.sr(lr, seed=0)
    s = method.scale
    assert out.shape == (1, 3, s * 17, s * 23)
    assert 0 <= float(out.min()) <= float(out.max()) <= 1
    torch.testing.assert_close(method(lr, seed=0), out, atol=0, rtol=0)  # forward is sr


class WrongSize(SRMethod):
    descriptor = MethodDescriptor(name="wrong-size", title="returns one pixel too few", paper="-", scale=2)

    def __init__(self):
        super().__init__(2)

    def _sr(self, lr, *, steps, generator, **knobs):
        return torch.nn.functional.interpolate(lr, scale_factor=2)[..., :-1, :]


def test_a_wrong_output_size_is_a_clear_error():
    with pytest.raises(srkit.SrkitError, match=r"returned spatial size \(15, 16\) for an input of \(8, 8\)"):
        WrongSize().sr(torch.rand(1, 3, 8, 8))


def test_decoder_tile_decodes_with_the_exact_stagewise_tiling(monkeypatch):
    model = srkit.load("resshift", weights="synthetic", device="cpu", **RESSHIFT_TINY)
    lr = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    whole = model.sr(lr, seed=0)
    calls = []
    decode_tiled = type(model.autoencoder).decode_tiled

    def spy(self, z, **kwargs):
        calls.append(kwargs["tile"])
        return decode_tiled(self, z, **kwargs)

    monkeypatch.setattr(type(model.autoencoder), "decode_tiled", spy)
    tiled = model.sr(lr, seed=0, decoder_tile=16)
    assert calls == [16]
    assert float((tiled - whole).abs().max()) < 1e-4
    with pytest.raises(UnsupportedError, match="decoder_tile"):
        model.sr(lr, decoder_tile=0)


def test_the_default_step_count_is_the_descriptors(method):
    if isinstance(method, DiffusionMethod):
        assert method.sampler.default_steps == method.descriptor.default_steps


# ---------------------------------------------------------------- compositions by config alone


GUIDANCE = {"_target_": "srkit.methods.pg_resshift.guidance.PosteriorGuidance"}


def test_lpnsr_with_posterior_guidance_by_config(monkeypatch):
    lpnsr = srkit.load("lpnsr", weights="synthetic", device="cpu", **TINY_CONFIGS["lpnsr"])
    guided = srkit.load("lpnsr", weights="synthetic", device="cpu", **TINY_CONFIGS["lpnsr"], mean_correction=GUIDANCE)
    assert isinstance(guided.mean_correction_hook, PosteriorGuidance) and lpnsr.mean_correction_hook is None
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    hr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    predictor_calls, guidance_calls = [], []
    sample, step = guided.noise_predictor.sample, PosteriorGuidanceStep.__call__
    monkeypatch.setattr(guided.noise_predictor, "sample", lambda *a, **k: predictor_calls.append(1) or sample(*a, **k))
    monkeypatch.setattr(PosteriorGuidanceStep, "__call__",
                        lambda self, mean, **k: guidance_calls.append(k["t"]) or step(self, mean, **k))
    out = guided.sr(lr, seed=0, guide=hr)
    assert len(predictor_calls) == 3 and guidance_calls == [3, 2, 1, 0]  # g_w's noise and the guidance, every step
    plain = lpnsr.sr(lr, seed=0)
    assert not torch.equal(out, plain)
    assert torch.equal(guided.sr(lr, seed=0, guide=hr, strength=0.0), plain)  # strength 0 is LPNSR itself
    with pytest.raises(UnsupportedError, match="no options"):
        lpnsr.sr(lr, guide=hr)  # without the hook, LPNSR takes no guide


def test_ccsr_with_a_uniform_ddpm_sampler_by_config_is_its_uniform_baseline():
    uniform_sampler = {"_target_": "srkit.samplers.ddpm.DDPMSampler", "steps": 2, "spacing": "trailing", "steps_offset": 0}
    swapped = srkit.load("ccsr", weights="synthetic", device="cpu", sampler=uniform_sampler, **TINY_CONFIGS["ccsr"])
    ccsr = srkit.load("ccsr", weights="synthetic", device="cpu", **TINY_CONFIGS["ccsr"])
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    out = swapped.sr(lr, seed=1)
    assert swapped.last_timesteps == [999, 499]
    torch.testing.assert_close(out, ccsr.sr(lr, seed=1, sampling="uniform"), atol=0, rtol=0)


def test_invsr_on_the_nonuniform_sampler_and_a_sampler_that_does_not_fit():
    invsr = srkit.load("invsr", weights="synthetic", device="cpu", sampler={"_target_": "srkit.samplers.nonuniform.NonUniformSampler"},
                       **TINY_CONFIGS["invsr"])
    invsr.sr(torch.rand(1, 3, 8, 8), seed=0, steps=2)
    assert invsr.last_timesteps == [199, 99]  # InvSR's step table on the non-uniform sampler's DDPM maths
    with pytest.raises(srkit.ConfigError, match=r"invsr needs a DDPMSampler.*got ResidualShiftSampler"):
        srkit.load("invsr", weights="synthetic", sampler={"_target_": "srkit.samplers.residual_shift.ResidualShiftSampler"},
                   **TINY_CONFIGS["invsr"])


def test_steps_and_a_schedule_that_disagree_raise():
    invsr = srkit.load("invsr", weights="synthetic", device="cpu", **TINY_CONFIGS["invsr"])
    lr = torch.rand(1, 3, 8, 8)
    with pytest.raises(srkit.ConfigError, match=r"steps=3 and timesteps=\[250, 200, 150, 100, 50\] \(5 values\) disagree"):
        invsr.sr(lr, steps=3, timesteps=[250, 200, 150, 100, 50])
    invsr.sr(lr, timesteps=[250, 200, 150, 100, 50])
    assert invsr.last_timesteps == [249, 199, 149, 99, 49]


# ---------------------------------------------------------------- the methods floor's structure


METHODS_DIR = Path(srkit.__file__).parent / "methods"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(METHODS_DIR.parents[0]).with_suffix("").parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return found


def test_no_method_imports_another():
    folders = [p for p in METHODS_DIR.iterdir() if (p / "__init__.py").is_file()]
    assert len(folders) == len(TINY_CONFIGS)
    for folder in folders:
        for path in folder.rglob("*.py"):
            others = {m for m in _imported_modules(path) if m.startswith("srkit.methods.")
                      and m.split(".")[2] != folder.name}
            assert not others, f"{path.relative_to(METHODS_DIR)} imports {sorted(others)}"


def test_padding_to_a_size_multiple_is_written_once():
    sources = {p: p.read_text() for p in Path(srkit.__file__).parent.rglob("*.py")}
    assert [p.name for p, text in sources.items() if "def pad_to_multiple" in text] == ["tiling.py"]
    padded = [p.relative_to(METHODS_DIR) for p, text in sources.items() if p.is_relative_to(METHODS_DIR) and "F.pad(" in text]
    assert padded == [Path("realesrgan/method.py")]  # Real-ESRGAN's pre_pad of its network, not a size multiple


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["resshift", "lpnsr", "pg-resshift", "invsr", "dmsr", "ccsr"])
def test_the_step_loop_does_not_make_the_host_wait_for_the_gpu(name, monkeypatch):
    """After a first call (the schedule tables move to the device once), a chain's steps run without a host
    synchronisation: torch's sync debug mode raises on any inside Sampler.sample."""
    from srkit.types import Sampler

    model = srkit.load(name, weights="synthetic", device="cuda", **TINY_CONFIGS[name])
    lr = torch.rand(1, 3, 64, 64, device="cuda")
    model.sr(lr, seed=0)
    sample = Sampler.sample

    def watched(self, *args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return sample(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(Sampler, "sample", watched)
    model.sr(lr, seed=0)
