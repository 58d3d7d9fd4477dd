"""The sr() template, for every built-in method through srkit.load: odd sizes give exactly scale x the input,
model(lr) is sr(lr), a wrong output size is a clear error, and decoder_tile reaches the exact tiled decoder."""

import pytest
import torch
from test_ccsr import TINY as CCSR_TINY
from test_dmsr import TINY as DMSR_TINY
from test_invsr import TINY as INVSR_TINY
from test_resshift import TINY_UNET, TINY_VQ

import srkit
from srkit import MethodDescriptor, SRMethod
from srkit.errors import UnsupportedError

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
