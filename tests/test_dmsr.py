"""DM-SR: equations on small tensors, the tiny synthetic pipeline (1, 2, 5 steps) and training through the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

import srkit
from srkit.backends.sd import build_component
from srkit.diffusion import Chain
from srkit.errors import ConfigError, UnsupportedError, WeightsNotFoundError
from srkit.methods.dmsr.hooks import EstimatedStart, EstimatedTimesteps
from srkit.methods.dmsr.method import PROMPT
from srkit.methods.dmsr.modules import VGG19_FILE, TimestepAwareEncoder, TimestepEstimator, expected_timestep
from srkit.registry import config_dir
from srkit.samplers.ddpm import DDPMSampler
from srkit.train import Trainer

VAE_SMALL = dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1)
UNET_SMALL = dict(
    block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1, cross_attention_dim=16,
    attention_head_dim=[2, 4], norm_num_groups=8, sample_size=8,
)
DISC_SMALL = dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4,
                  conditioning_embedding_out_channels=[8, 8, 8, 8])
TINY = dict(backend_config={"vae": VAE_SMALL, "unet": UNET_SMALL}, estimator_channels=[4, 4, 8, 8, 8])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    return srkit.load("dmsr", weights="synthetic", **{**TINY, **overrides})


def trainable(**overrides):
    return tiny(for_training=True, discriminator=DISC_SMALL, **overrides)


@pytest.fixture(scope="module")
def model(one_thread):
    return tiny()


def full_vae_config() -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(config_dir() / "backend" / "sd_turbo.yaml"))["vae"]


# ---------------------------------------------------------------- equations


def test_eq2_recovers_the_hr_latent_from_its_noised_version():
    sampler = DDPMSampler()
    x_hr, eps = torch.randn(2, 4, 4, 4, dtype=torch.float64), torch.randn(2, 4, 4, 4, dtype=torch.float64)
    t = torch.tensor([37, 480])
    abar = sampler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x_hr + (1 - abar).sqrt() * eps  # Eq. (1) in the latent space

    def denoiser(x, t):  # a μ_ψ that returns the true noise
        return eps

    # Eq. (2), Z = (X^t - sqrt(1 - abar) eps) / sqrt(abar), is the sampler's epsilon -> x0 conversion
    torch.testing.assert_close(sampler.predict_x0(denoiser(x_t, t), x_t, t), x_hr)
    torch.testing.assert_close((x_t[:1] - (1 - abar[:1]).sqrt() * eps[:1]) / abar[:1].sqrt(), sampler.predict_x0(eps[:1], x_t[:1], 37))


def test_eq10_expected_timestep_is_in_range_and_one_hot_gives_the_bin():
    logits = torch.randn(64, 500) * 10
    t_hat = expected_timestep(logits)
    assert t_hat.shape == (64,) and float(t_hat.min()) >= 0 and float(t_hat.max()) <= 499
    bins = torch.tensor([0, 7, 250, 499])
    one_hot = F.one_hot(bins, 500).float() * 1e4
    torch.testing.assert_close(expected_timestep(one_hot), bins.float())
    torch.testing.assert_close(expected_timestep(torch.zeros(1, 500)), torch.tensor([249.5]))  # uniform


def test_estimator_has_torchvision_vgg19_layout_and_needs_its_weights(tmp_path, monkeypatch):
    from torchvision.models import vgg19

    estimator = TimestepEstimator(backbone_weights="none")
    reference = vgg19().features[:36].state_dict()  # five blocks, last max-pool dropped
    assert {k: v.shape for k, v in estimator.features.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    torch.save({f"features.{k}": v for k, v in reference.items()}, tmp_path / VGG19_FILE)
    loaded = TimestepEstimator(backbone_weights=str(tmp_path / VGG19_FILE))
    torch.testing.assert_close(loaded.features[34].weight, reference["34.weight"])
    t_hat = loaded(torch.rand(2, 3, 32, 32))
    assert t_hat.shape == (2,) and torch.allclose(t_hat, torch.tensor(249.5))  # zero head: uniform softmax
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(WeightsNotFoundError, match=VGG19_FILE):
        TimestepEstimator()
    with pytest.raises(ConfigError, match="5 channel widths"):
        TimestepEstimator([8, 8], backbone_weights="none")


def test_timestep_aware_encoder_starts_as_the_vae_encoder_and_reads_t():
    from srkit.backends.sd import SDVAE
    from srkit.weights import synthetic_state_dict

    vae = build_component("vae", {**full_vae_config(), **VAE_SMALL})
    vae.load_state_dict(synthetic_state_dict(vae))
    encoder = TimestepAwareEncoder(vae)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.tensor([10, 400])
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, t), SDVAE(vae).encode(x))  # zero-initialised projections
        assert [p.out_features for p in encoder.time_proj] == VAE_SMALL["block_out_channels"]
        for proj in encoder.time_proj:
            proj.weight.normal_()
        a, b = encoder(x, t), encoder(x, t.flip(0))
    assert not torch.allclose(a, b)
    assert encoder.encoder is not vae.encoder  # a copy: the frozen VAE encoder is untouched by training


def test_full_size_encoder_has_the_papers_trainable_parameter_count():
    vae = build_component("vae", full_vae_config(), device="meta")
    encoder = TimestepAwareEncoder(vae)
    vae_part = sum(p.numel() for n, p in encoder.named_parameters() if not n.startswith("time_proj"))
    assert round(vae_part / 1e6, 2) == 34.16  # Table 2: 34.16 M trainable parameters (the SD VAE encoder)
    assert [p.out_features for p in encoder.time_proj] == [128, 256, 512, 512]  # App. A.1


# ---------------------------------------------------------------- inference


def test_runs_1_2_and_5_steps_deterministically(model):
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    outs = {}
    for steps in (1, 2, 5):
        out = model.sr(lr, steps=steps, seed=0)
        assert out.shape == (1, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1
        torch.testing.assert_close(model.sr(lr, steps=steps, seed=1), out, atol=0, rtol=0)  # no randomness at all
        outs[steps] = out
    assert not torch.equal(outs[1], outs[2]) and not torch.equal(outs[2], outs[5])
    with pytest.raises(UnsupportedError, match="no options"):
        model.sr(lr, strength=1.0)  # a pg-resshift knob


def test_multi_step_schedule_is_linear_in_t_hat_and_reuses_eps(model, monkeypatch):
    estimated = EstimatedTimesteps()
    for t_hat, steps, expected in [([300, 40], 5, [[300, 240, 180, 120, 60], [40, 32, 24, 16, 8]]), ([0], 1, [[1]])]:
        monkeypatch.setattr(model, "estimate", lambda i_lr, t_hat=t_hat: torch.tensor(t_hat))
        chain = Chain(torch.zeros(len(t_hat), 3, 8, 8), None, None, {"i_lr": None})
        assert estimated(model, chain, model.sampler, steps) == expected  # t̂ = 0 still takes one step at t = 1
    monkeypatch.undo()
    seen = []
    original = model.eps

    def spy(x_t, t, context):
        seen.append((x_t.clone(), t))
        return original(x_t, t, context)

    monkeypatch.setattr(model, "eps", spy)
    lr = torch.rand(1, 3, 8, 8)
    model.sr(lr, steps=2, start_t=300)
    (x0, t0), (x1, t1) = seen
    assert t0 == 300 and t1 == 150
    abar0, abar1 = (model.sampler.alpha_bar(t, x0) for t in (t0, t1))
    with torch.no_grad():
        eps_sr = original(x0, t0, model.sd.prompt_embedding())
    z0 = (x0 - (1 - abar0).sqrt() * eps_sr) / abar0.sqrt()  # Eq. (2)
    torch.testing.assert_close(x1, abar1.sqrt() * z0 + (1 - abar1).sqrt() * eps_sr)  # Sec. 4.4: ε_SR reused


def test_fixed_timestep_prompt_and_odd_sizes(model):
    lr = torch.rand(2, 3, 6, 10)
    base = model.sr(lr)
    assert base.shape == (2, 3, 24, 40)
    assert not torch.equal(model.sr(lr, start_t=50), model.sr(lr, start_t=450))  # Table 3
    assert not torch.equal(model.sr(lr, prompt="an old photograph"), base)  # Table 7
    assert model.sd.prompt == PROMPT
    fixed = tiny(sampler={"start_t": 250})
    torch.testing.assert_close(fixed.sr(lr), fixed.sr(lr, start_t=250))


def test_estimated_start_snaps_the_mean_t_hat_for_another_method(model, tmp_path):
    path = tmp_path / "dmsr.safetensors"
    model.save_weights(path)
    hook = EstimatedStart(str(path), channels=TINY["estimator_channels"], snap_to=range(1, 500))
    lr = torch.rand(2, 3, 8, 8)
    t_hat = float(model.estimator(model.upsample(lr)).mean())
    assert hook.start_t(lr) == round(t_hat) or abs(hook.start_t(lr) - t_hat) <= 0.5


def test_weights_round_trip_and_missing_file(model, tmp_path):
    path = tmp_path / "dmsr.safetensors"
    model.save_weights(path)
    reloaded = tiny(dmsr_weights=str(path))
    lr = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(reloaded.sr(lr), model.sr(lr))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match=r"dmsr_sdturbo\.safetensors"):  # a folder without the file
        tiny(dmsr_weights=str(tmp_path / "empty"))
    init = tiny(dmsr_weights="init")  # the training start: E = VAE encoder, zero heads
    torch.testing.assert_close(init.estimator(torch.rand(1, 3, 32, 32)), torch.tensor([249.5]))
    with pytest.raises(UnsupportedError, match="for_training=True"):
        model.trainable_modules()


# ---------------------------------------------------------------- training


class Pairs(Dataset):
    def __init__(self, n: int = 4, size: int = 8):
        g = torch.Generator().manual_seed(3)
        self.hr = torch.rand(n, 3, 4 * size, 4 * size, generator=g)
        self.lr = F.avg_pool2d(self.hr, 4)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"lr": self.lr[i], "hr": self.hr[i]}


def total_loss(method, batch) -> float:
    torch.manual_seed(0)  # L_dm's t and noise
    with torch.no_grad():
        return float(sum(method.losses(batch).values()))


def test_dm_and_noise_gradients_reach_only_the_encoder():
    method = trainable(loss_weights={"l1": 0, "lpips_latent": 0, "gan": 0})
    method.encoder.requires_grad_(True)
    batch = Pairs(2)[0]
    batch = {k: v[None] for k, v in batch.items()}
    terms = method.losses(batch)
    assert set(terms) == {"dm", "noise"}
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in method.encoder.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in method.encoder.time_proj.parameters())
    frozen = [method.sd.unet, method.sd.vae, method.estimator]
    assert all(p.grad is None for m in frozen for p in m.parameters())


def test_discriminator_sees_the_lr_image_as_condition(monkeypatch):
    method = trainable()
    calls = []
    forward = method.disc.forward

    def spy(z, lr, timestep=0):
        calls.append(lr)
        return forward(z, lr, timestep)

    monkeypatch.setattr(method.disc, "forward", spy)
    batch = {k: v[None] for k, v in Pairs(1)[0].items()}
    method.losses(batch)
    method.discriminator_losses(batch)
    assert len(calls) == 3  # Eq. (5) fake; Eq. (4) real and fake
    for lr in calls:
        torch.testing.assert_close(lr, method.upsample(batch["lr"]))
    z, lr = torch.randn(1, 4, 4, 4), torch.rand(1, 3, 32, 32, requires_grad=True)
    method.disc(z, lr).sum().backward()
    assert lr.grad is not None and float(lr.grad.abs().sum()) > 0  # the output depends on the condition


def test_all_five_losses_train_through_the_shared_trainer(tmp_path):
    method = trainable()
    data = Pairs(4)
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("lr", "hr")}
    assert set(method.losses(batch)) == {"l1", "lpips_latent", "gan", "dm", "noise"}
    before = total_loss(method, batch)
    trainer = Trainer(method, data, output_dir=tmp_path, max_steps=12, batch_size=2, lr=2e-3, progress=False,
                      checkpoint_every=0, cpu=True)
    assert set(trainer.generator_modules) == {"encoder"} and set(trainer.disc_modules) == {"discriminator"}
    history = trainer.fit()
    assert {"loss", "dm", "noise", "gan", "disc/discriminator"} <= set(history[-1])
    method.eval()
    assert total_loss(method, batch) < before


@pytest.mark.parametrize("target", ["l1", "ssim", "lpips"])
def test_estimator_stage_regresses_the_timestep_target(tmp_path, target):
    method = tiny(for_training=True, stage="estimator", timestep_target=target)
    assert set(method.trainable_modules()) == {"estimator"} and method.discriminator_modules() == {}
    data = Pairs(4, size=16)
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in ("lr", "hr")}
    goal = method.timestep_target_of(method.upsample(batch["lr"]), batch["hr"])
    assert goal.shape == (4,) and float(goal.min()) >= 0 and float(goal.max()) <= 499
    before = total_loss(method, batch)
    Trainer(method, data, output_dir=tmp_path, max_steps=10, batch_size=4, lr=1e-2, progress=False,
            checkpoint_every=0, cpu=True).fit()
    assert total_loss(method, batch) < before


def test_train_recipe_composes_with_the_method():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("train", overrides=["method=dmsr", "train=dmsr", "data=custom", "data._target_=x.Y"])
    assert cfg.train.lr == 1e-4 and cfg.train.lr_schedule == "step" and cfg.train.lr_step_size == 100_000
    assert cfg.train.lr_gamma == 0.5 and cfg.train.max_steps == 300_000 and cfg.train.batch_size == 16
    assert cfg.train.checkpoint_every == 1000  # inherited from conf/train/default.yaml
    assert dict(cfg.method.loss_weights) == {"l1": 1.0, "lpips_latent": 2.0, "gan": 0.1, "dm": 0.5, "noise": 1.0}
    assert cfg.sampler._target_ == "srkit.samplers.ddpm.DDPMSampler"
