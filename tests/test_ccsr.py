"""CCSR v2 (srkit.methods.ccsr) on tiny synthetic SD 2.1-base components: inference presets, knobs,
v2 ControlNet layout, both training stages through the shared trainer, and the stability study."""

import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import Dataset

import srkit
from srkit.backends.sd import DIFFUSERS_WEIGHTS
from srkit.errors import ConfigError, UnsupportedError, WeightsNotFoundError
from srkit.io import write_image
from srkit.methods.ccsr.method import CCSR
from srkit.metrics.fidelity import psnr
from srkit.metrics.stability_study import run_stability, stability_study
from srkit.ops.resize import bicubic_upsample
from srkit.samplers.nonuniform import chain_length_for
from srkit.train import Trainer

TINY = dict(
    vae=dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1),
    unet=dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
              up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1, cross_attention_dim=16,
              attention_head_dim=[2, 4], norm_num_groups=8, sample_size=8),
    controlnet=dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                    layers_per_block=1, cross_attention_dim=16, attention_head_dim=[2, 4], norm_num_groups=8),
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> CCSR:
    return srkit.load("ccsr", weights="synthetic", backend_config=TINY, **kw)


@pytest.fixture(scope="module")
def model() -> CCSR:
    return tiny()


@pytest.fixture
def lr() -> torch.Tensor:
    return torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class CountingEps:
    """Counts network evaluations (ControlNet + UNet passes; a CFG pair is one batched pass)."""

    def __init__(self, method, monkeypatch):
        self.calls, inner = [], method.eps
        monkeypatch.setattr(method, "eps", lambda x, t, z, c: self.calls.append((t, x.shape[0])) or inner(x, t, z, c))


@pytest.mark.parametrize(("steps", "visited"), [(1, [999]), (2, [999, 499]), (3, [999, 582, 499]), (4, [999, 606, 551, 496])])
def test_presets_run_with_s_evaluations_deterministic_per_seed(model, lr, monkeypatch, steps, visited):
    counter = CountingEps(model, monkeypatch)
    out = model.sr(lr, steps=steps, seed=7)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert model.last_timesteps == visited
    assert len(counter.calls) == steps
    assert torch.equal(out, model.sr(lr, steps=steps, seed=7))
    assert not torch.equal(out, model.sr(lr, steps=steps, seed=8))


def test_preset_maps_steps_to_T():
    assert [chain_length_for(s, 2 / 3, 1 / 2) for s in (1, 2, 3, 4)] == [1, 6, 12, 18]  # S1, S2, Table II
    assert chain_length_for(3, 5 / 6, 1 / 2) == 6  # Table III
    with pytest.raises(ConfigError, match="no loop steps"):
        chain_length_for(2, 0.5, 0.5)


def test_explicit_knobs_and_sampler_config(model, lr):
    model.sr(lr, seed=0, T=6, t_max=5 / 6, t_min=1 / 2)
    assert model.last_timesteps == [999, 665, 499]
    other = tiny(sampler={"t_max": 5 / 6, "t_min": 2 / 3})
    other.sr(lr, steps=2, seed=0)
    assert other.last_timesteps == [999, 665]
    with pytest.raises(UnsupportedError, match="no options"):
        model.sr(lr, seed=0, strength=1)
    with pytest.raises(ConfigError, match="pass steps or T"):
        model.sr(lr, steps=2, seed=0, t_max=0.9, t_min=0.1)


def test_guidance_applies_in_the_loop_only(model, lr, monkeypatch):
    counter = CountingEps(model, monkeypatch)
    s2 = model.sr(lr, steps=2, seed=1)
    assert counter.calls == [(999, 1), (499, 2)]  # no CFG at T (v2), a batched CFG pair at 499
    assert not torch.equal(s2, model.sr(lr, steps=2, seed=1, guidance_scale=1.0))
    assert torch.equal(model.sr(lr, steps=1, seed=1), model.sr(lr, steps=1, seed=1, guidance_scale=1.0))


def test_adain_colour_fix_matches_the_upsampled_lr_statistics(model, lr):
    """sr() colour-fixes the whole output (AdaIN, CCSR's default) against the bicubic x4 LR."""
    fixed = model.sr(lr, steps=1, seed=0)
    up = bicubic_upsample(lr, 4).clamp(0, 1)
    unclamped = fixed.clamp(1e-3, 1 - 1e-3) == fixed
    assert unclamped.float().mean() > 0.9
    torch.testing.assert_close(fixed.mean((2, 3)), up.mean((2, 3)), atol=2e-2, rtol=0)
    none = model.sr(lr, steps=1, seed=0, color_fix="none")
    assert not torch.equal(none, model.sr(lr, steps=1, seed=0, color_fix="wavelet"))


def test_uniform_ddpm_baseline_visits_uniform_timesteps(model, lr, monkeypatch):
    counter = CountingEps(model, monkeypatch)
    out = model.sr(lr, steps=2, seed=0, sampling="uniform")
    assert [t for t, _ in counter.calls] == [999, 499] and out.shape == (1, 3, 32, 32)
    assert not torch.equal(out, model.sr(lr, steps=2, seed=0))
    with pytest.raises(ConfigError, match="sampling"):
        model.sr(lr, seed=0, sampling="karras")


def test_tiled_inference_blends_tiles(model):
    lr = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    out = model.sr(lr, steps=1, seed=0, tile=8, tile_overlap=4)
    assert out.shape == (1, 3, 64, 96) and torch.isfinite(out).all()
    assert torch.equal(out, model.sr(lr, steps=1, seed=0, tile=8, tile_overlap=4))


def test_v2_controlnet_layout_init_and_release_folder(tmp_path, lr, model):
    keys = model.controlnet.state_dict().keys()
    assert {"condition_conv_in.weight", "condition_conv_in.bias"} <= keys
    assert not any(k.startswith("controlnet_cond_embedding") for k in keys)
    assert model.controlnet.condition_conv_in.in_channels == 4
    init = tiny(ccsr_weights="init")
    torch.testing.assert_close(init.controlnet.conv_in.weight, init.sd.unet.conv_in.weight)  # ControlNet from the UNet
    model.save_weights(tmp_path)
    assert (tmp_path / "controlnet" / DIFFUSERS_WEIGHTS).is_file() and (tmp_path / "vae" / DIFFUSERS_WEIGHTS).is_file()
    loaded = tiny(ccsr_weights=str(tmp_path))
    assert torch.equal(loaded.sr(lr, steps=2, seed=3), model.sr(lr, steps=2, seed=3))


def test_missing_release_folder_names_where_it_looked(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nothing"):
        tiny(ccsr_weights=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="stage must be 1"):
        tiny(stage=3)


class Pairs(Dataset):
    def __init__(self, n: int = 4):
        self.hr = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        self.lr = F.avg_pool2d(self.hr, 4)

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return {"lr": self.lr[i], "hr": self.hr[i]}


def fixed_loss(method, data) -> float:
    torch.manual_seed(0)
    batch = {"lr": data.lr, "hr": data.hr, "step": torch.tensor(0)}
    with torch.enable_grad():
        return float(sum(method.losses(batch).values()).detach())


@pytest.mark.parametrize(("stage", "recipe", "terms"), [
    (1, "v2", {"diff", "l_T", "l_tmax"}), (2, "v2", {"mse", "gan"}),
    pytest.param(2, "paper", {"nll", "gan"}, marks=pytest.mark.slow),  # synthetic VGG16 LPIPS: ~7 s
])
def test_training_lowers_the_loss_and_trains_only_its_stage(tmp_path, stage, recipe, terms):
    method = tiny(ccsr_weights="init" if stage == 1 else "synthetic", stage=stage, stage2_recipe=recipe, for_training=True,
                  discriminator={"ndf": 4, "n_layers": 1})
    data = Pairs()
    frozen = {name: p.detach().clone() for name, p in method.named_parameters()}
    trained = "controlnet." if stage == 1 else "sd.vae.vae.decoder."
    before = fixed_loss(method, data)
    trainer = Trainer(method, data, output_dir=tmp_path, max_steps=8, batch_size=2, lr=1e-3, cpu=True, progress=False,
                      checkpoint_every=0, log_every=1)
    logs = trainer.fit(resume=False)
    assert terms <= set(logs[0])
    assert fixed_loss(method, data) < before
    for name, p in method.named_parameters():
        assert name.startswith(("disc.", trained)) or torch.equal(p, frozen[name]), f"{name} is frozen in stage {stage}"
    assert any(not torch.equal(p, frozen[n]) for n, p in method.named_parameters() if n.startswith(trained))


def test_stage2_needs_its_discriminator():
    data = Pairs(1)
    with pytest.raises(ConfigError, match="for_training=True"):
        tiny(stage=2).losses({"lr": data.lr, "hr": data.hr})


def test_stability_study_matches_direct_computation(model):
    pairs = [(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)),) for i in range(2)]
    pairs = [(lr, F.interpolate(lr[None], scale_factor=4, mode="bicubic")[0].clamp(0, 1)) for (lr,) in pairs]
    variants = [{"label": "S2", "sr": {"steps": 2}}, {"label": "DDPM", "sr": {"steps": 2, "sampling": "uniform"}}]
    results = stability_study(model, pairs, variants, [0, 1, 2], {"psnr": psnr}, crop_border=4)
    assert [r.label for r in results] == ["S2", "DDPM"]
    runs = torch.stack([torch.stack([model.sr(lr[None], seed=s, steps=2)[0] for s in (0, 1, 2)]) for lr, _ in pairs], 1)
    values = torch.stack([psnr(runs[i], torch.stack([hr for _, hr in pairs])) for i in range(3)]).double()
    assert results[0].mean["psnr"] == pytest.approx(float(values.mean()), rel=1e-6)
    assert results[0].g_std["psnr"] == pytest.approx(float(values.std(0, correction=0).mean()), rel=1e-5)
    cropped = runs[..., 4:-4, 4:-4].double()
    assert results[0].l_std == pytest.approx(float(cropped.std(0, correction=0).mean((1, 2, 3)).mean()), rel=1e-5)


def test_stability_command_writes_json_and_markdown(tmp_path, monkeypatch):
    from srkit.metrics import iqa

    def unavailable(name, device):
        raise iqa.MetricUnavailable(f"no {name} here")

    monkeypatch.setattr(iqa, "_pyiqa_metric", unavailable)
    root = tmp_path / "data"
    for i in range(2):
        hr = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i))
        write_image(root / "HR" / f"{i}.png", hr)
        write_image(root / "LR" / f"{i}.png", F.avg_pool2d(hr[None], 4)[0])
    cfg = OmegaConf.load(srkit.registry.config_dir() / "stability.yaml")
    method = {**srkit.registry.METHODS.get("ccsr").default_config(), "backend_config": TINY}  # what method=ccsr composes
    cfg.merge_with({"method": method, "weights": "synthetic", "runs": 2, "metrics": ["psnr", "ssim", "musiq"],
                    "dataset": str(root), "out": str(tmp_path / "out"), "device": "cpu"})
    report = run_stability(cfg)
    saved = json.loads((tmp_path / "out" / "stability.json").read_text())
    assert saved["images"] == 2 and saved["seeds"] == [0, 1] and saved["unavailable"] == {"musiq": "no musiq here"}
    assert [r["label"] for r in saved["results"]] == [v["label"] for v in report["results"]] == [
        "CCSR-S2 (non-uniform)", "CCSR-S1 (one step)", "DDPM-S2 (uniform sampling, CCSR's ControlNet and fine-tuned decoder)"]
    table = (tmp_path / "out" / "stability.md").read_text()
    assert "PSNR/G-STD" in table and "L-STD" in table and table.count("| CCSR-S") == 2
