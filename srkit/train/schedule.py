"""The GAN schedule of a training run: one place that decides, at global step k, which player trains and how strongly.

A method with a discriminator (``discriminator_modules()``) has two players. Its official recipe fixes when each one
starts, how the two alternate, how the discriminator's loss is weighted and whether the discriminator's LR follows
the generator's warm-up and decay. :class:`GanSchedule` holds those settings (``conf/train/<method>.yaml``, key
``gan``); the :class:`~srkit.train.Trainer` reads it and hands the method the generator's GAN factor of the step in
``batch["gan_factor"]`` (:data:`srkit.losses.gan.GAN_FACTOR`), which the method multiplies into its GAN term (its
own weight, e.g. LPNSR's lambda_g = 0.1, stays in the method's loss weights). Every decision is a pure function of
the step (and, for ``unit="epoch"``, of the fixed number of steps per epoch), so a resumed run follows it exactly.

At step k (0-based, as ``batch["step"]``):

* the discriminator is updated when ``k >= disc_start`` (and, with ``alternate``, k is even);
* the generator is updated on every step, or, with ``alternate``, on odd steps only. Even steps belong to the
  discriminator from step 0 on, so before ``disc_start`` they update nothing (LPNSR's official
  ``train_noise_predictor.py``: ``global_step % disc_update_freq == 0`` selects the discriminator's branch, which
  does nothing before ``disc_start_epoch``);
* the generator's GAN factor is 0 before ``gan_start`` (default: ``disc_start``) and 1 from then on;
* the discriminator's losses are multiplied by ``disc_loss_weight`` (0.5 where the official hinge loss is
  ``0.5 (relu(1 - D(x)) + relu(1 + D(G)))``);
* the discriminator's LR follows the generator's schedule (``disc_lr_schedule="generator"``: warm-up and decay)
  or stays at ``disc_lr`` (``"constant"``: the official LPNSR and InvSR trainers schedule the generator only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["GanSchedule"]

Unit = Literal["step", "epoch"]
DiscLRSchedule = Literal["generator", "constant"]


@dataclass(frozen=True)
class GanSchedule:
    """When the discriminator and the generator's GAN term start, how they alternate and are weighted; see the module
    docstring. ``disc_start``/``gan_start`` count steps, or epochs with ``unit="epoch"`` (resolved by
    :meth:`in_steps` with the trainer's steps per epoch)."""

    disc_start: int = 0
    gan_start: int | None = None
    unit: Unit = "step"
    alternate: bool = False
    disc_loss_weight: float = 1.0
    disc_lr_schedule: DiscLRSchedule = "generator"

    def __post_init__(self) -> None:
        if self.unit not in ("step", "epoch"):
            raise ConfigError(f"gan.unit must be 'step' or 'epoch', got {self.unit!r}")
        if self.disc_lr_schedule not in ("generator", "constant"):
            raise ConfigError(f"gan.disc_lr_schedule must be 'generator' or 'constant', got {self.disc_lr_schedule!r}")
        for name in ("disc_start", "gan_start"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                raise ConfigError(f"gan.{name} must be an integer >= 0, got {value!r}")
        if not self.disc_loss_weight > 0:
            raise ConfigError(f"gan.disc_loss_weight must be > 0, got {self.disc_loss_weight!r}")

    @classmethod
    def from_config(cls, value: GanSchedule | Mapping[str, Any] | None) -> GanSchedule:
        """A schedule from itself, a mapping of its fields (the ``gan`` key of a train config) or ``None`` (defaults)."""
        if isinstance(value, GanSchedule):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigError(f"gan must be a mapping of GanSchedule fields, got {type(value).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ConfigError(f"unknown gan schedule keys {unknown}; the keys are {', '.join(sorted(fields))}")
        return cls(**dict(value))

    @property
    def generator_start(self) -> int:
        """The first step (or epoch) of the generator's GAN term."""
        return self.disc_start if self.gan_start is None else int(self.gan_start)

    def in_steps(self, steps_per_epoch: int) -> GanSchedule:
        """The same schedule counted in steps (``unit="epoch"``: starts times ``steps_per_epoch``)."""
        if self.unit == "step":
            return self
        if steps_per_epoch < 1:
            raise ConfigError(f"an epoch-based GAN schedule needs >= 1 step per epoch, got {steps_per_epoch}")
        return dataclasses.replace(self, disc_start=self.disc_start * steps_per_epoch,
                                   gan_start=self.generator_start * steps_per_epoch, unit="step")

    def _check_steps(self) -> None:
        if self.unit != "step":
            raise ConfigError("an epoch-based GAN schedule must be resolved with in_steps(steps_per_epoch) first")

    def updates_generator(self, step: int) -> bool:
        """Whether step ``step`` updates the generator (every step; odd steps only with ``alternate``)."""
        return not (self.alternate and step % 2 == 0)

    def updates_discriminator(self, step: int) -> bool:
        """Whether step ``step`` updates the discriminator (from ``disc_start``; even steps only with ``alternate``)."""
        self._check_steps()
        return step >= self.disc_start and (not self.alternate or step % 2 == 0)

    def gan_factor(self, step: int) -> float:
        """The factor of the generator's GAN term at step ``step``: 0 before ``gan_start``, then 1."""
        self._check_steps()
        return 0.0 if step < self.generator_start else 1.0
