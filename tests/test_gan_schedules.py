"""Each method's GAN recipe (``conf/train/<method>.yaml``, key ``gan``) against its official training code, on tiny models.

What the official code does (file, where; read for facts, see the recipes' comments):

* LPNSR (Faze-Hsw/LPNSR ``train_noise_predictor.py``): even global steps take the discriminator's branch, odd steps
  update g_w (``disc_update_freq 2``); the discriminator and the generator's GAN term (0.1) start at
  ``disc_start_epoch 2`` with epochs counted from 1, i.e. after one epoch; ``d_loss = (real + fake) / 2``; the
  cosine schedule steps the generator's optimizer only.
* InvSR (zsyOAOA/InvSR ``trainer.py``, ``configs/sd-turbo-sr-ldis.yaml``): the generator's GAN term (0.1) is 0 while
  ``current_iters = step + 1 <= dis_init_iterations 10000``; the discriminator is updated on every iteration, sees the
  start timestep and the prompt embedding, and x0 clamped to +-10; ``hinge_d_loss`` is halved; the generator's LR
  warms up linearly over 2000 iterations, the discriminator's (Adam, weight decay 1e-3) does not.
* CCSR stage 2 (v2 ``train_ccsr_stage2.py``): the generator's GAN term (0.05) is on once ``global_step > 100``; the
  discriminator is updated on every step, its hinge loss times 0.5.
* DM-SR (paper Eq. (4)-(5), App. A.2; no code): both players from the first step, Eq. (4) unweighted.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import Dataset

import srkit
from srkit.errors import ConfigError
from srkit.losses.discriminators import UNetDiscriminator
from srkit.losses.gan import GAN_FACTOR, generator_loss
from srkit.registry import config_dir
from srkit.train import GanSchedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Pairs(Dataset):
    """``n`` random HR crops and their 4x average-pooled LR."""

    def __init__(self, n: int = 4, hr: int = 32):
        self.hr = torch.rand(n, 3, hr, hr, generator=torch.Generator().manual_seed(5))
        self.lr = F.avg_pool2d(self.hr, 4)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"lr": self.lr[i], "hr": self.hr[i]}


def recipe(name: str, method: str) -> dict:
    """``conf/train/<name>.yaml`` as ``srkit train method=<method> train=<name>`` composes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"method={method}", f"train={name}"])
    return OmegaConf.to_container(cfg.train, resolve=True)  # type: ignore[return-value]


def recipe_trainer(name: str, method_name: str, method, data: Dataset, tmp_path, **overrides) -> Trainer:
    """A Trainer with every setting of the shipped recipe, but the run's size (steps, batch, output)."""
    config = {k: v for k, v in recipe(name, method_name).items() if k != "_target_"}
    config.update(output_dir=tmp_path, max_steps=200_000, batch_size=1, grad_accum=1, checkpoint_every=0, progress=False,
                  cpu=True, mixed_precision="no", ema_decay=None)
    config.update(overrides)
    return Trainer(method, data, **config)


def drive(trainer: Trainer, steps: int) -> list[dict]:
    """Run ``steps`` training steps; per step: the log, whether each player's parameters moved, the GAN factor."""
    batches, records = trainer._batches(), []
    for _ in range(steps):
        g_before = [p.detach().clone() for p in trainer.generator_params]
        d_before = [p.detach().clone() for p in trainer.disc_params]
        step_batches = [next(batches) for _ in range(trainer.grad_accum)]
        log = trainer.train_step(step_batches)
        records.append({
            "log": log, "factor": float(step_batches[0][GAN_FACTOR]),
            "g": any(not torch.equal(a, b) for a, b in zip(g_before, trainer.generator_params)),
            "d": any(not torch.equal(a, b) for a, b in zip(d_before, trainer.disc_params)),
        })
    return records


def spy(module: torch.nn.Module) -> list[dict]:
    """Record every call of ``module``: its positional and keyword arguments and its output."""
    calls: list[dict] = []

    def hook(mod, args, kwargs, output):
        calls.append({"args": args, "kwargs": kwargs, "out": output})

    module.register_forward_hook(hook, with_kwargs=True)
    return calls


def one_batch(data: Dataset, n: int = 1, **extra) -> dict[str, Tensor]:
    return {**{k: torch.stack([data[i][k] for i in range(n)]) for k in ("lr", "hr")}, **extra}


def assert_disc_loss_weight(trainer: Trainer, batch: dict, weight: float) -> None:
    """The trainer's discriminator loss is ``weight`` times the method's plain one (the same random draws)."""
    torch.manual_seed(0)
    plain = trainer.method.discriminator_losses(batch)
    torch.manual_seed(0)
    weighted = trainer._discriminator_losses(batch)
    assert plain.keys() == weighted.keys()
    for key in plain:
        torch.testing.assert_close(weighted[key], weight * plain[key])


# ------------------------------------------------------------------------------------------ the schedule itself


def test_schedule_is_a_pure_function_of_the_step_and_counts_epochs():
    schedule = GanSchedule(disc_start=1, unit="epoch", alternate=True, disc_loss_weight=0.5).in_steps(4)
    assert (schedule.disc_start, schedule.generator_start, schedule.unit) == (4, 4, "step")
    pattern = [(schedule.updates_generator(k), schedule.updates_discriminator(k), schedule.gan_factor(k)) for k in range(8)]
    assert pattern == [(False, False, 0.0), (True, False, 0.0), (False, False, 0.0), (True, False, 0.0),
                       (False, True, 1.0), (True, False, 1.0), (False, True, 1.0), (True, False, 1.0)]
    delayed = GanSchedule(disc_start=0, gan_start=3)
    assert [(delayed.updates_discriminator(k), delayed.gan_factor(k)) for k in range(4)] == [
        (True, 0.0), (True, 0.0), (True, 0.0), (True, 1.0)]
    assert GanSchedule.from_config({"disc_start": 2}) == GanSchedule(disc_start=2)
    with pytest.raises(ConfigError, match="unknown gan schedule keys"):
        GanSchedule.from_config({"disc_strat": 2})
    with pytest.raises(ConfigError, match="in_steps"):
        GanSchedule(unit="epoch").gan_factor(0)
    with pytest.raises(ConfigError, match="disc_loss_weight"):
        GanSchedule(disc_loss_weight=0)


OFFICIAL = {  # recipe -> (method, the recipe's values, a source file its comment names)
    "lpnsr": ("lpnsr", {"gan": {"disc_start": 1, "gan_start": None, "unit": "epoch", "alternate": True, "disc_loss_weight": 0.5,
                                "disc_lr_schedule": "constant"},
                        "lr": 5e-5, "disc_lr": 5e-5, "disc_optimizer": "adamw", "disc_weight_decay": 0.0, "warmup_steps": 0,
                        "grad_clip": 1.0}, "train_noise_predictor.py"),
    "invsr": ("invsr", {"gan": {"disc_start": 0, "gan_start": 10000, "unit": "step", "alternate": False, "disc_loss_weight": 0.5,
                                "disc_lr_schedule": "constant"},
                        "lr": 5e-5, "disc_lr": 5e-5, "disc_optimizer": "adam", "disc_weight_decay": 1e-3, "warmup_steps": 2000,
                        "lr_schedule": "constant", "grad_clip": None}, "trainer.py"),
    "ccsr_stage2": ("ccsr", {"gan": {"disc_start": 0, "gan_start": 101, "unit": "step", "alternate": False,
                                     "disc_loss_weight": 0.5, "disc_lr_schedule": "generator"},
                             "lr": 5e-6, "disc_lr": 5e-6, "disc_optimizer": "adamw", "weight_decay": 1e-2,
                             "disc_weight_decay": 1e-2, "warmup_steps": 0, "lr_schedule": "constant", "grad_clip": 1.0,
                             "max_steps": 2000}, "train_ccsr_stage2.py"),
    "dmsr": ("dmsr", {"gan": {"disc_start": 0, "gan_start": 0, "unit": "step", "alternate": False, "disc_loss_weight": 1.0,
                              "disc_lr_schedule": "generator"},
                      "lr": 1e-4, "disc_lr": 1e-4, "disc_optimizer": "adamw", "warmup_steps": 0}, "Eq. (4)"),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_each_recipe_carries_the_official_values_and_names_its_source(name):
    method, values, source = OFFICIAL[name]
    config = recipe(name, method)
    for key, value in values.items():
        assert config[key] == value, (name, key)
    comments = "\n".join(line for line in (config_dir() / "train" / f"{name}.yaml").read_text().splitlines()
                         if line.lstrip().startswith("#"))
    assert source in comments


def test_the_start_lives_in_the_trainer_only():
    """No method config carries a second copy of a GAN start (the issue's LPNSR gan_start vs disc_start)."""
    for path in (config_dir() / "method").glob("*.yaml"):
        keys = set(OmegaConf.to_container(OmegaConf.load(path)))
        assert not keys & {"gan_start", "disc_start", "disc_alternate"}, path.name
    import inspect

    from srkit.methods.lpnsr.method import LPNSR

    assert "gan_start" not in inspect.signature(LPNSR).parameters


# ------------------------------------------------------------------------------------------ per method, tiny models


def test_lpnsr_recipe_starts_both_players_after_one_epoch_alternating_and_halves_the_discriminator(tmp_path):
    from test_lpnsr import TINY, _config

    torch.manual_seed(0)
    method = srkit.registry.build_method(
        _config(**TINY, for_training=True, lpips_weights="synthetic", discriminator={"ndf": 8, "n_layers": 2}),
        weights="synthetic", device="cpu")
    data = Pairs(n=3, hr=64)  # batch 1: an epoch is 3 steps, so the GAN starts at step 3
    trainer = recipe_trainer("lpnsr", "lpnsr", method, data, tmp_path, max_steps=20)
    assert (trainer.gan.disc_start, trainer.gan.generator_start) == (3, 3)
    records = drive(trainer, 6)
    # even steps: the discriminator's (nothing before it starts); odd steps: g_w's
    assert [(r["g"], r["d"]) for r in records] == [(False, False), (True, False), (False, False), (True, False),
                                                   (False, True), (True, False)]
    assert [r["factor"] for r in records] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert records[1]["log"]["gan"] == 0.0 and records[3]["log"]["gan"] != 0.0 and records[5]["log"]["gan"] != 0.0
    # the discriminator's LR stays at disc_lr while g_w's decays (the official scheduler steps g_w's optimizer only)
    assert trainer.schedulers[1].get_last_lr()[0] == pytest.approx(5e-5)
    assert trainer.schedulers[0].get_last_lr()[0] < 5e-5
    # after the start: lambda_g 0.1 times the hinge generator loss of D(x'_0); the discriminator loss halved
    calls = spy(method.discriminator)
    torch.manual_seed(1)
    terms = method.losses(one_batch(data, **{GAN_FACTOR: torch.tensor(1.0)}))
    torch.testing.assert_close(terms["gan"], 0.1 * generator_loss(calls[-1]["out"], "hinge"))
    assert_disc_loss_weight(trainer, one_batch(data), 0.5)


def test_invsr_recipe_delays_the_gan_term_conditions_the_discriminator_and_warms_up(tmp_path, monkeypatch):
    from test_invsr import TINY

    torch.manual_seed(0)
    method = srkit.load("invsr", weights="synthetic", for_training=True,
                        discriminator={"block_out_channels": [8, 16], "norm_num_groups": 4}, **TINY)
    assert isinstance(method.disc, UNetDiscriminator) and method.disc.conditional
    data = Pairs(n=2, hr=64)
    trainer = recipe_trainer("invsr", "invsr", method, data, tmp_path)

    # the optimizers and LR schedules: generator warm-up over 2000 steps, then constant; discriminator Adam (L2 weight
    # decay 1e-3) at a constant 5e-5
    d_opt = trainer.optimizers[1].optimizer
    assert type(d_opt) is torch.optim.Adam and d_opt.defaults["weight_decay"] == 1e-3 and d_opt.defaults["lr"] == 5e-5
    g_factor, d_factor = trainer.schedulers[0].lr_lambdas[0], trainer.schedulers[1].lr_lambdas[0]
    assert [g_factor(k) for k in (0, 999, 1999, 2000, 50_000)] == [1 / 2000, 0.5, 1.0, 1.0, 1.0]
    assert all(d_factor(k) == 1.0 for k in (0, 1, 1999, 50_000))

    # the generator's GAN term is 0 for the first 10k iterations; the discriminator trains from the first
    assert trainer.gan.gan_factor(9999) == 0.0 and trainer.gan.gan_factor(10_000) == 1.0
    first = drive(trainer, 2)
    assert all(r["g"] and r["d"] and r["factor"] == 0.0 and r["log"]["gan"] == 0.0 for r in first)
    trainer.state.step = 9998  # the schedule is a function of the step alone: jump to the boundary
    boundary = drive(trainer, 3)
    assert [r["factor"] for r in boundary] == [0.0, 0.0, 1.0] and all(r["d"] for r in boundary)
    assert boundary[1]["log"]["gan"] == 0.0 and boundary[2]["log"]["gan"] != 0.0

    # conditioning: the start timestep t and the prompt embedding, x0 clamped to +-10 (the HR latent is not)
    scale = 1000.0
    encode = method.sd.vae.encode
    monkeypatch.setattr(method.sd.vae, "encode", lambda *a, **k: encode(*a, **k) * scale)  # latents far beyond 10
    predict, drawn = method._predict_hr_latent, []

    def recording(lr):
        x0, t = predict(lr)
        drawn.append((x0.detach(), t))
        return x0, t

    monkeypatch.setattr(method, "_predict_hr_latent", recording)
    calls = spy(method.disc)
    batch = one_batch(data, n=2, **{GAN_FACTOR: torch.tensor(1.0)})
    prompt = method.sd.prompt_embedding()

    def inputs(call):
        x, timestep, context = (*call["args"], *call["kwargs"].values())
        return x, timestep, context

    terms = method.losses(batch)
    x, timestep, context = inputs(calls[-1])
    x0, t = drawn[-1]
    assert x0.abs().max() > 10 and torch.equal(x, x0.clamp(-10, 10))
    assert torch.equal(timestep, t) and set(t.tolist()) <= {249, 199, 149, 99}
    assert torch.equal(context, prompt)
    torch.testing.assert_close(terms["gan"], 0.1 * generator_loss(calls[-1]["out"], "hinge"))  # lambda_g 0.1

    method.discriminator_losses(batch)
    (real, t_real, c_real), (fake, t_fake, c_fake) = inputs(calls[-2]), inputs(calls[-1])
    x0, t = drawn[-1]
    assert real.abs().max() > 10  # the HR latent is not clamped
    assert torch.equal(fake, x0.clamp(-10, 10))
    assert torch.equal(t_real, t) and torch.equal(t_fake, t)
    assert torch.equal(c_real, prompt) and torch.equal(c_fake, prompt)
    monkeypatch.undo()
    assert_disc_loss_weight(trainer, one_batch(data, n=2), 0.5)


def test_the_invsr_discriminator_reads_the_timestep_and_the_prompt():
    torch.manual_seed(0)
    disc = UNetDiscriminator(4, block_out_channels=[8, 16], norm_num_groups=4, cross_attention_dim=16)
    x, prompt = torch.randn(2, 4, 8, 8), torch.randn(1, 5, 16)
    t = torch.tensor([199, 99])
    base = disc(x, t, prompt)

    def differs(out):
        return any(not torch.allclose(a, b) for a, b in zip(base, out))

    assert len(base) == 3 and differs(disc(x, torch.tensor([249, 149]), prompt)) and differs(disc(x, t, prompt.flip(1)))
    with pytest.raises(ConfigError, match="encoder_hidden_states"):
        disc(x, t)
    official = UNetDiscriminator(4, cross_attention_dim=1024)  # configs/sd-turbo-sr-ldis.yaml's layout
    assert [type(b).__name__ for b in official.unet.down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert type(official.unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"
    assert official.unet.config.addition_embed_type == "text" and official.unet.config.addition_embed_type_num_heads == 64


def test_ccsr_stage2_recipe_starts_the_gan_term_after_step_100_and_halves_the_discriminator(tmp_path):
    from test_ccsr import TINY

    torch.manual_seed(0)
    method = srkit.load("ccsr", weights="synthetic", backend_config=TINY, stage=2, for_training=True,
                        discriminator={"ndf": 4, "n_layers": 1})
    data = Pairs(n=2, hr=32)
    trainer = recipe_trainer("ccsr_stage2", "ccsr", method, data, tmp_path)
    first = drive(trainer, 1)[0]
    assert first["d"] and first["g"] and first["log"]["gan"] == 0.0  # the discriminator trains from the first step
    trainer.state.step = 99
    boundary = drive(trainer, 3)  # steps 99, 100, 101: global_step > begin_disc (100) from step 101
    assert [r["factor"] for r in boundary] == [0.0, 0.0, 1.0] and all(r["d"] and r["g"] for r in boundary)
    assert boundary[1]["log"]["gan"] == 0.0 and boundary[2]["log"]["gan"] != 0.0
    calls = spy(method.disc)
    torch.manual_seed(1)
    terms = method.losses(one_batch(data, **{GAN_FACTOR: torch.tensor(1.0)}))
    torch.testing.assert_close(terms["gan"], 0.05 * generator_loss(calls[-1]["out"], "hinge"))  # lambda_disc 0.05
    assert_disc_loss_weight(trainer, one_batch(data), 0.5)
    assert all(o.optimizer.defaults["weight_decay"] == 1e-2 for o in trainer.optimizers)
    assert trainer.grad_clip == 1.0


def test_dmsr_recipe_trains_both_players_from_the_first_step_unweighted(tmp_path):
    from test_dmsr import DISC_SMALL, TINY

    torch.manual_seed(0)
    method = srkit.load("dmsr", weights="synthetic", for_training=True, discriminator=DISC_SMALL, **TINY)
    data = Pairs(n=2, hr=32)
    trainer = recipe_trainer("dmsr", "dmsr", method, data, tmp_path)
    records = drive(trainer, 2)
    assert all(r["g"] and r["d"] and r["factor"] == 1.0 and r["log"]["gan"] != 0.0 for r in records)
    calls = spy(method.disc)
    torch.manual_seed(1)
    terms = method.losses(one_batch(data))  # no gan_factor in the batch: factor 1
    torch.testing.assert_close(terms["gan"], 0.1 * generator_loss(calls[-1]["out"], method.gan_kind))  # lambda_adv 0.1
    assert_disc_loss_weight(trainer, one_batch(data), 1.0)
    assert trainer.schedulers[1].lr_lambdas[0] is trainer.schedulers[0].lr_lambdas[0]  # one LR schedule for both
