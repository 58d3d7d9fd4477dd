"""Trainer acceptance tests on a tiny method defined here (also run as a script under accelerate launch)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from srkit import MethodDescriptor, SRMethod
from srkit.errors import ConfigError, UnsupportedError
from srkit.losses.composer import AdversarialTerm, LossComposer
from srkit.losses.discriminators import PatchGANDiscriminator
from srkit.losses.gan import adopt_weight, discriminator_loss
from srkit.train import LRSchedule, Trainer, run_training

HERE = Path(__file__).resolve()


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyMethod(SRMethod):
    """A residual 2-conv net after a frozen 1x1 'backbone', trained with L1 + Charbonnier (fused path)."""

    descriptor = MethodDescriptor(name="tiny", title="tiny", paper="-", scale=1, trainable=True)

    def __init__(self, scale: int = 1):
        super().__init__(scale)
        torch.manual_seed(0)
        self.backbone = nn.Conv2d(3, 3, 1)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.loss = LossComposer({"l1": 1.0, "charbonnier": 0.5})

    def predict(self, lr: Tensor) -> Tensor:
        return lr + self.net(self.backbone(lr))

    def _sr(self, lr: Tensor, *, steps, generator, **knobs) -> Tensor:
        return self.predict(lr)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def losses(self, batch):
        return self.loss(self.predict(batch["lr"]), batch["hr"])


class TinyGAN(TinyMethod):
    """TinyMethod + a hinge PatchGAN that starts at step 2 (dropout makes RNG state matter on resume)."""

    def __init__(self, scale: int = 1):
        super().__init__(scale)
        self.net.insert(1, nn.Dropout(0.1))
        self.disc = PatchGANDiscriminator(in_channels=3, ndf=4, n_layers=1)
        self.gan = LossComposer({"l1": 1.0, "gan": 0.1}, modules={"gan": AdversarialTerm(self.disc)})

    def discriminator_modules(self) -> dict[str, nn.Module]:
        return {"disc": self.disc}

    def losses(self, batch):
        terms = self.gan(self.predict(batch["lr"]), batch["hr"])
        terms["gan"] = terms["gan"] * adopt_weight(1.0, int(batch["step"]), start=2)
        return terms

    def discriminator_losses(self, batch):
        with torch.no_grad():
            fake = self.predict(batch["lr"])
        return {"hinge": discriminator_loss(self.disc(batch["hr"]), self.disc(fake))}


class TinyData(Dataset):
    """Pairs whose target is a fixed 3x3 box blur of the input: learnable by TinyMethod."""

    def __init__(self, n: int = 32, size: int = 8):
        g = torch.Generator().manual_seed(1)
        self.lr = torch.rand(n, 3, size, size, generator=g)
        self.hr = F.avg_pool2d(self.lr, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.lr)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"lr": self.lr[i], "hr": self.hr[i]}


def tiny_trainer(tmp: Path, method: nn.Module | None = None, **kw) -> Trainer:
    args = dict(output_dir=tmp, max_steps=30, batch_size=4, lr=1e-2, progress=False, cpu=True)
    return Trainer(method if method is not None else TinyMethod(), TinyData(), **{**args, **kw})


def test_thirty_steps_lower_the_loss_and_frozen_modules_stay_frozen(tmp_path):
    method = TinyMethod()
    backbone_before = method.backbone.weight.clone()
    trainer = tiny_trainer(tmp_path, method, ema_decay=0.9, lr_schedule="cosine", lr_min=1e-3)
    history = trainer.fit()
    losses = [h["loss"] for h in history]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5
    # frozen: no gradient, eval mode, untouched, absent from the optimizer
    assert not method.backbone.weight.requires_grad and not method.backbone.training and method.net.training
    torch.testing.assert_close(method.backbone.weight, backbone_before, atol=0, rtol=0)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in method.net.parameters()}
    assert history[-1]["lr"] == pytest.approx(1e-3 + (1e-2 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 30 / 30)))
    # EMA: a copy of the trained module that lags behind it
    ema = trainer.ema_modules()["net"]
    assert not torch.equal(ema[0].weight, method.net[0].weight)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 30


def parameters(method: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    kw = dict(ema_decay=0.9, lr_schedule="step", lr_step_size=7, grad_accum=2, checkpoint_every=10, keep_checkpoints=5)
    full = TinyGAN()
    full_trainer = tiny_trainer(tmp_path / "full", full, **kw)
    full_history = full_trainer.fit()

    first = tiny_trainer(tmp_path / "cut", TinyGAN(), **kw)
    first.fit(until=13)  # "killed" after step 13: only the checkpoint of step 10 survives
    shutil.rmtree(tmp_path / "cut" / "checkpoint-00000013")
    (tmp_path / "cut" / ".tmp-checkpoint-00000014").mkdir()  # a half-written checkpoint is never used
    assert [p.name for p in first.checkpoints()] == ["checkpoint-00000010"]

    fresh = TinyGAN()
    with torch.no_grad():
        for p in [*fresh.net.parameters(), *fresh.disc.parameters()]:
            p.add_(1.0)  # the checkpoint, not the constructor, must supply every trained value
    resumed = tiny_trainer(tmp_path / "cut", fresh, **kw)
    rest = resumed.fit()
    assert resumed.state.step == 30 and len(rest) == 20
    a, b = parameters(full), parameters(fresh)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    full_ema = full_trainer.ema["net"].state_dict()
    for key, value in resumed.ema["net"].state_dict().items():
        assert torch.equal(value, full_ema[key]), key
    assert [h["loss"] for h in rest] == [h["loss"] for h in full_history[10:]]


def test_generator_discriminator_alternation(tmp_path):
    method = TinyGAN()
    trainer = tiny_trainer(tmp_path, method, max_steps=6, gan={"disc_start": 2, "alternate": True})
    history = trainer.fit()
    updated = [("loss" in h, "disc/loss" in h) for h in history]
    # even steps are the discriminator's (none before disc_start, as LPNSR's official loop), odd steps the generator's
    assert updated == [(False, False), (True, False), (False, True), (True, False), (False, True), (True, False)]
    both = tiny_trainer(tmp_path / "both", TinyGAN(), max_steps=3, gan={"disc_start": 1}).fit()
    assert [("loss" in h, "disc/loss" in h) for h in both] == [(True, False), (True, True), (True, True)]
    assert both[0]["gan"] == 0.0 and both[2]["gan"] != 0.0  # adopt_weight: delayed GAN term
    assert not any(p.requires_grad is False for p in method.disc.parameters())


def test_gradient_accumulation_mixed_precision_and_tensorboard(tmp_path):
    whole, halves = TinyMethod(), TinyMethod()
    tiny_trainer(tmp_path / "a", whole, max_steps=5, batch_size=4).fit()
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    tiny_trainer(tmp_path / "b", halves, max_steps=5, batch_size=2, grad_accum=2, tensorboard=has_tensorboard).fit()
    for p, q in zip(whole.net.parameters(), halves.net.parameters()):  # same samples per step, same update
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    assert bool(list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))) == has_tensorboard
    with pytest.raises(ConfigError, match="new process"):  # Accelerate's state is per process
        tiny_trainer(tmp_path / "c", TinyMethod(), max_steps=3, mixed_precision="bf16")


@pytest.mark.slow
def test_bf16_mixed_precision(tmp_path):
    script = (
        "import math, sys, torch; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import test_train as t; "
        "torch.set_num_threads(1); "
        "h = t.tiny_trainer(Path(sys.argv[2]), t.TinyMethod(), max_steps=8, mixed_precision='bf16').fit(); "
        "assert all(math.isfinite(x['loss']) for x in h) and h[-1]['loss'] < h[0]['loss'], h; print('OK')"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(HERE.parent), str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_lr_schedules():
    cosine = LRSchedule("cosine", 100, floor=0.2)
    assert cosine(0) == pytest.approx(1.0) and cosine(50) == pytest.approx(0.6) and cosine(100) == pytest.approx(0.2)
    assert cosine(150) == pytest.approx(0.2)
    step = LRSchedule("step", 100, step_size=10)
    assert [step(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    warm = LRSchedule("constant", 100, warmup_steps=4)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError):
        LRSchedule("linear", 10)


def test_bad_setups_are_reported(tmp_path):
    class Frozen(TinyMethod):
        def trainable_modules(self):
            return {}

    with pytest.raises(UnsupportedError, match="nothing to train"):
        tiny_trainer(tmp_path, Frozen())
    with pytest.raises(ConfigError, match="fewer than one batch"):
        tiny_trainer(tmp_path, batch_size=64)


def test_run_training_from_the_hydra_config(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from srkit.registry import config_dir

    monkeypatch.syspath_prepend(str(HERE.parent))
    overrides = ["method=bicubic", "method._target_=test_train.TinyMethod", "~method.antialias", "method.scale=1",
                 "data=custom", "data._target_=test_train.TinyData", "train.max_steps=3", "train.batch_size=4", "train.cpu=true",
                 f"train.output_dir={tmp_path}", "train.checkpoint_every=3", "train.progress=false"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.train.lr == 5e-5 and cfg.resume is True
    # conf/train/default.yaml mirrors the constructor: every keyword argument, nothing else
    given = {"method", "dataset", "validation"}  # by srkit train, from the method and data configs
    assert set(cfg.train) - {"_target_"} == set(inspect.signature(Trainer).parameters) - given
    history = run_training(cfg)
    assert len(history) == 3 and (tmp_path / "checkpoint-00000003").is_dir()
    assert run_training(cfg) == []  # resumed at the end: nothing left to do


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
    """accelerate launch --num_processes 2 --cpu: each batch is split; the loss curve matches one process."""
    single = [h["loss"] for h in tiny_trainer(tmp_path / "one").fit()]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(HERE), str(tmp_path / "two"), "30"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=HERE.parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    double = json.loads(proc.stdout.split("LOSSES ", 1)[1].splitlines()[0])
    assert len(double) == 30
    assert max(abs(a - b) for a, b in zip(single, double)) < 1e-5
    assert double[-1] < 0.6 * double[0]


if __name__ == "__main__":  # the script run by accelerate launch in test_two_processes_agree_with_one
    trainer = tiny_trainer(Path(sys.argv[1]), max_steps=int(sys.argv[2]))
    losses = [h["loss"] for h in trainer.fit()]
    if trainer.accelerator.is_main_process:
        print("LOSSES " + json.dumps(losses))
