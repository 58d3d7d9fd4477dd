"""Diffusion methods as compositions: a backbone + a sampler + hooks, chosen by config and built per call.

A :class:`DiffusionMethod` supplies three pieces -- :meth:`~DiffusionMethod.condition` (what the chain
is conditioned on, a :class:`Chain`), :meth:`~DiffusionMethod.denoiser` (``(x_t, t) -> x0``) and
:meth:`~DiffusionMethod.decode` -- and its YAML names a sampler and up to four hooks:

================== ========================================= =============================================
hook               called                                    built-in examples
================== ========================================= =============================================
``timesteps``      once per call: the visited timesteps      :class:`StepTable` (InvSR's official table),
                                                             :class:`FixedTimesteps`, DM-SR's t̂
``start_state``    once per call: x at the first timestep    :class:`PriorStart` (ResShift Eq. (3), CCSR's
                                                             q(z_LR, T)), InvSR's Eq. (8), DM-SR's encoder
``noise``          bound per call: the noise of each step    LPNSR's g_w, DM-SR's reused ε_SR
``mean_correction`` bound per call: guidance on each step     posterior guidance (PG-ResShift)
================== ========================================= =============================================

Hooks never import a method: a hook reads what it needs from the method and the :class:`Chain` it
is given, so LPNSR's predicted noise and PG-ResShift's guidance combine by config alone, and
InvSR's start step can come from DM-SR's estimator. The sampler is copied for every call and the
bound hooks are set on the copy, so nothing shared is mutated. Each hook lists the ``sr()`` knobs it
reads in ``knobs``; the sampler lists its own (``start_t``, ``t_max`` ...); an unknown knob is an error.

Timesteps, in order of precedence: an explicit ``timesteps=`` knob, the sampler's knobs (e.g.
``start_t``) or settings (``sampler.start_t=200``), the ``timesteps`` hook, the sampler's default -- all through
:func:`srkit.samplers.schedule.resolve_timesteps`, so ``steps`` and a schedule that disagree raise.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from .errors import ConfigError, UnsupportedError
from .samplers.schedule import resolve_timesteps
from .types import Denoiser, MeanCorrection, NoiseProvider, Sampler, SRMethod

__all__ = [
    "Chain", "DiffusionMethod", "FixedTimesteps", "Hook", "MeanCorrectionHook", "NoiseHook", "PriorStart",
    "StartState", "StepTable", "TimestepProvider",
]

Schedule = list[int] | list[list[int]]  # one list for the batch, or one per sample


@dataclass
class Chain:
    """What one call's chain is conditioned on; hooks read it. ``lr`` is the padded LR in the method's
    value range, ``y`` the sampler's condition (ResShift's z_y, the SD methods' z_LR), ``extras`` the
    method's own per-call tensors and settings (prompt embeddings, the upsampled LR ...)."""

    lr: Tensor
    y: Tensor | None
    generator: torch.Generator | None
    extras: dict[str, Any] = field(default_factory=dict)

    def select(self, index: Tensor) -> Chain:
        """The chain of the samples ``index`` (tensors with the batch's leading size are indexed)."""
        batch = self.lr.shape[0]

        def pick(value: Any) -> Any:
            return value[index] if isinstance(value, Tensor) and value.dim() and value.shape[0] == batch else value

        return Chain(pick(self.lr), pick(self.y), self.generator, {k: pick(v) for k, v in self.extras.items()})


class Hook(ABC):  # noqa: B024  (a marker base: each hook kind below declares its abstract method)
    """Base of the four hook kinds; ``knobs`` names the ``sr()`` knobs the hook reads."""

    knobs: ClassVar[tuple[str, ...]] = ()


class TimestepProvider(Hook):
    """The visited timesteps (in the method's paper numbering) for a call that set none explicitly."""

    @abstractmethod
    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, steps: int | None,
                 **knobs: Any) -> Schedule: ...


class StartState(Hook):
    """The state at the first visited timestep ``t``."""

    @abstractmethod
    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, t: int, **knobs: Any) -> Tensor: ...


class NoiseHook(Hook):
    """Binds a :class:`~srkit.types.NoiseProvider` to one call (``None``: keep the sampler's Gaussian noise)."""

    @abstractmethod
    def bind(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, **knobs: Any) -> NoiseProvider | None: ...


class MeanCorrectionHook(Hook):
    """Binds a :class:`~srkit.types.MeanCorrection` to one call (``None``: no correction this call)."""

    @abstractmethod
    def bind(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, **knobs: Any) -> MeanCorrection | None: ...


class PriorStart(StartState):
    """The sampler's prior at the first visited step: ResShift's x_T = y + kappa sqrt(eta_T) eps (LPNSR Eq. (3)
    below T), or the DDPM forward marginal q(x_t | y) (CCSR v2's start from the LR latent at T)."""

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, t: int, **knobs: Any) -> Tensor:
        if chain.y is None:
            raise ConfigError(f"{method.descriptor.name} has no prior mean to start from; configure its start_state hook")
        y = chain.y
        return sampler.prior(y, torch.randn(y.shape, generator=chain.generator, device=y.device, dtype=y.dtype), t)


class FixedTimesteps(TimestepProvider):
    """One fixed list of timesteps (paper numbering), e.g. a table row's."""

    def __init__(self, timesteps: Sequence[int]):
        self.timesteps = [int(t) for t in timesteps]

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, steps: int | None,
                 **knobs: Any) -> Schedule:
        return resolve_timesteps(sampler, steps, self.timesteps)


class StepTable(TimestepProvider):
    """A timestep list per step count (InvSR's official table); the sampler's default count when none is given."""

    def __init__(self, table: Mapping[int, Sequence[int]]):
        self.table = {int(k): [int(t) for t in v] for k, v in table.items()}

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, steps: int | None,
                 **knobs: Any) -> Schedule:
        count = sampler.default_steps if steps is None else steps
        if count not in self.table:
            raise UnsupportedError(f"{method.descriptor.name}'s step table has {sorted(self.table)} steps, got steps={count}")
        return resolve_timesteps(sampler, count, self.table[count])


class DiffusionMethod(SRMethod):
    """An :class:`SRMethod` whose ``_sr`` is the composition of the module docstring.

    Subclasses set ``sampler_type`` (the sampler family their backbone's maths needs: another one is a
    clear error), ``method_knobs`` (the ``sr()`` knobs :meth:`condition` reads), optionally
    ``timestep_offset`` (added to every visited timestep: InvSR's official code visits 199 for the paper's 200),
    and implement :meth:`condition`, :meth:`denoiser` and :meth:`decode`.
    """

    sampler_type: ClassVar[type[Sampler]] = Sampler
    method_knobs: ClassVar[tuple[str, ...]] = ()
    timestep_offset: ClassVar[int] = 0

    def __init__(
        self,
        scale: int,
        *,
        sampler: Sampler,
        timesteps: TimestepProvider | None = None,
        start_state: StartState | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
        color_fix: str | None = None,
    ):
        super().__init__(scale, color_fix)
        if not isinstance(sampler, self.sampler_type):
            raise ConfigError(
                f"{self.descriptor.name} needs a {self.sampler_type.__name__} (its backbone's maths), got "
                f"{type(sampler).__name__}; choose a sampler of that family"
            )
        for name, hook, kind in [("timesteps", timesteps, TimestepProvider), ("start_state", start_state, StartState),
                                 ("noise", noise, NoiseHook), ("mean_correction", mean_correction, MeanCorrectionHook)]:
            if hook is not None and not isinstance(hook, kind):
                raise ConfigError(f"{self.descriptor.name}: the {name} hook must be a {kind.__name__}, got {type(hook).__name__}")
        self.sampler = sampler
        self.timestep_provider = timesteps
        self.start_state = start_state if start_state is not None else PriorStart()
        self.noise_hook, self.mean_correction_hook = noise, mean_correction

    # ------------------------------------------------------------------ the method's pieces

    @abstractmethod
    def condition(self, lr: Tensor, generator: torch.Generator | None, **knobs: Any) -> Chain:
        """The chain's condition for a padded LR batch in the method's range; ``knobs``: :attr:`method_knobs`."""

    @abstractmethod
    def denoiser(self, chain: Chain) -> Denoiser:
        """``(x_t, t) -> x0`` prediction for this chain."""

    @abstractmethod
    def decode(self, z_0: Tensor, chain: Chain) -> Tensor:
        """The image (in the method's range) of the chain's final state."""

    def call_sampler(self, chain: Chain) -> Sampler:
        """The sampler of this call (the configured one; CCSR swaps in its uniform twin). :meth:`_run_chain` binds the
        hooks on a copy of it, so the configured sampler is never touched."""
        return self.sampler

    # ------------------------------------------------------------------ the composition

    def _owners(self) -> list[tuple[str, tuple[str, ...]]]:
        hooks = [("timesteps", self.timestep_provider), ("start_state", self.start_state), ("noise", self.noise_hook),
                 ("mean_correction", self.mean_correction_hook)]
        return [("sampler", tuple(self.sampler.knobs)), ("method", self.method_knobs),
                *((name, hook.knobs) for name, hook in hooks if hook is not None)]

    def split_knobs(self, knobs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``sr()`` knobs by owner (sampler, method, each hook); ``timesteps`` is the explicit schedule."""
        remaining = dict(knobs)
        groups: dict[str, dict[str, Any]] = {"explicit": {}}
        if "timesteps" in remaining:
            groups["explicit"]["timesteps"] = remaining.pop("timesteps")
        for owner, names in self._owners():
            groups[owner] = {k: remaining.pop(k) for k in names if k in remaining}
        if remaining:
            accepted = sorted({"timesteps", *(k for _, names in self._owners() for k in names)})
            raise UnsupportedError(
                f"{self.descriptor.name} has no options {sorted(remaining)}; it takes steps=, seed= and "
                f"{', '.join(accepted)}"
            )
        return groups

    def schedule(self, chain: Chain, sampler: Sampler, steps: int | None, knobs: dict[str, dict[str, Any]]) -> Schedule:
        """The visited timesteps in the method's paper numbering (see the module docstring for the precedence)."""
        explicit, sampler_knobs = knobs["explicit"].get("timesteps"), knobs["sampler"]
        if explicit is not None or sampler_knobs or self.timestep_provider is None or sampler.schedule_is_configured:
            return resolve_timesteps(sampler, steps, explicit, **sampler_knobs)
        return self.timestep_provider(self, chain, sampler, steps, **knobs.get("timesteps", {}))

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        groups = self.split_knobs(knobs)
        chain = self.condition(lr, generator, **groups["method"])
        sampler = self.call_sampler(chain)
        schedule = self.schedule(chain, sampler, steps, groups)
        if schedule and isinstance(schedule[0], list):  # one schedule per sample: run the samples that share one together
            per_sample: list[list[int]] = schedule  # type: ignore[assignment]
            out: Tensor | None = None
            for ts in sorted({tuple(s) for s in per_sample}, reverse=True):
                index = torch.tensor([i for i, s in enumerate(per_sample) if tuple(s) == ts], device=lr.device)
                part = self._run_chain(chain.select(index), sampler, list(ts), groups)
                out = part.new_empty(lr.shape[0], *part.shape[1:]) if out is None else out
                out[index] = part
            assert out is not None
            return out
        return self._run_chain(chain, sampler, schedule, groups)  # type: ignore[arg-type]

    def _run_chain(self, chain: Chain, sampler: Sampler, timesteps: list[int], knobs: dict[str, dict[str, Any]]) -> Tensor:
        timesteps = [t + self.timestep_offset for t in timesteps]
        sampler = copy.copy(sampler)
        if self.noise_hook is not None:
            sampler.noise = self.noise_hook.bind(self, chain, sampler, **knobs.get("noise", {})) or sampler.noise
        if self.mean_correction_hook is not None:
            sampler.mean_correction = self.mean_correction_hook.bind(self, chain, sampler, **knobs.get("mean_correction", {}))
        x_start = self.start_state(self, chain, sampler, timesteps[0], **knobs.get("start_state", {}))
        z_0 = sampler.sample(self.denoiser(chain), chain.y, timesteps=timesteps, x_start=x_start, generator=chain.generator)
        self.last_timesteps = timesteps
        return self.decode(z_0, chain)
