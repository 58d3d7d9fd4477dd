"""Tiled processing of any image-to-image function with a scale factor.

Tiles overlap by ``overlap`` input pixels. Inside each overlap the two tiles are cross-faded with
a raised-cosine ramp that occupies only the middle half of the overlap: the outer quarter next to
a tile's cut edge gets weight exactly zero. So a function whose receptive field has a radius of at
most ``overlap / 4`` input pixels gives the same result tiled and untiled (up to float rounding),
and stochastic functions (diffusion samplers) blend without visible seams. Sides that lie on the
image border are never faded.

Tiles all have the same size (the last one along each axis is shifted back inside the image), so
they can be stacked into batches; each tile is padded to the model's size multiple and cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import TileError


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts = [s - s % align for s in starts]
    last = length - tile
    starts.append(last - last % align)
    return sorted(set(starts))


def _ramp(length_out: int, scale: float, overlap: int, fade_start: bool, fade_end: bool, device: torch.device) -> Tensor:
    """Per-output-pixel weight along one axis of a tile (distance measured in input pixels)."""
    centres = (torch.arange(length_out, device=device, dtype=torch.float64) + 0.5) / scale
    weight = torch.ones(length_out, device=device, dtype=torch.float64)
    length_in = length_out / scale

    def fade(distance: Tensor) -> Tensor:
        u = ((distance - overlap / 4) / (overlap / 2)).clamp(0, 1)
        return 0.5 - 0.5 * torch.cos(math.pi * u)

    if fade_start:
        weight = weight * fade(centres)
    if fade_end:
        weight = weight * fade(length_in - centres)
    return weight


def _pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, h, w
    # Reflection keeps image statistics at the border (what the official samplers do); it needs
    # the pad to be smaller than the side, otherwise fall back to replicating the edge.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), h, w


def apply_padded(fn: Callable[[Tensor], Tensor], x: Tensor, *, scale: float, multiple: int = 1) -> Tensor:
    """``fn(x)`` with ``x`` padded to a multiple of ``multiple`` and the output cropped back."""
    padded, h, w = _pad_to_multiple(x, multiple)
    out = fn(padded)
    expected = (round(padded.shape[-2] * scale), round(padded.shape[-1] * scale))
    if tuple(out.shape[-2:]) != expected:
        raise TileError(
            f"the tiled function returned spatial size {tuple(out.shape[-2:])} for input "
            f"{tuple(padded.shape[-2:])}, expected {expected} at scale {scale}"
        )
    return out[..., : round(h * scale), : round(w * scale)]


def tiled_apply(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    scale: float,
    tile: int,
    overlap: int = 32,
    multiple: int = 1,
    batch_size: int = 1,
    progress: bool = False,
) -> Tensor:
    """Apply ``fn`` (B, C, h, w) -> (B, C', h*scale, w*scale) to ``x`` tile by tile.

    ``tile`` and ``overlap`` are in input pixels; ``multiple`` is the side multiple ``fn`` needs
    (inputs are padded by reflection and outputs cropped); ``batch_size`` tiles go through ``fn``
    at once. When ``scale < 1`` (an encoder), tile offsets are aligned to ``1 / scale``.
    """
    if x.dim() != 4:
        raise TileError(f"tiled_apply expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if scale <= 0:
        raise TileError(f"scale must be positive, got {scale}")
    if overlap < 0:
        raise TileError(f"tile overlap must be >= 0, got {overlap}")
    align = max(1, round(1 / scale)) if scale < 1 else 1
    minimum = max(2 * overlap, multiple, align, 8)
    if tile < minimum:
        raise TileError(
            f"tile={tile} is too small: it must be at least {minimum} input pixels "
            f"(2 x overlap={overlap}, and the model's size multiple {multiple}); "
            "use a larger tile or a smaller tile_overlap"
        )
    if align > 1 and (tile % align or x.shape[-2] % align or x.shape[-1] % align):
        raise TileError(
            f"with scale 1/{align}, the tile ({tile}) and the image sides {tuple(x.shape[-2:])} "
            f"must be multiples of {align}; pad or crop the image first"
        )
    batch, _, height, width = x.shape
    if tile >= height and tile >= width:
        return apply_padded(fn, x, scale=scale, multiple=multiple)

    tile_h, tile_w = min(tile, height), min(tile, width)
    boxes = [
        (top, left)
        for top in tile_starts(height, tile_h, overlap, align)
        for left in tile_starts(width, tile_w, overlap, align)
    ]
    out_h, out_w = round(height * scale), round(width * scale)
    tile_out_h, tile_out_w = round(tile_h * scale), round(tile_w * scale)
    out: Tensor | None = None
    out_dtype = x.dtype
    weight_sum = torch.zeros(out_h, out_w, device=x.device, dtype=torch.float64)
    accumulate_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    from tqdm.auto import tqdm

    bar = tqdm(total=len(boxes), desc="tiles", unit="tile", disable=not progress, leave=False)
    for first in range(0, len(boxes), batch_size):
        group = boxes[first : first + batch_size]
        crops = torch.cat([x[..., top : top + tile_h, left : left + tile_w] for top, left in group])
        results = apply_padded(fn, crops, scale=scale, multiple=multiple)
        if out is None:
            out = torch.zeros(batch, results.shape[1], out_h, out_w, device=x.device, dtype=accumulate_dtype)
            out_dtype = results.dtype
        for index, (top, left) in enumerate(group):
            rows = _ramp(tile_out_h, scale, overlap, top > 0, top + tile_h < height, x.device)
            cols = _ramp(tile_out_w, scale, overlap, left > 0, left + tile_w < width, x.device)
            window = rows[:, None] * cols[None, :]
            o_top, o_left = round(top * scale), round(left * scale)
            region = (slice(o_top, o_top + tile_out_h), slice(o_left, o_left + tile_out_w))
            tile_out = results[index * batch : (index + 1) * batch]
            out[(..., *region)] += tile_out.to(accumulate_dtype) * window.to(accumulate_dtype)
            weight_sum[region] += window
        bar.update(len(group))
    bar.close()
    assert out is not None
    return (out / weight_sum.to(accumulate_dtype)).to(out_dtype)


# ------------------------------------------------------------------------------------------------
# Tiling networks with GroupNorm: image-wide statistics across tiles


Core = tuple[int, int, float, float]  # (tile start, tile size, core start, core end) along one axis


def tile_cores(length: int, tile: int, overlap: int) -> list[Core]:
    """The tiles :func:`srkit.tiling.tiled_apply` uses along one axis, each with its *core*.

    Cores partition ``[0, length)``: neighbouring tiles meet in the middle of their overlap, the
    points farthest from both tiles' cut edges.
    """
    size = min(tile, length)
    starts = tile_starts(length, size, overlap)
    bounds = [0.0, *((starts[i - 1] + size + starts[i]) / 2 for i in range(1, len(starts))), float(length)]
    return [(start, size, bounds[i], bounds[i + 1]) for i, start in enumerate(starts)]


class GroupNormSync:
    """Makes every ``nn.GroupNorm`` of some modules use image-wide statistics while they run on tiles.

    Inside :meth:`active`, each GroupNorm adds the per-(sample, group) sum, sum of squares and count
    of its input over the current tile's core (``region``: the row and column :data:`Core` of the
    tile, in the coordinates of the tiled input) to running totals in float64; since cores partition
    the image, the totals are the untiled ones. Once :meth:`freeze` has been called, it normalises
    with the frozen image-wide mean and variance instead of the tile's own.
    """

    def __init__(self, modules: list[nn.Module]):
        self.norms = [m for module in modules for m in module.modules() if isinstance(m, nn.GroupNorm)]
        self.region: tuple[Core, Core] | None = None
        self._sums: dict[int, Tensor] = {}
        self._stats: dict[int, tuple[Tensor, Tensor]] = {}

    def freeze(self) -> None:
        """Turn the accumulated totals into the statistics used from now on, and start new totals."""
        for key, totals in self._sums.items():
            s1, s2, n = totals.unbind(-1)
            mean = s1 / n
            self._stats[key] = (mean, (s2 / n - mean.square()).clamp_min(0))
        self._sums = {}

    def _core(self, x: Tensor) -> Tensor:
        if self.region is None:
            return x
        slices = []
        for (start, size, lo, hi), extent in zip(self.region, x.shape[-2:]):
            r = extent / size  # this layer's resolution relative to the tiled input
            slices.append(slice(round(lo * r) - round(start * r), round(hi * r) - round(start * r)))
        return x[..., slices[0], slices[1]]

    def _forward(self, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        core = self._core(x).reshape(x.shape[0], norm.num_groups, -1).double()
        totals = torch.stack([core.sum(-1), core.square().sum(-1), torch.full_like(core[..., 0], core.shape[-1])], -1)
        key = id(norm)
        self._sums[key] = self._sums[key] + totals if key in self._sums else totals
        if key not in self._stats:
            return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        mean, var = self._stats[key]
        groups = x.reshape(x.shape[0], norm.num_groups, -1).double()
        y = ((groups - mean[..., None]) * torch.rsqrt(var[..., None] + norm.eps)).to(x.dtype).reshape(x.shape)
        if norm.affine:
            y = y * norm.weight[:, None, None] + norm.bias[:, None, None]
        return y

    @contextmanager
    def active(self) -> Iterator[GroupNormSync]:
        """Route the GroupNorms' forward through the synchronised version while inside the block."""
        for norm in self.norms:
            norm.forward = lambda x, norm=norm: self._forward(norm, x)  # an instance attribute shadows the method
        try:
            yield self
        finally:
            for norm in self.norms:
                del norm.forward


def synced_tiled_apply(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    modules: list[nn.Module],
    *,
    scale: float,
    tile: int,
    overlap: int,
    sync_passes: int | None = 2,
    progress: bool = False,
) -> Tensor:
    """:func:`srkit.tiling.tiled_apply` of ``fn`` with the GroupNorms of ``modules`` using image-wide statistics.

    ``sync_passes`` tiled passes accumulate the statistics (:class:`GroupNormSync`) before the final
    pass; each pass refines them, as every GroupNorm's input depends on the statistics before it.
    After as many passes as there are GroupNorm layers in sequence (``sync_passes=None``) every
    statistic is the untiled one, so the result equals the untiled output wherever the function's
    receptive field stays inside the zero-weight margin (``overlap / 4``); fewer passes trade
    exactness for time.
    """
    if tile >= x.shape[-2] and tile >= x.shape[-1]:
        return tiled_apply(fn, x, scale=scale, tile=tile, overlap=overlap)  # one tile: nothing to synchronise
    sync = GroupNormSync(modules)

    def run() -> Tensor:
        # tiled_apply visits the tiles row by row, one call per tile (batch_size=1)
        regions = iter([(row, col) for row in tile_cores(x.shape[-2], tile, overlap)
                        for col in tile_cores(x.shape[-1], tile, overlap)])

        def step(tile_input: Tensor) -> Tensor:
            sync.region = next(regions, None)
            return fn(tile_input)

        return tiled_apply(step, x, scale=scale, tile=tile, overlap=overlap, progress=progress)

    with sync.active():
        for _ in range(len(sync.norms) if sync_passes is None else sync_passes):
            run()
            sync.freeze()
        return run()
