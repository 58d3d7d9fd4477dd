"""ResShift's Swin-UNet and LPNSR's noise predictor equal the official code (shared/reference)."""

import json
import math

import pytest
import torch
from _reference import assert_matches_golden, reference
from omegaconf import OmegaConf
from safetensors.torch import load_file

from srkit.backends.swin_unet import (
    SwinUNetNoisePredictor,
    UNetModelSwin,
    relative_position_index,
    shifted_window_mask,
)
from srkit.errors import ConfigError, InvalidImageError, UnsupportedError
from srkit.registry import config_dir, instantiate
from srkit.weights import synthetic_tensor

# A small network with every feature of the real one (two levels, Swin layers with and without shift).
TINY = dict(
    image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16, 8),
    swin_embed_dim=32, num_head_channels=16, window_size=4, lq_size=16,
)


def layout(model: torch.nn.Module) -> list[tuple[str, list[int], str, str]]:
    params = dict(model.named_parameters())
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch."), "param" if k in params else "buffer")
            for k, v in model.state_dict().items()]


def manifest_buffers(manifest: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The official buffers from the README sec. 1.2 formulas, for the buffer entries of ``manifest``."""
    state = {}
    for entry in manifest["entries"]:
        key, shape = entry["key"], entry["shape"]
        if entry["kind"] != "buffer":
            continue
        if key.endswith("relative_position_index"):
            state[key] = relative_position_index(math.isqrt(shape[0]))
        else:  # attn_mask of a shifted block: (nW, w^2, w^2) at the construction size, shift w/2
            window = math.isqrt(shape[1])
            side = window * math.isqrt(shape[0])
            state[key] = shifted_window_mask(side, side, window, window // 2).to(dtype)
    return state


def manifest_state(manifest: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """An official state dict from the manifest alone (README sec. 0.2): synthetic-v1 params, formula buffers."""
    buffers = manifest_buffers(manifest, dtype)
    return {
        e["key"]: buffers[e["key"]] if e["kind"] == "buffer" else synthetic_tensor(e["key"], tuple(e["shape"]), dtype)
        for e in manifest["entries"]
    }


@pytest.mark.parametrize(
    ("cls", "yaml", "manifest"),
    [
        (UNetModelSwin, "resshift_unet_v3", "resshift_unet.manifest.json"),
        (SwinUNetNoisePredictor, "lpnsr_noise_predictor", "lpnsr_noise_predictor.manifest.json"),
    ],
)
def test_state_dict_layout_equals_the_official_manifest(cls, yaml, manifest):
    data = json.loads(reference(manifest).read_text())
    config = OmegaConf.to_container(OmegaConf.load(config_dir() / "backend" / f"{yaml}.yaml"))
    official = {("in_channels" if k == "latent_channels" else k): v for k, v in data["config"].items()}
    for key, value in config.items():  # the YAML holds the official values
        if key in official:
            assert value == official[key], key
    model = instantiate(config, where=yaml)
    assert type(model) is cls
    expected = [(e["key"], e["shape"], e["dtype_as_constructed"], e["kind"]) for e in data["entries"]]
    assert layout(model) == expected
    assert sum(p.numel() for p in model.parameters()) == data["total_parameters"]
    # Persistent buffers hold the official values (README sec. 1.2 formulas).
    state = model.state_dict()
    for key, value in manifest_buffers(data, torch.float32).items():
        assert torch.equal(state[key], value), key


def test_relative_position_index_follows_the_reference_formula():
    window = 8
    expected = torch.empty(64, 64, dtype=torch.int64)
    for i in range(64):
        for j in range(64):
            (hi, wi), (hj, wj) = divmod(i, window), divmod(j, window)
            expected[i, j] = (hi - hj + 7) * 15 + (wi - wj + 7)
    assert torch.equal(relative_position_index(window), expected)


@pytest.mark.parametrize(("height", "width"), [(16, 16), (16, 32), (32, 16), (24, 40)])
def test_shifted_window_mask_reproduces_the_official_quirk(height, width):
    window, shift = 8, 4
    rows = [0 if h < height - window else 1 if h < height - shift else 2 for h in range(height)]
    windows = [(hn, wn) for hn in range(height // window) for wn in range(width // window)]
    expected = torch.zeros(len(windows), 64, 64)
    for n, (hn, _) in enumerate(windows):
        ids = [rows[hn * window + k % window] for k in range(64)]  # column-major ids, row-only regions
        for i in range(64):
            for j in range(64):
                expected[n, i, j] = 0.0 if ids[i] == ids[j] else -100.0
    mask = shifted_window_mask(height, width, window, shift)
    assert torch.equal(mask, expected)
    last_row = len(windows) - width // window
    assert mask[:last_row].abs().sum() == 0 and mask[last_row:].abs().sum() > 0


def test_tiny_denoiser_forward_batching_and_dtypes():
    torch.manual_seed(0)
    model = UNetModelSwin(**TINY).double().eval()
    assert model.size_multiple == 8  # window 4 at the half-resolution level
    x, lq = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        both = model(x, torch.tensor([3, 1]), lq=lq)
        single = model(x[1:], 1, lq=lq[1:])
        shifted = model(x[1:], 2, lq=lq[1:])
        wide = model(torch.randn(1, 3, 16, 24, dtype=torch.float64), 0, lq=torch.zeros(1, 3, 16, 24, dtype=torch.float64))
    assert both.shape == (2, 3, 16, 16) and both.dtype == torch.float64
    torch.testing.assert_close(both[1:], single, rtol=0, atol=1e-12)
    assert (shifted - single).abs().max() > 1e-3  # the timestep matters
    assert wide.shape == (1, 3, 16, 24)
    with torch.no_grad():
        assert model.float()(x.float(), 1, lq=lq.float()).dtype == torch.float32


def test_input_errors_name_the_fix():
    model = UNetModelSwin(**TINY)
    with pytest.raises(InvalidImageError, match="multiples of 8"):
        model(torch.randn(1, 3, 12, 16), 0, lq=torch.randn(1, 3, 12, 16))
    with pytest.raises(InvalidImageError, match="one batch and spatial size"):
        model(torch.randn(1, 3, 16, 16), 0, lq=torch.randn(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="lq_size == image_size"):
        UNetModelSwin(**{**TINY, "lq_size": 32})
    with pytest.raises(ConfigError, match="one entry per channel_mult level"):
        UNetModelSwin(**{**TINY, "num_res_blocks": [1, 1, 1]})


def test_patch_norm_adds_the_official_norm_keys():
    keys = UNetModelSwin(**TINY, patch_norm=True).state_dict()
    assert "input_blocks.1.1.patch_embed.norm.weight" in keys and "input_blocks.1.1.patch_unembed.norm.bias" in keys


def test_tiny_noise_predictor_distribution():
    torch.manual_seed(0)
    model = SwinUNetNoisePredictor(**TINY).double().eval()
    assert model.input_blocks[0][0].weight.shape[1] == 9 and model.out[2].weight.shape[0] == 6
    z_t, x0, lq = (torch.randn(1, 3, 16, 16, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        raw = model(z_t, x0, lq, 2)
        mean, logvar = model.mean_logvar(raw)
        drawn = model.sample(z_t, x0, lq, 2, generator=torch.Generator().manual_seed(5))
        assert torch.equal(model.sample(z_t, x0, lq, 2, sample_posterior=False), mean)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(drawn, mean + torch.exp(0.5 * logvar) * eps, rtol=0, atol=1e-12)
    assert torch.equal(model.mean_logvar(torch.full((1, 6, 2, 2), 50.0))[1], torch.full((1, 3, 2, 2), 20.0))
    plain = SwinUNetNoisePredictor(**TINY, double_z=False)
    assert plain.out[2].weight.shape[0] == 3
    with pytest.raises(UnsupportedError, match="double_z"):
        plain.mean_logvar(raw)


@pytest.mark.parametrize("cls", [UNetModelSwin, SwinUNetNoisePredictor])
@pytest.mark.parametrize("wrap", ["module", "state_dict"])
def test_official_format_checkpoints_load(tmp_path, cls, wrap):
    source = cls.from_pretrained("synthetic", **TINY)
    state = source.state_dict()
    if wrap == "module":  # EMA file of a DDP-wrapped model (ResShift trainer)
        saved: dict = {f"module.{k}": v for k, v in state.items()}
    else:  # full training checkpoint
        saved = {"state_dict": state, "iters_start": 10, "amp_scaler": {}}
    torch.save(saved, tmp_path / "ckpt.pth")
    loaded = cls.from_pretrained(tmp_path / "ckpt.pth", **TINY)
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_mismatched_checkpoints_name_the_keys(tmp_path):
    state = UNetModelSwin.from_pretrained("synthetic", **TINY).state_dict()
    broken = {("renamed.weight" if k == "out.2.weight" else k): v for k, v in state.items()}
    with pytest.raises(ConfigError, match=r"1 missing keys: out\.2\.weight.*1 unexpected keys: renamed\.weight"):
        UNetModelSwin.from_pretrained(broken, **TINY)
    with pytest.raises(ConfigError, match=r"shape mismatches: input_blocks\.0\.0\.weight \(32, 6, 3, 3\) != \(32, 9, 3, 3\)"):
        SwinUNetNoisePredictor.from_pretrained(state, **TINY)


# --------------------------------------------------------------------------------------------
# Goldens of the official code in float64 (full 118M-parameter networks; ~1 min each on 2 cores)


@pytest.mark.slow
def test_resshift_unet_equals_the_official_golden():
    manifest = json.loads(reference("resshift_unet.manifest.json").read_text())
    golden = load_file(reference("resshift_unet.golden.safetensors"))
    model = UNetModelSwin.from_pretrained(manifest_state(manifest, torch.float64), dtype=torch.float64)
    x, lq = golden["x"].expand(2, -1, -1, -1), golden["lq"].expand(2, -1, -1, -1)
    with torch.no_grad():  # the two golden calls as one batch (samples are independent)
        out = model(x, torch.cat([golden["timesteps_t3"], golden["timesteps_t1"]]), lq=lq)
    for i, name in enumerate(["out_t3", "out_t1"]):
        assert_matches_golden(out[i : i + 1], golden[name], name=name)


@pytest.mark.slow
def test_lpnsr_noise_predictor_equals_the_official_golden():
    manifest = json.loads(reference("lpnsr_noise_predictor.manifest.json").read_text())
    golden = load_file(reference("lpnsr_noise_predictor.golden.safetensors"))
    model = SwinUNetNoisePredictor.from_pretrained(manifest_state(manifest, torch.float64), dtype=torch.float64)
    z_t, x0, lq = (golden[k].expand(2, -1, -1, -1) for k in ("x_t", "pred_x0", "lr"))
    with torch.no_grad():
        raw = model(z_t, x0, lq, torch.cat([golden["timesteps_t3"], golden["timesteps_t1"]]))
    mean, logvar = model.mean_logvar(raw)
    for i, k in enumerate(["t3", "t1"]):
        for name, value in [("raw", raw), ("mean", mean), ("logvar", logvar)]:
            assert_matches_golden(value[i : i + 1], golden[f"{name}_{k}"], name=f"{name}_{k}")
