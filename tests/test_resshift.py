"""ResShift: official equivalence of the whole 4-step pipeline (reference sec. 7), loading, tiling, errors."""

from __future__ import annotations

import pytest
import torch
from _reference import assert_matches_golden, assert_uint8_matches_golden, reference
from omegaconf import OmegaConf
from safetensors.torch import load_file

import srkit
from srkit import registry
from srkit.errors import ConfigError, UnsupportedError, WeightsNotFoundError
from srkit.methods.resshift.method import ResShift


def _vq_ddconfig() -> dict:
    return OmegaConf.to_container(OmegaConf.load(registry.config_dir() / "backend" / "vq_f4.yaml"))["ddconfig"]


class ReplayNoise:
    """A noise provider that serves the golden's recorded draw of each step."""

    def __init__(self, golden: dict[str, torch.Tensor]):
        self.golden = golden
        self.served: list[int] = []

    def __call__(self, x_t, *, t, t_prev, x0_pred, generator):
        self.served.append(t)
        return self.golden[f"noise_t{t}"]


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(reference("resshift_pipeline.golden.safetensors")))


def run_replayed(model: ResShift, golden: dict[str, torch.Tensor], monkeypatch) -> tuple[torch.Tensor, dict]:
    """``model.sr(golden lr)`` with the golden's recorded prior and step noise; the denoiser's inputs and outputs."""
    dtype = model.dtype
    replay = ReplayNoise({k: v.to(dtype) for k, v in golden.items() if k.startswith("noise_t")})
    model.sampler.noise = replay
    seen: dict[str, torch.Tensor] = {}
    unet_forward = model.unet.forward

    def recording_unet(x, timesteps, lq):
        t = int(timesteps[0])
        out = unet_forward(x, timesteps, lq)
        seen[f"unet_in_t{t}"], seen[f"x0_pred_t{t}"], seen[f"lq_t{t}"] = x, out, lq
        return out

    monkeypatch.setattr(model.unet, "forward", recording_unet)
    prior_noise = golden["noise_prior"].to(dtype)

    def prior_draw(shape, **kwargs):  # the prior's eps, the first draw of the official run
        assert tuple(shape) == tuple(prior_noise.shape)
        return prior_noise.clone()

    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn", prior_draw)
        sr = model.sr(golden["lr"].to(dtype))
    assert replay.served == [3, 2, 1]  # no noise is drawn for the last step
    return sr, seen


@pytest.mark.slow
def test_official_pipeline_float64(golden, monkeypatch):
    """Sec. 7 golden with synthetic float64 weights and the recorded noise (sec. 9). The prior state (the first
    denoiser input) is upstream of every timestep sinusoid, so it must match to 1e-10; everything after the first
    denoiser call matches to the sinusoid's relative tolerance; uint8 exactly, bar pixels on a rounding edge."""
    sr, seen = run_replayed(ResShift(weights="synthetic", dtype=torch.float64), golden, monkeypatch)
    torch.testing.assert_close(seen["unet_in_t3"], golden["unet_in_t3"], atol=1e-10, rtol=0)
    for t in (3, 2, 1, 0):
        torch.testing.assert_close(seen[f"lq_t{t}"], golden["y0"], atol=0, rtol=0)
        assert_matches_golden(seen[f"unet_in_t{t}"], golden[f"unet_in_t{t}"], name=f"unet_in_t{t}")
        assert_matches_golden(seen[f"x0_pred_t{t}"], golden[f"x0_pred_t{t}"], name=f"x0_pred_t{t}")
    assert_matches_golden(sr, golden["sr"], name="sr")
    sr_uint8 = (sr.float().clamp(0, 1) * 255.0).round().to(torch.uint8)  # util_image.tensor2img
    assert_uint8_matches_golden(sr_uint8, golden["sr_uint8"], golden["sr"], boundary=0.5)


SHIPPED = registry.config_dir() / "method" / "resshift.yaml"
TINY_UNET = {  # a small denoiser of the same architecture (size multiple 16), for fast tiling tests
    "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1], "attention_resolutions": [64],
    "swin_embed_dim": 32, "num_head_channels": 16,
}
TINY_VQ = {"n_embed": 64, "ddconfig": {**_vq_ddconfig(), "ch": 32, "ch_mult": [1, 1, 1], "num_res_blocks": 1}}


def _config(**overrides) -> dict:
    # srkit.load("resshift", ...) once the catalog registers the method; the same build path otherwise
    return {**OmegaConf.to_container(OmegaConf.load(SHIPPED)), **overrides}


def test_missing_weights_say_where_they_were_looked_for_and_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match=r"resshift: cannot find 2 of its weight files") as info:
        ResShift()
    message = str(info.value)  # both files at once, not one per attempt
    assert "'resshift_realsrx4_s4_v3.pth', looked in" in message and "'autoencoder_vq_f4.pth', looked in" in message
    assert str(tmp_path / "weights") in message and "synthetic" in message
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "resshift_realsrx4_s4_v3.pth").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError, match=r"autoencoder_vq_f4\.pth"):
        ResShift(weights=str(folder))
    with pytest.raises(UnsupportedError, match="steps in \\[4, 15\\]"):
        ResShift(steps=8, weights="synthetic")


def test_each_release_is_selectable_by_version(tmp_path):
    """v1 (resshift_realsrx4_s15_v1.pth) beside v2 and v3 in one folder: version picks the file, T follows it."""
    build = {"unet_config": TINY_UNET, "autoencoder_config": TINY_VQ}
    donor = srkit.load("resshift", weights="synthetic", **build)
    files = {"v1": "resshift_realsrx4_s15_v1.pth", "v2": "resshift_realsrx4_s15_v2.pth", "v3": "resshift_realsrx4_s4_v3.pth"}
    for offset, name in enumerate(files.values()):  # distinguishable denoisers
        torch.save({k: v + offset for k, v in donor.unet.state_dict().items()}, tmp_path / name)
    torch.save(donor.autoencoder.state_dict(), tmp_path / "autoencoder_vq_f4.pth")
    key = "out.2.bias"
    for offset, (version, steps) in enumerate([("v1", 15), ("v2", 15), ("v3", 4)]):
        model = srkit.load("resshift", weights=str(tmp_path), version=version, **build)
        assert model.sampler.num_steps == steps
        torch.testing.assert_close(model.unet.state_dict()[key], donor.unet.state_dict()[key] + offset)
    assert srkit.load("resshift", weights=str(tmp_path), steps=15, **build).sampler.num_steps == 15  # v2 by default
    with pytest.raises(ConfigError, match="v1 was trained for T = 15 steps, got steps=4"):
        srkit.load("resshift", weights=str(tmp_path), version="v1", steps=4, **build)
    with pytest.raises(UnsupportedError, match="releases are v1, v2, v3"):
        srkit.load("resshift", weights="synthetic", version="v4", **build)


@pytest.fixture(scope="module")
def tiny() -> ResShift:
    return registry.build_method(_config(unet_config=TINY_UNET, autoencoder_config=TINY_VQ), weights="synthetic", device="cpu")


def test_tiny_networks_pad_seed_and_reject_bad_options(tiny):
    assert tiny.unet.size_multiple == 16
    small = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(0))  # padded to 64 by replication
    first, again, other = (tiny.sr(small, seed=s) for s in (5, 5, 6))
    assert first.shape == (1, 3, 160, 208) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    with pytest.raises(UnsupportedError, match="trained for 4 steps"):
        tiny.sr(small, steps=15)
    with pytest.raises(UnsupportedError, match="no options"):
        tiny.sr(small, strength=1.0)


def test_autoencoder_stage_sets_the_codebook_once_from_latents_and_trains_through_the_quantiser():
    """stage=autoencoder (LDM's VQ loss): the first step sets every code to a latent of its batch, once (a second
    micro-batch of an accumulated first step keeps it); the loss reaches the encoder (straight-through), the decoder
    and the codebook, and counts as ResShift's parameters only the Swin-UNet (what the papers count)."""
    model = srkit.load("resshift", weights="synthetic", for_training=True, stage="autoencoder", loss_weights={"lpips": 0},
                       unet_config=TINY_UNET, autoencoder_config=TINY_VQ)
    model.trainable_modules()["autoencoder"].requires_grad_(True)  # as the trainer does
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    terms = model.losses({"hr": hr, "step": torch.tensor(0)})
    codebook = model.autoencoder.quantize.embedding.weight.detach().clone()
    with torch.no_grad():
        latents = model.autoencoder.encode(hr * 2 - 1).permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
    assert torch.cdist(codebook, latents).min(dim=1).values.max() < 0.01  # every code sits on a latent (+1e-3 noise)
    sum(terms.values()).backward()
    for module in ("encoder", "decoder", "quantize"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model.autoencoder, module).parameters()), module
    model.losses({"hr": torch.rand(2, 3, 16, 16), "step": torch.tensor(0)})  # the first step's second micro-batch
    torch.testing.assert_close(model.autoencoder.quantize.embedding.weight, codebook, rtol=0, atol=0)
    assert set(model.learned_modules()) == {"unet"}


@pytest.mark.slow
def test_tiny_networks_tile_a_512x384_image(tiny):
    """~45 s on 2 loaded cores: the decoder alone convolves a 2048x1536 image, tile by tile."""
    lr = torch.rand(1, 3, 384, 512, generator=torch.Generator().manual_seed(0))
    out = tiny.sr(lr, seed=3, tile=64, tile_overlap=8, tile_batch=8)
    assert out.shape == (1, 3, 1536, 2048) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and float(out.std()) > 0.01


@pytest.mark.slow
def test_load_synthetic_float32_follows_the_golden(golden, monkeypatch):
    """The shipped config with full-size synthetic weights in float32: latents within 1e-4 (sec. 9)."""
    model = registry.build_method(_config(), weights="synthetic", device="cpu")
    assert model.descriptor.name == "resshift" and model.dtype == torch.float32
    sr, seen = run_replayed(model, golden, monkeypatch)
    assert sr.shape == (1, 3, 256, 256) and sr.dtype == torch.float32
    for t in (3, 2, 1, 0):
        torch.testing.assert_close(seen[f"x0_pred_t{t}"].double(), golden[f"x0_pred_t{t}"], atol=1e-4, rtol=0)
