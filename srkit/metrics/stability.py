"""CCSR's stability metrics over N seeded runs: G-STD (Eq. 4) and L-STD (Eq. 5), CCSR paper.

Both use the population standard deviation (ddof 0) across the N runs, as CCSR's
``cal_iqa/iqa_G-STD.py`` and ``iqa_L-STD.py`` do. Eq. (5) as printed omits the square inside the
root; the official script (and the name "standard deviation") square the deviations, so do we.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, InvalidImageError


def g_std(values: Tensor | Sequence[Sequence[float]]) -> float:
    """Eq. (4), CCSR: mean over the M images of the std across the N runs of a per-image metric.

    ``values`` has shape (N runs, M images).
    """
    p = torch.as_tensor(values, dtype=torch.float64)
    if p.dim() != 2 or p.shape[0] < 2:
        raise ConfigError(f"g_std needs values of shape (N runs >= 2, M images), got {tuple(p.shape)}")
    return float(p.std(dim=0, correction=0).mean())


class LocalStd:
    """Eq. (5), CCSR, accumulated one run at a time (Welford), so N outputs are never held at once.

    For each image j: add its N SR outputs with :meth:`update`; :meth:`image_value` is the mean over
    pixels and channels of the per-pixel std across runs; :attr:`value` the mean over images.
    """

    def __init__(self) -> None:
        self._images: list[float] = []
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def update(self, output: Tensor) -> None:
        """Add one run's SR output (C, H, W) of the current image."""
        x = output.detach().to(torch.float64)
        self._count += 1
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = x.clone(), torch.zeros_like(x)
            return
        if x.shape != self._mean.shape:
            raise InvalidImageError(f"run outputs differ in shape: {tuple(x.shape)} vs {tuple(self._mean.shape)}")
        delta = x - self._mean
        self._mean += delta / self._count
        self._m2 += delta * (x - self._mean)

    def std_map(self) -> Tensor:
        """The current image's per-pixel std across its runs, (C, H, W): what :meth:`image_value` averages."""
        if self._m2 is None or self._count < 2:
            raise ConfigError("L-STD needs at least 2 runs of an image")
        return (self._m2 / self._count).sqrt()

    def image_value(self) -> float:
        """Close the current image: its L-STD term (mean over H, W and channels); start the next image."""
        value = float(self.std_map().mean())
        self._images.append(value)
        self._reset()
        return value

    @property
    def value(self) -> float:
        if not self._images:
            raise ConfigError("L-STD has no images yet")
        return sum(self._images) / len(self._images)


def l_std(outputs: Tensor) -> float:
    """Eq. (5), CCSR, of SR outputs of shape (N runs, M images, C, H, W) in [0, 1]."""
    x = torch.as_tensor(outputs, dtype=torch.float64)
    if x.dim() != 5 or x.shape[0] < 2:
        raise ConfigError(f"l_std needs outputs of shape (N runs >= 2, M, C, H, W), got {tuple(x.shape)}")
    return float(x.std(dim=0, correction=0).mean())


@dataclass(frozen=True)
class Stability:
    """Per metric: its mean over runs and images, its G-STD and its values (N runs, M images); the L-STD of the
    outputs, and the per-pixel std maps (C, H, W) of the first images (as many as asked for)."""

    mean: dict[str, float]
    g_std: dict[str, float]
    values: dict[str, tuple[tuple[float, ...], ...]]
    l_std: float
    std_maps: tuple[Tensor, ...] = ()


def stability(
    method: Any,
    pairs: Sequence[tuple[Tensor, Tensor]],
    metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    seeds: Sequence[int],
    *,
    crop_border: int = 4,
    std_maps: int = 0,
    on_run: Callable[[], Any] | None = None,
    **sr_kwargs: Any,
) -> Stability:
    """Run ``method.sr`` on every (LR, HR) pair's LR with each seed: G-STD of each metric, L-STD of the outputs.

    ``metrics`` maps names to callables ``metric(sr, hr) -> (B,)`` values (see :func:`srkit.metrics.iqa.get_metric`);
    LR and HR are (3, H, W) tensors. L-STD is computed after cropping ``crop_border`` pixels, as CCSR's script does;
    the std maps of the first ``std_maps`` images are kept (for figures). ``on_run`` is called after every run (a
    progress bar); ``sr_kwargs`` go to ``method.sr`` (e.g. ``steps=``).
    """
    if len(seeds) < 2:
        raise ConfigError(f"stability needs at least 2 seeds, got {list(seeds)}")
    if not pairs or not metrics:
        raise ConfigError("stability needs at least one (LR, HR) pair and one metric")
    values = {name: torch.zeros(len(seeds), len(pairs), dtype=torch.float64) for name in metrics}
    local, maps = LocalStd(), []
    c = crop_border
    for j, (lr, hr) in enumerate(pairs):
        for i, seed in enumerate(seeds):
            out = method.sr(lr.unsqueeze(0), seed=int(seed), **sr_kwargs).float()
            for name, metric in metrics.items():
                values[name][i, j] = float(metric(out, hr.unsqueeze(0).to(out))[0])
            local.update(out[0, :, c : out.shape[-2] - c, c : out.shape[-1] - c])
            if on_run is not None:
                on_run()
        if j < std_maps:
            maps.append(local.std_map().float().cpu())
        local.image_value()
    return Stability(
        mean={name: float(v.mean()) for name, v in values.items()},
        g_std={name: g_std(v) for name, v in values.items()},
        values={name: tuple(map(tuple, v.tolist())) for name, v in values.items()},
        l_std=local.value, std_maps=tuple(maps),
    )
