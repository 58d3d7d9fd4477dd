import json

import pytest
import torch
from _reference import assert_matches_golden, reference
from omegaconf import OmegaConf

from srkit.errors import ConfigError
from srkit.methods.invsr.noise_predictor import InvSRNoisePredictor
from srkit.registry import config_dir, instantiate
from srkit.weights import load_weights, synthetic_tensor

SMALL = dict(block_out_channels=[32, 64], layers_per_block=[1, 1], norm_num_groups=8, temb_channels=32, attention_head_dim=16)


@pytest.fixture(scope="module")
def manifest():
    return json.loads(reference("invsr_noise_predictor.manifest.json").read_text())


def yaml_config(**overrides):
    config = OmegaConf.to_container(OmegaConf.load(config_dir() / "backend" / "invsr_noise_predictor.yaml"))
    return {**config, **overrides}


@pytest.fixture(scope="module")
def full_size():
    config = {k: v for k, v in yaml_config().items() if k not in ("_target_", "weights")}
    return config, InvSRNoisePredictor(**config, weights="synthetic")


def test_state_dict_equals_the_manifest(manifest, full_size):
    config, model = full_size
    assert config == manifest["config"]  # the YAML is the official config
    params = dict(model.named_parameters())
    constructed = [(k, list(v.shape), str(v.dtype).removeprefix("torch."), "param" if k in params else "buffer")
                   for k, v in model.state_dict().items()]
    assert constructed == [(e["key"], e["shape"], e["dtype_as_constructed"], e["kind"]) for e in manifest["entries"]]
    assert {e["dtype"] for e in manifest["entries"]} == {"float64"}  # what .double() gives every entry
    assert sum(p.numel() for p in params.values()) == manifest["total_parameters"] == 33_837_576


def test_official_format_checkpoint_from_the_manifest_alone_loads(tmp_path, manifest, full_size):
    """Reference README 0.2: a synthetic official state dict built from the manifest, saved as the trainer does."""
    _, model = full_size
    state = {f"module.{e['key']}": synthetic_tensor(e["key"], tuple(e["shape"]), torch.float32) for e in manifest["entries"]}
    torch.save({"state_dict": state, "iters_start": 1000}, tmp_path / "noise_predictor_sd_turbo_v5.pth")
    load_weights(model, tmp_path, filename="noise_predictor_sd_turbo_v5.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[f"module.{key}"]), key


def test_yaml_builds_through_the_config_path():
    model = instantiate(yaml_config(**SMALL, weights="synthetic"), where="backend invsr_noise_predictor")
    expected = InvSRNoisePredictor(**SMALL, weights="synthetic")
    for (key, value), (_, reference_value) in zip(model.state_dict().items(), expected.state_dict().items()):
        assert torch.equal(value, reference_value), key


def test_call_semantics_on_a_small_config():
    model = load_weights(InvSRNoisePredictor(**SMALL, weights="synthetic").double(), "synthetic").eval()
    image = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    t = torch.tensor([199.0])
    with torch.no_grad():
        raw = model.parameters_of(image, t)
        assert raw.shape == (2, 8, 8, 12)
        torch.testing.assert_close(raw, model.encoder(image * 2 - 1, torch.tensor([199, 199])), rtol=0, atol=0)
        mean, logvar = model.mean_logvar(image, t)
        torch.testing.assert_close(mean, raw[:, :4], rtol=0, atol=0)
        eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3), dtype=mean.dtype)
        noise = model(image, t, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(noise, mean + (0.5 * logvar).exp() * eps)  # reparameterisation, InvSR Sec. 3.2.1
        assert torch.equal(model(image, 199.0, sample_posterior=False), mean)
        assert not torch.allclose(model.parameters_of(image, 249.0), raw)  # the timestep matters
        assert torch.equal(model.parameters_of(image * 2 - 1, t, center_input_sample=False), raw)


def test_invalid_configs_are_clear():
    with pytest.raises(ConfigError, match="double_z"):
        InvSRNoisePredictor(**SMALL, double_z=False, weights="synthetic")
    with pytest.raises(ConfigError, match="same length"):
        InvSRNoisePredictor(**{**SMALL, "block_out_channels": [32]}, weights="synthetic")


def test_missing_default_weights_name_the_official_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"(?s)noise_predictor_sd_turbo_v5\.pth.*OAOA/InvSR"):
        InvSRNoisePredictor(**SMALL)


@pytest.mark.slow
def test_golden_forward_float64():
    """Reference README 4.4: float64, srkit-synthetic-v1 weights, the official call (t = 199; ~1 min on CPU)."""
    from safetensors.torch import load_file

    golden = load_file(str(reference("invsr_noise_predictor.golden.safetensors")))
    model = load_weights(InvSRNoisePredictor(weights="synthetic").double(), "synthetic").eval()
    with torch.no_grad():
        raw = model.parameters_of(golden["image"], golden["timesteps_t199"])
    assert_matches_golden(raw, golden["raw_t199"], name="raw_t199")
    mean, logvar = raw.chunk(2, dim=1)
    assert_matches_golden(mean, golden["mean_t199"], name="mean_t199")
    assert_matches_golden(logvar.clamp(-30, 20), golden["logvar_t199"], name="logvar_t199")
