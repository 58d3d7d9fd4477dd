"""The one timesteps resolver (diffusers' ``retrieve_timesteps`` in spirit): the schedule is data.

Every sampler answers ``timesteps(steps, **knobs)`` with the decreasing list it would visit;
:func:`resolve_timesteps` turns what a caller asked for -- a step count, an explicit list, sampler
knobs such as ``start_t`` -- into that list, and refuses requests that contradict each other (three
steps and a five-value list). The list is then handed to ``Sampler.sample(..., timesteps=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..types import Sampler

__all__ = ["check_timesteps", "resolve_timesteps"]


def check_timesteps(timesteps: Sequence[int], *, upper: int | None = None) -> list[int]:
    """``timesteps`` as a list of ints, strictly decreasing, >= 0 (and < ``upper``), or a clear error."""
    ts = [int(t) for t in timesteps]
    if not ts or any(a <= b for a, b in pairwise(ts)) or ts[-1] < 0 or (upper is not None and ts[0] >= upper):
        bound = f" below {upper}" if upper is not None else ""
        raise ConfigError(f"timesteps must be a non-empty, strictly decreasing list of integers >= 0{bound}, got {list(timesteps)}")
    return ts


def resolve_timesteps(sampler: Sampler, steps: int | None = None, timesteps: Sequence[int] | None = None,
                      **knobs: Any) -> list[int]:
    """The visited timesteps for ``steps`` (None: the sampler's default), an explicit ``timesteps`` list, or
    the sampler's knobs (e.g. ``start_t``, ``t_max``). ``steps`` and a list or knobs that imply another
    length raise."""
    if timesteps is not None:
        if knobs:
            raise ConfigError(f"an explicit timesteps list leaves nothing for the sampler options {sorted(knobs)}; pass one")
        ts = check_timesteps(timesteps)
    else:
        ts = sampler.timesteps(steps, **knobs)
    if steps is not None and len(ts) != steps:
        source = f"timesteps={ts}" if timesteps is not None else f"the sampler's schedule {ts} for {knobs or 'its defaults'}"
        raise ConfigError(f"steps={steps} and {source} ({len(ts)} values) disagree; pass only one of them, or matching ones")
    return ts
