"""One trainer for every method, on Hugging Face Accelerate (1 CPU, 1 GPU, many processes).

The method contract the trainer relies on (``srkit.types.SRMethod``):

* ``trainable_modules() -> {name: module}`` -- what the generator optimizer trains;
* ``losses(batch) -> {name: loss}`` -- weighted generator terms; the trainer sums them;
* optionally ``discriminator_modules() -> {name: module}`` and ``discriminator_losses(batch) ->
  {name: loss}`` -- a second, adversarial player with its own optimizer (``disc_lr``,
  ``disc_weight_decay``, ``disc_optimizer``). Each training step updates the generator and then the
  discriminator on the same batch; the run's :class:`~srkit.train.schedule.GanSchedule` (``gan``)
  decides at every step which of the two is updated (start, alternation), multiplies the
  discriminator's losses by its ``disc_loss_weight``, picks the discriminator's LR schedule and gives
  the method the generator's GAN factor in ``batch["gan_factor"]`` (a 0-d float tensor:
  :func:`srkit.losses.gan.gan_factor`). ``batch["step"]`` (a 0-d long tensor) carries the global step.

LR schedules (constant, cosine with a floor, step decay; linear warmup) follow the global step for
both players (the discriminator's stays constant with ``gan.disc_lr_schedule="constant"``). Every other
parameter of the method is frozen: ``requires_grad=False``, eval mode, no optimizer state. Modules are not
wrapped in DDP, so ``losses`` may call its sub-modules directly: after the ``grad_accum`` micro-batches of a
step, gradients are averaged across processes explicitly. With several processes each batch of ``batch_size``
samples is split between them (``split_batches``), so the optimisation does not depend on the number of processes.

Checkpoints (``output_dir/checkpoint-<step>``) are written atomically (a temporary folder renamed
into place) by :mod:`srkit.train.checkpoint`: trained modules, EMA copies, optimizers, LR schedules,
every process's RNG states and the data position (epoch, batch), in files that load without running
code (safetensors; ``torch.load(weights_only=True)``). ``fit()`` resumes from the newest one, so an
interrupted run continues exactly as if it had not stopped. At the end (and with every checkpoint)
the run folder also holds the method's trained weights as :meth:`srkit.SRMethod.save_pretrained`
writes them (config + one safetensors file per trained module, + EMA), which
``srkit.load(name, weights=output_dir)`` reads.

Every ``val_every`` steps and at the end the method's public ``sr()`` runs on the validation pairs
(:mod:`srkit.train.report`): PSNR and a perceptual metric go to ``log.jsonl`` (``val/<metric>``), the grid
LR | SR | HR to ``validation.png``; ``loss.png`` plots the log. Validation draws from no training RNG
and restores every module's mode, so it does not change the training or its resume. Progress goes to a
tqdm bar and to the ``srkit.train`` loggers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, UnsupportedError, import_optional
from ..losses.gan import GAN_FACTOR
from . import checkpoint, report
from .schedule import GanSchedule

__all__ = ["EpochSampler", "LRSchedule", "Trainer", "run_training"]

logger = logging.getLogger(__name__)  # not `log`: train_step calls its loss record that

Schedule = Literal["constant", "cosine", "step"]
CHECKPOINT_PREFIX = "checkpoint-"
LOG_FILE = "log.jsonl"


class EpochSampler(Sampler[int]):
    """A seeded random permutation per epoch: the data order depends only on (seed, epoch).

    The trainer sets the epoch with :meth:`use_epoch` (not ``set_epoch``, which Accelerate's data
    loader calls with its own count of iterators, one more after every resume-skip).
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


class LRSchedule:
    """LR factor of a step: linear warmup, then constant, cosine decay to ``lr_min/lr`` or step decay.

    cosine (with floor): ``f = r + (1 - r)·(1 + cos(π·s/S))/2`` with ``r = lr_min/lr``, ``S = max_steps``;
    step: ``f = gamma^floor(s/step_size)`` (``gamma = 0.5`` halves the LR every ``step_size`` steps).
    A callable object, so ``LambdaLR`` checkpoints it.
    """

    def __init__(self, kind: Schedule, max_steps: int, *, floor: float = 0.0, warmup_steps: int = 0,
                 step_size: int = 1, gamma: float = 0.5):
        if kind not in ("constant", "cosine", "step"):
            raise ConfigError(f"lr_schedule must be constant, cosine or step, got {kind!r}")
        if kind == "step" and step_size < 1:
            raise ConfigError(f"lr_step_size must be >= 1 for the step schedule, got {step_size}")
        self.kind, self.max_steps, self.floor = kind, max(1, max_steps), floor
        self.warmup_steps, self.step_size, self.gamma = warmup_steps, step_size, gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            progress = min(step, self.max_steps) / self.max_steps
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** (step // self.step_size)
        return 1.0


class _Progress:
    """The data position and step counter, checkpointed with the rest."""

    def __init__(self) -> None:
        self.step = self.epoch = self.batch_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])


def _parameters(modules: Mapping[str, nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for module in modules.values():
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


class Trainer:
    """Train ``method`` on ``dataset`` (a map-style dataset of dicts of tensors); see the module docstring.

    ``validation`` (pairs ``{"name", "hr", "lr"}``, e.g. ``dataset.validation`` of :func:`srkit.data.image_folders`) is
    scored every ``val_every`` steps and at the end (:class:`srkit.train.report.Validator`).
    """

    def __init__(
        self,
        method: nn.Module,
        dataset: Dataset,
        *,
        validation: Dataset | None = None,
        output_dir: str | os.PathLike[str] = "outputs/train",
        max_steps: int = 1000,
        batch_size: int = 8,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_schedule: Schedule = "constant",
        lr_min: float = 0.0,
        lr_step_size: int = 1000,
        lr_gamma: float = 0.5,
        warmup_steps: int = 0,
        grad_accum: int = 1,
        grad_clip: float | None = None,
        mixed_precision: Literal["no", "fp16", "bf16"] = "no",
        ema_decay: float | None = None,
        disc_lr: float | None = None,
        disc_weight_decay: float = 0.0,
        disc_optimizer: Literal["adamw", "adam"] = "adamw",
        gan: GanSchedule | Mapping[str, Any] | None = None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 2,
        val_every: int = 1000,
        log_every: int = 10,
        tensorboard: bool = False,
        progress: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        num_workers: int = 0,
        cpu: bool = False,
    ):
        accelerate = import_optional("accelerate", extra="train", needed_for="srkit train")
        Accelerator, set_seed = accelerate.Accelerator, accelerate.utils.set_seed

        if grad_accum < 1 or batch_size < 1 or max_steps < 1:
            raise ConfigError(f"grad_accum, batch_size and max_steps must be >= 1, got {grad_accum}, {batch_size}, {max_steps}")
        betas = (float(betas[0]), float(betas[1]))  # YAML gives a list
        try:
            self.accelerator = Accelerator(mixed_precision=mixed_precision, split_batches=True, cpu=cpu)
        except ValueError as err:  # Accelerate's process-wide state was set up differently before
            raise ConfigError(
                f"cannot set up Accelerate with mixed_precision={mixed_precision!r}, cpu={cpu}: {err} "
                "(one process trains with one setting; start a new process to change it)"
            ) from err
        if batch_size % self.accelerator.num_processes:
            raise ConfigError(
                f"batch_size {batch_size} must be divisible by the number of processes ({self.accelerator.num_processes}): "
                "each batch is split between them"
            )
        set_seed(seed)
        self.method, self.output_dir = method, Path(output_dir)
        self.max_steps, self.grad_accum, self.grad_clip = max_steps, grad_accum, grad_clip
        self.gan = GanSchedule.from_config(gan)  # counted in steps once the loader's length is known (below)
        if disc_optimizer not in ("adamw", "adam"):
            raise ConfigError(f"disc_optimizer must be 'adamw' (decoupled weight decay) or 'adam' (L2), got {disc_optimizer!r}")
        self.checkpoint_every, self.keep_checkpoints = checkpoint_every, keep_checkpoints
        self.log_every, self.show_progress = log_every, progress

        self.generator_modules = dict(method.trainable_modules())
        if not self.generator_modules:
            raise UnsupportedError(f"{type(method).__name__}.trainable_modules() is empty: nothing to train")
        self.disc_modules: dict[str, nn.Module] = dict(method.discriminator_modules())
        method.to(self.accelerator.device)
        # Frozen by default: no gradients, eval mode; only trained modules switch to train mode.
        method.requires_grad_(False)
        method.eval()
        for module in chain(self.generator_modules.values(), self.disc_modules.values()):
            module.requires_grad_(True)
            module.train()
        self.generator_params = _parameters(self.generator_modules)
        self.disc_params = _parameters(self.disc_modules)

        schedule = LRSchedule(lr_schedule, max_steps, floor=lr_min / lr if lr else 0.0, warmup_steps=warmup_steps,
                              step_size=lr_step_size, gamma=lr_gamma)
        optimizer = torch.optim.AdamW(self.generator_params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.optimizers = [self.accelerator.prepare(optimizer)]
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)]
        if self.disc_modules:
            d_cls = torch.optim.AdamW if disc_optimizer == "adamw" else torch.optim.Adam
            d_opt = d_cls(self.disc_params, lr=disc_lr or lr, betas=betas, weight_decay=disc_weight_decay)
            self.optimizers.append(self.accelerator.prepare(d_opt))
            d_schedule = schedule if self.gan.disc_lr_schedule == "generator" else LRSchedule("constant", max_steps)
            self.schedulers.append(torch.optim.lr_scheduler.LambdaLR(d_opt, d_schedule))

        self.ema: dict[str, nn.Module] = {}
        if ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = {name: AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
                        for name, m in self.generator_modules.items()}

        self.sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)  # type: ignore[arg-type]
        # The loader's own generator: starting an epoch must not draw from the global RNG, which the
        # checkpoints restore (dropout, noise sampling), or a resumed run would drift.
        loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True, num_workers=num_workers,
                            generator=torch.Generator().manual_seed(seed))
        self.loader = self.accelerator.prepare(loader)
        if len(self.loader) == 0:
            raise ConfigError(f"the dataset has {len(dataset)} samples, fewer than one batch of {batch_size}")  # type: ignore[arg-type]
        self.gan = self.gan.in_steps(max(1, len(self.loader) // grad_accum))  # an epoch: the steps of one pass
        self.dataset = dataset
        self.data_rng = torch.Generator().manual_seed(seed + 1).get_state()  # see _data_stream
        self.state = _Progress()
        self.val_every, self.validates = val_every, validation is not None and val_every > 0
        # Only the main process validates (the others wait for it), so only it holds the pairs and the metric.
        self.validator = (report.Validator(validation, self.output_dir, seed=seed)
                          if self.validates and self.accelerator.is_main_process else None)
        self.writer: Any = None
        if tensorboard and self.accelerator.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise UnsupportedError("tensorboard=true needs the tensorboard package: pip install tensorboard") from err
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))

    # ------------------------------------------------------------------ checkpoints

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints in ``output_dir``, oldest first."""
        if not self.output_dir.is_dir():
            return []
        found = [p for p in self.output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically and keep only the newest ``keep_checkpoints``."""
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{self.state.step:08d}"
        tmp = self.output_dir / f".tmp-{final.name}"
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        checkpoint.save_checkpoint(tmp, modules=self._checkpointed_modules(), stateful=self._stateful(),
                                   progress=self.state.state_dict(), rank=self.accelerator.process_index,
                                   main=self.accelerator.is_main_process, streams={"data": self.data_rng})
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self.checkpoints()[: -self.keep_checkpoints] if self.keep_checkpoints > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
            self.save_pretrained()
            logger.info("step %d: checkpoint %s", self.state.step, final)
        self.accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        progress, streams = checkpoint.load_checkpoint(Path(path), modules=self._checkpointed_modules(),
                                                       stateful=self._stateful(), rank=self.accelerator.process_index)
        self.state.load_state_dict(progress)
        self.data_rng = streams["data"]

    def _checkpointed_modules(self) -> dict[str, nn.Module]:
        return {**{f"generator.{k}": m for k, m in self.generator_modules.items()},
                **{f"discriminator.{k}": m for k, m in self.disc_modules.items()},
                **{f"ema.{k}": m for k, m in self.ema.items()}}

    def _stateful(self) -> dict[str, Any]:
        return {**{f"optimizer.{i}": o for i, o in enumerate(self.optimizers)},
                **{f"schedule.{i}": s for i, s in enumerate(self.schedulers)}}

    def save_pretrained(self) -> Path | None:
        """The method's trained weights in ``output_dir`` (:meth:`srkit.SRMethod.save_pretrained`, EMA copies too);
        ``None`` for a method not built by ``srkit.load`` (its config is unknown: the checkpoints hold its weights)."""
        if getattr(self.method, "config", None) is None:
            return None
        return self.method.save_pretrained(self.output_dir, modules=self.generator_modules, ema=self.ema_modules())

    # ------------------------------------------------------------------ training

    @contextmanager
    def _data_stream(self) -> Iterator[None]:
        """Run data loading on its own RNG stream (checkpointed too): a dataset that draws from the global RNG, and
        Accelerate's loader, which fetches one batch ahead, would otherwise interleave their draws with those of
        losses(), dropout and noise, and a resumed run (which fetches the batch after the checkpoint again) would drift."""
        training = torch.get_rng_state()
        torch.set_rng_state(self.data_rng)
        try:
            yield
        finally:
            self.data_rng = torch.get_rng_state()
            torch.set_rng_state(training)

    def _batches(self) -> Iterator[dict[str, Any]]:
        from accelerate import skip_first_batches

        while True:
            self.sampler.use_epoch(self.state.epoch)
            if hasattr(self.dataset, "use_epoch"):  # on-the-fly degradation: fresh per (seed, epoch, index)
                self.dataset.use_epoch(self.state.epoch)
            skip = self.state.batch_in_epoch
            with self._data_stream():
                iterator = iter(skip_first_batches(self.loader, skip) if skip else self.loader)
            while True:
                with self._data_stream():
                    batch = next(iterator, None)
                if batch is None:
                    break
                self.state.batch_in_epoch += 1
                yield batch
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    def _sync_gradients(self, params: list[nn.Parameter]) -> None:
        """Average gradients across processes (one all-reduce of the flattened gradients)."""
        if self.accelerator.num_processes == 1:
            return
        for p in params:  # every process must send the same layout, used or not
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = self.accelerator.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def _phase(self, batches: list[dict[str, Any]], losses: Any, params: list[nn.Parameter], index: int) -> dict[str, float]:
        """Accumulate ``losses`` over the micro-batches and take one optimizer step."""
        optimizer = self.optimizers[index]
        others = self.disc_params if index == 0 else self.generator_params
        for p in others:  # the other player is fixed during this update (e.g. DM-SR Eq. (5))
            p.requires_grad_(False)
        totals: dict[str, float] = {}
        try:
            for batch in batches:
                with self.accelerator.autocast():
                    terms = losses(batch)
                    if not terms:
                        raise UnsupportedError(f"{type(self.method).__name__} returned no loss terms")
                    loss = sum(terms.values()) / self.grad_accum
                self.accelerator.backward(loss)
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(value.detach()) / self.grad_accum
        finally:
            for p in others:
                p.requires_grad_(True)
        self._sync_gradients(params)
        if self.grad_clip is not None:
            self.accelerator.unscale_gradients(optimizer=optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return totals

    def _discriminator_losses(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The method's discriminator losses times the GAN schedule's ``disc_loss_weight``."""
        terms = self.method.discriminator_losses(batch)
        weight = self.gan.disc_loss_weight
        return terms if weight == 1.0 else {name: weight * value for name, value in terms.items()}

    def _reduce_log(self, values: dict[str, float]) -> dict[str, float]:
        if self.accelerator.num_processes == 1 or not values:
            return values
        names = sorted(values)
        tensor = torch.tensor([values[n] for n in names], device=self.accelerator.device, dtype=torch.float64)
        reduced = self.accelerator.reduce(tensor, reduction="mean")
        return dict(zip(names, reduced.tolist()))

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimisation step on ``grad_accum`` micro-batches; returns the averaged loss terms."""
        step = self.state.step
        factor = torch.tensor(self.gan.gan_factor(step), device=self.accelerator.device)
        for batch in batches:
            batch["step"] = torch.tensor(step, device=self.accelerator.device)
            batch[GAN_FACTOR] = factor  # the generator's GAN factor of the step (GanSchedule)
        update_g = not self.disc_modules or self.gan.updates_generator(step)
        update_d = bool(self.disc_modules) and self.gan.updates_discriminator(step)
        log: dict[str, float] = {}
        if update_g:
            terms = self._phase(batches, self.method.losses, self.generator_params, 0)
            log.update(terms, loss=sum(terms.values()))
            for name, averaged in self.ema.items():
                averaged.update_parameters(self.generator_modules[name])
        if update_d:
            terms = self._phase(batches, self._discriminator_losses, self.disc_params, 1)
            log.update({f"disc/{k}": v for k, v in terms.items()}, **{"disc/loss": sum(terms.values())})
        with warnings.catch_warnings():  # a schedule follows the global step, also before its optimizer's first step
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`"))
            for scheduler in self.schedulers:
                scheduler.step()
        self.state.step += 1
        return self._reduce_log(log)

    def fit(self, resume: bool = True, until: int | None = None) -> list[dict[str, float]]:
        """Train to ``max_steps`` (resuming from the newest checkpoint); returns the log of every step run.

        ``until`` stops after that step instead (a time-sliced job); a later ``fit()`` resumes. The main process
        appends steps to ``log.jsonl`` (every ``log_every`` steps, and each validation's, with its ``val/<metric>``
        means) and redraws ``loss.png`` at each validation and checkpoint and at the end.
        """
        from tqdm.auto import tqdm

        if resume and (found := self.checkpoints()):
            self.load_checkpoint(found[-1])
            logger.info("resumed from %s at step %d of %d", found[-1], self.state.step, self.max_steps)
        history: list[dict[str, float]] = []
        batches = self._batches()
        main = self.accelerator.is_main_process
        bar = tqdm(total=self.max_steps, initial=self.state.step, disable=not (self.show_progress and main), desc="train")
        log_file, loss_curve = self.output_dir / LOG_FILE, self.output_dir / report.LOSS_CURVE_FILE
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        stop = self.max_steps if until is None else min(until, self.max_steps)
        if self.state.step < stop:
            logger.info("training %s from step %d to %d of %d: %d samples, batch %d x %d, %d process(es); run folder %s",
                        type(self.method).__name__, self.state.step, stop, self.max_steps, len(self.dataset),  # type: ignore[arg-type]
                        self.loader.total_batch_size, self.grad_accum, self.accelerator.num_processes, self.output_dir)
        postfix: dict[str, str] = {}
        while self.state.step < stop:
            record = self.train_step([next(batches) for _ in range(self.grad_accum)])
            record["lr"] = self.schedulers[0].get_last_lr()[0]
            step = self.state.step
            validated = self.validates and (step % self.val_every == 0 or step == self.max_steps)
            if validated:
                record.update(self.validate())
            history.append(record)
            bar.update(1)
            postfix.update({name.removeprefix("val/"): f"{value:.4g}" for name, value in record.items()
                            if name == "loss" or name.startswith("val/")})
            bar.set_postfix(postfix, refresh=False)
            if main and (step % self.log_every == 0 or step == self.max_steps or validated):
                with log_file.open("a") as f:
                    f.write(json.dumps({"step": step, **record}) + "\n")
                if self.writer is not None:
                    for name, value in record.items():
                        self.writer.add_scalar(name, value, step)
            saved = bool(self.checkpoint_every) and (step % self.checkpoint_every == 0 or step in (stop, self.max_steps))
            if saved:
                self.save_checkpoint()
            if main and (validated or saved) and step < stop:  # the last step's curve is drawn below
                report.write_loss_curve(log_file, loss_curve)
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        if main and history:
            report.write_loss_curve(log_file, loss_curve)
        if main and self.state.step == self.max_steps and self.save_pretrained() is not None:
            logger.info("trained weights written to %s", self.output_dir)
        return history

    def validate(self) -> dict[str, float]:
        """Score the validation pairs now and write ``validation.png`` (on the main process; the others wait); returns
        ``{"val/<metric>": mean}``, empty on the other processes."""
        metrics: dict[str, float] = {}
        if self.validator is not None:
            metrics = {f"val/{name}": value for name, value in self.validator(self.method).items()}
            logger.info("step %d, validation on %d images: %s", self.state.step, len(self.validator.pairs),
                        ", ".join(f"{name[4:]} {value:.4g}" for name, value in metrics.items()))
        self.accelerator.wait_for_everyone()
        return metrics

    def ema_modules(self) -> dict[str, nn.Module]:
        """The EMA copies of the trained modules (empty without ``ema_decay``)."""
        return {name: averaged.module for name, averaged in self.ema.items()}


def run_training(cfg: Any) -> list[dict[str, float]]:
    """The ``srkit train`` task: build ``cfg.method`` (weights ``cfg.weights``) and ``cfg.data``, train with ``cfg.train``.

    ``cfg.data`` is a config with ``_target_`` naming a map-style dataset of dicts of tensors (the
    method's ``losses(batch)`` reads it); ``cfg.train`` is the :class:`Trainer` config
    (``conf/train/<name>.yaml``), instantiated with the method and the dataset.
    """
    from omegaconf import OmegaConf

    from ..options import flag, parse_options, text, whole
    from ..registry import build_method, instantiate

    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    for key in ("method", "data", "train"):
        if not isinstance(config.get(key), Mapping):
            raise ConfigError(f"srkit train needs a {key!r} config group (e.g. {key}=<name> or +{key}._target_=<class>)")
    given = {"weights": config.get("weights"), "resume": config.get("resume", True), "until": config.get("until")}
    options = parse_options("train", given, {
        "weights": text(null="the method's default files"), "resume": flag, "until": whole(1, null="train.max_steps")})
    accelerate = import_optional("accelerate", extra="train", needed_for="srkit train")  # before any model is built
    accelerate.utils.set_seed(int(config["train"].get("seed", 0)))  # fresh modules (discriminators, heads) reproducible
    method = build_method(config["method"], weights=options["weights"], device="cpu", sampler=config.get("sampler"))
    dataset = instantiate(config["data"], where="data")
    # The dataset's validation pairs (srkit.data.image_folders holds images out of the training folder for them).
    trainer = instantiate(config["train"], where="train", method=method, dataset=dataset,
                          validation=getattr(dataset, "validation", None))
    if trainer.accelerator.is_main_process:  # the resolved config of the run, next to its weights
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), trainer.output_dir / "config.yaml")
    return trainer.fit(resume=options["resume"], until=options["until"])
