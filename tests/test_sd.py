import gc
import json
import shutil
import weakref

import pytest
import torch
from omegaconf import OmegaConf

from srkit.backends.sd import DIFFUSERS_WEIGHTS, SDVAE, build_component, count_parameters
from srkit.errors import ConfigError, WeightsNotFoundError
from srkit.registry import config_dir, instantiate
from srkit.weights import load_weights, srkit_home

VAE_SMALL = dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1)
UNET_SMALL = dict(
    block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1, cross_attention_dim=16,
    attention_head_dim=[2, 4], norm_num_groups=8, sample_size=8,
)
CONTROL_SMALL = dict(
    block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], layers_per_block=1,
    cross_attention_dim=16, attention_head_dim=[2, 4], norm_num_groups=8, conditioning_embedding_out_channels=[32],
)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    return tmp_path / "hf_cache"


def yaml(name):
    return OmegaConf.to_container(OmegaConf.load(config_dir() / "backend" / f"{name}.yaml"))


def small(name, **overrides):
    config = yaml(name)
    config["vae"].update(VAE_SMALL)
    config["unet"].update(UNET_SMALL)
    if config.get("controlnet"):
        config["controlnet"].update(CONTROL_SMALL)
    return {**config, **overrides}


def build(config):
    return instantiate(config, where="backend").eval()


def test_full_size_configs_have_the_published_parameter_counts():
    turbo, base = yaml("sd_turbo"), yaml("sd21_base")
    assert turbo["unet"] == base["unet"] and turbo["vae"] == base["vae"]  # both are SD 2.x architecture
    unet, vae = count_parameters("unet", turbo["unet"]), count_parameters("vae", turbo["vae"])
    assert unet == 865_910_724 and round(unet / 1e6, 1) == 865.9
    assert vae == 83_653_863 and round(vae / 1e6, 2) == 83.65
    assert count_parameters("controlnet", base["controlnet"]) == 364_075_520
    with pytest.raises(ConfigError, match=r"does not fit diffusers\.UNet2DConditionModel"):
        count_parameters("unet", {**turbo["unet"], "not_an_option": 1})


@pytest.mark.parametrize("name", ["sd_turbo", "sd21_base"])
def test_synthetic_components_run_on_cpu(name):
    sd = build(small(name, weights="synthetic"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    t = torch.tensor([199])
    with torch.no_grad():
        z = sd.vae.encode(x)
        assert z.shape == (1, 4, 4, 4) and sd.vae.downscale == 8
        assert sd.vae.decode(z).shape == (1, 3, 32, 32)
        sampled = sd.vae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
        assert not torch.equal(sampled, z)
        text = sd.prompt_embedding()
        assert text.shape == (1, 77, 16) and torch.equal(text, sd.prompt_embedding())
        residuals = {}
        if sd.controlnet is not None:
            down, mid = sd.controlnet(z, t, encoder_hidden_states=text, controlnet_cond=z, return_dict=False)
            residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        eps = sd.unet(z, t, encoder_hidden_states=text, **residuals).sample
    assert eps.shape == z.shape and torch.isfinite(eps).all()
    assert (sd.controlnet is not None) == (name == "sd21_base")
    reference = load_weights(build_component("unet", small(name)["unet"]), "synthetic")
    assert all(torch.equal(a, b) for a, b in zip(sd.unet.state_dict().values(), reference.state_dict().values()))


def tiny_text_encoder(folder, hidden=16):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder / "tokenizer")
    config = CLIPTextConfig(vocab_size=4, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")


@pytest.fixture
def diffusers_folder(tmp_path):
    folder = tmp_path / "sd-small"
    config = small("sd_turbo")
    for component in ("vae", "unet"):
        load_weights(build_component(component, config[component]), "synthetic").save_pretrained(folder / component)
        assert (folder / component / DIFFUSERS_WEIGHTS).is_file()
    tiny_text_encoder(folder)
    return folder


def test_loads_a_diffusers_folder_and_caches_the_prompt_embedding(diffusers_folder, monkeypatch):
    from transformers import CLIPTextModel

    loaded = []
    original = CLIPTextModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(CLIPTextModel, "from_pretrained", classmethod(spy))
    sd = build(small("sd_turbo", weights=str(diffusers_folder), prompt="a b"))
    synthetic = build(small("sd_turbo", weights="synthetic"))
    for key, value in sd.unet.state_dict().items():
        assert torch.equal(value, synthetic.unet.state_dict()[key]), key
    embedding = sd.prompt_embedding()
    assert embedding.shape == (1, 77, 16) and len(loaded) == 1
    gc.collect()
    assert loaded[0]() is None  # the text encoder is not kept in memory
    assert torch.equal(sd.prompt_embedding(), embedding) and len(loaded) == 1  # in-memory cache
    assert len(list((srkit_home() / "prompt_embeds").glob("*.safetensors"))) >= 1

    shutil.rmtree(diffusers_folder / "text_encoder")  # the file cache is enough from now on
    again = build(small("sd_turbo", weights=str(diffusers_folder), prompt="a b"))
    assert torch.equal(again.prompt_embedding(), embedding) and len(loaded) == 1
    with pytest.raises(WeightsNotFoundError, match=r"(?s)text encoder is needed once.*'b a'.*text_encoder.*prompt_embeds"):
        again.prompt_embedding("b a")


def test_hub_id_from_the_local_cache_and_controlnet_from_the_unet(diffusers_folder, offline):
    snapshot = offline / "models--someone--sd-small" / "snapshots" / ("0" * 40)
    shutil.copytree(diffusers_folder, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    sd = build(small("sd21_base", model_id="someone/sd-small"))  # weights=None: the model_id, cached
    assert sd.root == snapshot
    for key, value in sd.controlnet.state_dict().items():
        if key in sd.unet.state_dict():
            assert torch.equal(value, sd.unet.state_dict()[key]), key
    with pytest.raises(WeightsNotFoundError, match=r"(?s)someone/absent.*hf download someone/absent"):
        build(small("sd_turbo", model_id="someone/absent"))


@pytest.mark.slow
def test_vae_tiled_decode_matches_untiled_without_seams():
    vae = SDVAE(load_weights(build_component("vae", {**yaml("sd_turbo")["vae"], **VAE_SMALL}), "synthetic")).eval()
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = vae.decode(z)
        tiled = vae.decode_tiled(z, tile=16, overlap=8)
        local = vae.decode_tiled(z, tile=16, overlap=8, statistics="tile")  # per-tile GroupNorm statistics
    assert (tiled - full).abs().max() < 1e-4  # exact up to float rounding, the seams included
    border = 8 * 8
    assert (local - full).abs()[..., border:-border, border:-border].max() > 1e-2  # what the statistics sync fixes
