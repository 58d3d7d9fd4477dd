"""InvSR: Eq. (8) in both forms, Alg. 1 against diffusers' schedulers, steps 1-5, the CLI override, training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import srkit
from srkit.diffusion import Chain
from srkit.errors import ConfigError
from srkit.methods.invsr.method import STEP_TABLE
from srkit.ops.resize import bicubic_upsample
from srkit.train import Trainer

VAE_SMALL = dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1)
UNET_SMALL = dict(
    block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1, cross_attention_dim=16,
    attention_head_dim=[2, 4], norm_num_groups=8, sample_size=8,
)
PREDICTOR_SMALL = dict(block_out_channels=[8, 16], layers_per_block=[1, 1], norm_num_groups=4, attention_head_dim=4,
                       temb_channels=16)
TINY = dict(backend_config={"vae": VAE_SMALL, "unet": UNET_SMALL}, predictor_config=PREDICTOR_SMALL)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    return srkit.load("invsr", weights="synthetic", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def model(one_thread):
    return tiny()


def lr_image(size: int = 16) -> Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_start_state_sigma_form_equals_vp_form(model):
    lr = lr_image()
    z_lr = model.latent_lr(lr, torch.Generator().manual_seed(1))
    for t in (249, 199, 149, 99):
        chain = Chain(lr, z_lr, torch.Generator().manual_seed(2))
        start = model.start_state(model, chain, model.sampler, t)  # the PredictedStart hook
        noise = model.predictor(lr, t, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(start, model.sampler.q_sample(z_lr, t, noise), atol=1e-5, rtol=1e-5)  # Eq. (8)
    assert model.sampler.sigma(199) == pytest.approx(0.5693, abs=1e-4)  # facts §1 step 4


def reference_alg1(model, lr: Tensor, paper_timesteps: list[int], seed: int, scheduler) -> Tensor:
    """Alg. 1 from scratch: z_LR, Eq. (8) via the scheduler's add_noise/sigmas, then scheduler.step calls."""
    g = torch.Generator().manual_seed(seed)
    ts = [t - 1 for t in paper_timesteps]  # the official "minus 1"
    z_lr = model.sd.vae.encode(F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1) * 2 - 1, sample=True,
                               generator=g)
    noise = model.predictor(lr, ts[0], generator=g)
    scheduler.set_timesteps(timesteps=ts)
    context = model.sd.prompt_embedding()
    euler = hasattr(scheduler, "sigmas")
    z = scheduler.add_noise(z_lr, noise, torch.tensor([ts[0]]))  # Euler: z_LR + sigma f_w; DDPM: the VP form
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(z, t)
        eps = model.sd.unet(x, t, encoder_hidden_states=context).sample
        z = scheduler.step(eps, t, z, **({} if euler else {"generator": g})).prev_sample
    return (model.sd.vae.decode(z).clamp(-1, 1) * 0.5 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_alg1_equals_diffusers_schedulers(steps, eta):
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    model = tiny(sampler={"eta": eta})
    betas = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    scheduler = (EulerDiscreteScheduler(**betas, final_sigmas_type="zero") if eta == 0
                 else DDPMScheduler(**betas, clip_sample=False))
    lr = lr_image()
    expected = reference_alg1(model, lr, list(STEP_TABLE[steps]), 7, scheduler)
    torch.testing.assert_close(model.sr(lr, steps=steps, seed=7), expected, atol=1e-5, rtol=0)


def test_learned_parameters_are_the_predictor_alone(model):
    """InvSR Table 2 counts 33.84 M: the noise predictor, not the frozen SD-Turbo around it (benchmarks' params_m
    sums learned_modules(); total_params_m every parameter)."""
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert set(model.learned_modules()) == {"predictor"}
    assert count(model) == count(model.predictor) + count(model.sd)


def test_the_default_sampler_is_the_official_euler_one(model):
    """InvSR's paper numbers come from the official Euler sampler; srkit.load("invsr") and `srkit sr method=invsr`
    compose conf/sampler/ddim.yaml (eta 0), which equals it."""
    from diffusers import EulerDiscreteScheduler

    assert model.sampler.eta == 0.0
    assert srkit.registry.METHODS.get("invsr").default_config()["sampler"]["eta"] == 0.0
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", final_sigmas_type="zero")
    lr = lr_image()
    torch.testing.assert_close(model.sr(lr, steps=3, seed=7), reference_alg1(model, lr, list(STEP_TABLE[3]), 7, scheduler),
                               atol=1e-5, rtol=0)


def test_steps_1_to_5_are_deterministic_per_seed_and_follow_the_official_table(model):
    lr = lr_image(8)
    outs = []
    for steps in range(1, 6):
        out = model.sr(lr, steps=steps, seed=3)
        assert out.shape == (1, 3, 32, 32)
        assert model.last_timesteps == [t - 1 for t in STEP_TABLE[steps]]
        torch.testing.assert_close(model.sr(lr, steps=steps, seed=3), out, atol=0, rtol=0)
        outs.append(out)
    assert not torch.equal(model.sr(lr, steps=2, seed=4), outs[1])  # random z and the predictor's sample
    assert not torch.equal(outs[0], outs[2])
    model.sr(lr, steps=3, seed=3, start_t=200)
    assert model.last_timesteps == [199, 132, 66]
    model.sr(lr, steps=3, seed=3, timesteps=[250, 150, 50])  # a Table 1 row
    assert model.last_timesteps == [249, 149, 49]
    with pytest.raises(ConfigError, match="trained for start_t"):
        model.sr(lr, steps=2, start_t=120)


def test_load_override_and_colour_fix():
    model = tiny(sampler={"start_t": 150}, color_fix="wavelet")
    lr = lr_image(8)
    out = model.sr(lr, steps=2, seed=0)
    assert model.last_timesteps == [149, 74]
    from srkit.ops.color import wavelet_color_fix

    raw = tiny(sampler={"start_t": 150}).sr(lr, steps=2, seed=0)
    reference = bicubic_upsample(lr, 4).clamp(0, 1)
    torch.testing.assert_close(out, wavelet_color_fix(raw, reference).clamp(0, 1), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="color_fix"):
        tiny(color_fix="sharp")


def test_hydra_override_reaches_the_sampler():
    result = subprocess.run(
        [sys.executable, "-m", "srkit.cli", "sr", "input=a.png", "method=invsr", "sampler.steps=3",
         "sampler.start_t=200", "--cfg", "job"], capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "start_t: 200" in result.stdout and "steps: 3" in result.stdout
    model = tiny(sampler={"steps": 3, "start_t": 200})  # the same overrides through srkit.load
    model.sr(lr_image(8), seed=0)
    assert model.last_timesteps == [199, 132, 66]


def test_tiled_inference_matches_shape():
    lr = lr_image(24)
    out = tiny().sr(lr, steps=1, seed=0, tile=16, tile_overlap=8)
    assert out.shape == (1, 3, 96, 96) and torch.isfinite(out).all()


def pairs(n: int = 4, size: int = 16) -> list[dict[str, Tensor]]:
    hr = torch.rand(n, 3, 4 * size, 4 * size, generator=torch.Generator().manual_seed(3))
    return [{"lr": F.avg_pool2d(h[None], 4)[0], "hr": h} for h in hr]


def test_training_lowers_eq11_through_the_shared_trainer(tmp_path):
    method = tiny(for_training=True, discriminator=dict(block_out_channels=[8, 16], norm_num_groups=4))
    data = pairs()
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("lr", "hr")}

    def total() -> float:
        torch.manual_seed(0)  # the start step drawn from S and the predictor's sample
        with torch.no_grad():
            return float(sum(method.losses(batch).values()))

    assert set(method.losses(batch)) == {"l2", "lpips_latent", "gan"}
    before = total()
    trainer = Trainer(method, data, output_dir=tmp_path, max_steps=10, batch_size=2, lr=2e-3, progress=False,
                      checkpoint_every=0, cpu=True)
    assert set(trainer.generator_modules) == {"predictor"} and set(trainer.disc_modules) == {"discriminator"}
    history = trainer.fit()
    assert "disc/discriminator" in history[-1]
    method.eval()
    assert total() < before


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_float32(model, dtype):
    lr = lr_image(8)
    reference = model.sr(lr, steps=1, seed=0)
    half = tiny().to(dtype)
    out = half.sr(lr, steps=1, seed=0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - reference).abs().mean() < 0.05


def test_start_step_from_the_dmsr_estimator_by_config_alone(tmp_path):
    """The timesteps hook of DM-SR's folder, named in a config: InvSR's code imports no DM-SR module."""
    from safetensors.torch import save_file

    channels = [4, 8, 8, 8, 8]
    hook = {"_target_": "srkit.methods.dmsr.hooks.EstimatedStart", "weights": "synthetic", "channels": channels}
    model = tiny(timesteps=hook)
    estimator = model.timestep_provider.estimator
    with torch.no_grad():  # logits one-hot at bin 230: t_hat = 230, nearest trained start step 250
        estimator.head.weight.zero_()
        estimator.head.bias.fill_(-1e4)
        estimator.head.bias[230] = 0.0
    lr = lr_image()
    assert model.timestep_provider.start_t(lr) == 250
    model.sr(lr, steps=2, seed=0)
    assert model.last_timesteps == [249, 124]
    model.sr(lr, steps=2, seed=0, start_t=100)  # an explicit start step wins over the hook
    assert model.last_timesteps == [99, 49]
    # the same estimator read back from a DM-SR weights file (estimator.* keys)
    path = tmp_path / "dmsr.safetensors"
    save_file({f"estimator.{k}": v.contiguous() for k, v in estimator.state_dict().items()}, str(path))
    again = tiny(timesteps={**hook, "weights": str(path)})
    assert again.timestep_provider.start_t(lr) == 250
    source = (Path(srkit.__file__).parent / "methods" / "invsr" / "method.py").read_text()
    assert "dmsr" not in source.replace("srkit.methods.dmsr.hooks.EstimatedStart", "")
