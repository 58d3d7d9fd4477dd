"""ResShift's VQGAN f4 equals the official code (shared/reference); tiled decoding is seam-free."""

import json

import pytest
import torch
from _reference import reference
from omegaconf import OmegaConf
from safetensors.torch import load_file

from srkit.backends import vq
from srkit.backends.vq import VQModelTorch
from srkit.errors import ConfigError, InvalidImageError
from srkit.registry import config_dir, instantiate
from srkit.types import Autoencoder
from srkit.weights import synthetic_tensor

YAML = config_dir() / "backend" / "vq_f4.yaml"


def small_config(**ddconfig) -> dict:
    """VQ-f4 with 32 base channels and one block per level: same structure, ~40x fewer FLOPs."""
    base = dict(double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2, 4],
                num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    return dict(ddconfig={**base, **ddconfig}, n_embed=512, embed_dim=3)


@pytest.mark.parametrize("manifest", ["resshift_vq.manifest.json", "lpnsr_autoencoder.manifest.json"])
def test_state_dict_layout_equals_the_official_manifest(manifest):
    """ResShift's and LPNSR's VQModelTorch (LoRA arguments create no layer) share one layout and config."""
    data = json.loads(reference(manifest).read_text())
    config = OmegaConf.to_container(OmegaConf.load(YAML))
    for key in ("n_embed", "embed_dim", "ddconfig"):
        assert config[key] == data["config"][key]
    model = instantiate(config, where="vq_f4")
    assert isinstance(model, Autoencoder) and model.downscale == 4 and model.latent_channels == 3
    params = dict(model.named_parameters())
    rows = [(k, list(v.shape), str(v.dtype).removeprefix("torch."), "param" if k in params else "buffer")
            for k, v in model.state_dict().items()]
    assert rows == [(e["key"], e["shape"], e["dtype_as_constructed"], e["kind"]) for e in data["entries"]]
    assert sum(p.numel() for p in params.values()) == data["total_parameters"]


def test_encode_and_quantised_decode_equal_the_official_golden():
    """Relative error ||a - b|| / ||b|| <= 1e-6 (observed ~1e-15) with weights built from the manifest alone."""
    data = json.loads(reference("resshift_vq.manifest.json").read_text())
    golden = load_file(reference("resshift_vq.golden.safetensors"))
    state = {e["key"]: synthetic_tensor(e["key"], tuple(e["shape"]), torch.float64) for e in data["entries"]}
    model = VQModelTorch.from_pretrained(state, dtype=torch.float64, **data["config"])
    with torch.no_grad():
        encoded = model.encode(golden["encode_in"])
        zq, indices = model.quantize(golden["decode_in"])
        decoded = model.decode(golden["decode_in"])
        unquantised = model.decode(golden["decode_in"], force_not_quantize=True)
    assert torch.equal(indices, golden["decode_indices"])
    for ours, name in [(encoded, "encode_out"), (zq, "decode_zq"), (decoded, "decode_out"), (unquantised, "decode_out_no_quant")]:
        assert float((ours - golden[name]).norm() / golden[name].norm()) <= 1e-6, name
        torch.testing.assert_close(ours, golden[name], rtol=0, atol=1e-10)


def test_attention_is_the_explicit_softmax():
    torch.manual_seed(0)
    block = vq.AttnBlock(32).double()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        h = block.norm(x)
        q, k, v = (proj(h).flatten(2) for proj in (block.q, block.k, block.v))  # (B, C, HW)
        weights = torch.softmax(q.transpose(1, 2) @ k / 32**0.5, dim=-1)  # (B, HW queries, HW keys)
        expected = x + block.proj_out((v @ weights.transpose(1, 2)).reshape(x.shape))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)


def test_quantiser_chunks_do_not_change_results(monkeypatch):
    torch.manual_seed(0)
    model = VQModelTorch(**small_config()).double().eval()
    z = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    with torch.no_grad():
        whole = model.decode(z)
        monkeypatch.setattr(vq, "_QUANTIZE_CHUNK", 7)
        chunked = model.decode(z)
        indices = model.quantize.indices(z)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(indices, torch.cdist(flat, model.quantize.embedding.weight).argmin(dim=1))
    zq, _ = model.quantize(z)
    codes = model.quantize.embedding.weight[indices].detach()
    torch.testing.assert_close(zq.permute(0, 2, 3, 1).reshape(-1, 3), codes, rtol=0, atol=1e-15)  # z + (e - z): 1 ulp


def test_shapes_and_errors():
    model = VQModelTorch(**small_config()).eval()
    with torch.no_grad():
        z = model.encode(torch.rand(1, 3, 24, 40) * 2 - 1)
        assert z.shape == (1, 3, 6, 10) and model.decode(z).shape == (1, 3, 24, 40)
    with pytest.raises(InvalidImageError, match="multiples of 4"):
        model.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(InvalidImageError, match=r"latents \(B, 3, h, w\)"):
        model.decode(torch.rand(1, 4, 8, 8))
    with pytest.raises(ConfigError, match="unknown keys"):
        VQModelTorch(**small_config(use_linear_attn=True))
    with pytest.raises(ConfigError, match="lacks the key 'ch'"):
        VQModelTorch(ddconfig={"in_channels": 3}, n_embed=16, embed_dim=3)
    with pytest.raises(ConfigError, match="padding_mode"):
        VQModelTorch(**small_config(padding_mode="reflect"))


@pytest.mark.parametrize("wrap", ["module", "state_dict"])
def test_official_format_checkpoints_load(tmp_path, wrap):
    state = VQModelTorch.from_pretrained("synthetic", **small_config()).state_dict()
    saved = {f"module.{k}": v for k, v in state.items()} if wrap == "module" else {"state_dict": state, "epoch": 3}
    torch.save(saved, tmp_path / "autoencoder_vq_f4.pth")
    model = VQModelTorch.from_pretrained(tmp_path / "autoencoder_vq_f4.pth", **small_config())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    del state["quantize.embedding.weight"]
    with pytest.raises(ConfigError, match=r"1 missing keys: quantize\.embedding\.weight"):
        VQModelTorch.from_pretrained(state, **small_config())


# --------------------------------------------------------------------------------------------
# Tiled decoding


def jump_error(tiled: torch.Tensor, untiled: torch.Tensor) -> float:
    """Largest pixel-to-pixel step of the tiled-minus-untiled difference, along rows or columns.

    A hard tile edge is a jump in the difference map at one column; blending keeps it smooth.
    """
    diff = tiled - untiled
    return max(float((diff[..., 1:] - diff[..., :-1]).abs().max()), float((diff[..., 1:, :] - diff[..., :-1, :]).abs().max()))


def tiled_vs_untiled(config: dict, size: int, tile: int, variants: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model = VQModelTorch.from_pretrained("synthetic", **config)
    z = 0.5 * torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.decode(z), [model.decode_tiled(z, tile=tile, **variant) for variant in variants]


def test_tiled_decode_is_the_untiled_decode():
    # image-wide statistics (exact); per-tile statistics blended over 12 latent px, and over none
    untiled, (exact, blended, hard) = tiled_vs_untiled(
        small_config(), 32, 24, [{}, {"statistics": "tile", "overlap": 12}, {"statistics": "tile", "overlap": 0}]
    )
    assert exact.shape == untiled.shape == (1, 3, 128, 128)
    assert float((exact - untiled).abs().max()) < 1e-4  # every pixel, the seams included (observed 8e-6)
    # Per-tile statistics change the result (observed 0.37 max abs); blending smooths the tile edges (largest
    # step of the error 0.30), without blending they show (1.72).
    assert float((blended - untiled).abs().max()) > 1e-2
    assert 3 * jump_error(blended, untiled) < jump_error(hard, untiled)
    # A tile covering the whole latent is the untiled decode.
    model = VQModelTorch.from_pretrained("synthetic", **small_config())
    z = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_tiled(z, tile=16, overlap=8), model.decode(z), rtol=0, atol=0)


@pytest.mark.slow
def test_full_size_tiled_decode_is_the_untiled_decode():
    config = OmegaConf.to_container(OmegaConf.load(YAML))
    config.pop("_target_")
    untiled, (exact,) = tiled_vs_untiled(config, 40, 16, [{"store": "cpu"}])
    assert float((exact - untiled).abs().max()) < 1e-4
