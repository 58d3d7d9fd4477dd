"""Tiled processing of any image-to-image function with a scale factor.

Tiles overlap by ``overlap`` input pixels. Inside each overlap the two tiles are cross-faded with
a raised-cosine ramp that occupies only the middle half of the overlap: the outer quarter next to
a tile's cut edge gets weight exactly zero. So a function whose receptive field has a radius of at
most ``overlap / 4`` input pixels gives the same result tiled and untiled (up to float rounding),
and stochastic functions (diffusion samplers) blend without visible seams. Sides that lie on the
image border are never faded.

Tiles all have the same size (the last one along each axis is shifted back inside the image), so
they can be stacked into batches; each tile is padded to the model's size multiple and cropped back.

Networks whose GroupNorms see the whole image (the VAE decoders) cannot be cut into independent
tiles without changing their output; :func:`stagewise_tiled_apply` runs such a network stage by
stage over tiles with halos and image-wide GroupNorm statistics, which is exact.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import TileError

_T = TypeVar("_T")
log = logging.getLogger(__name__)


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


PadMode = Literal["reflect", "symmetric"]


def pad_to_multiple(x: Tensor, multiple: int, mode: PadMode = "reflect") -> Tensor:
    """Pad bottom and right to sides that are multiples of ``multiple``: the one padding rule of srkit.

    ``"reflect"`` mirrors about the edge pixel (torch's reflect, OpenCV's BORDER_REFLECT_101: what ResShift's
    official sampler does); it needs the pad to be smaller than the side, otherwise the edge is replicated.
    ``"symmetric"`` repeats the edge pixel (OpenCV's BORDER_REFLECT, numpy's "symmetric"; any pad length): LPNSR's
    official inference pads with it.
    """
    if mode not in ("reflect", "symmetric"):
        raise TileError(f"unknown padding mode {mode!r}; use 'reflect' or 'symmetric'")
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "symmetric":
        return x.index_select(-2, _symmetric_index(h, h + pad_h, x.device)).index_select(-1, _symmetric_index(w, w + pad_w, x.device))
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_h < h and pad_w < w else "replicate")


def _symmetric_index(size: int, padded: int, device: torch.device) -> Tensor:
    """The source index of each of ``padded`` positions under OpenCV's BORDER_REFLECT (period 2 x ``size``)."""
    i = torch.arange(padded, device=device) % (2 * size)
    return torch.where(i < size, i, 2 * size - 1 - i)


def pad_to_power_of_two(x: Tensor) -> Tensor:
    """Reflect-pad bottom and right to sides that are powers of two (LPNSR's official inference, "for FFT")."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (1 << (h - 1).bit_length()) - h, (1 << (w - 1).bit_length()) - w
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x


def apply_padded(fn: Callable[[Tensor], Tensor], x: Tensor, *, scale: float, multiple: int = 1,
                 pad_mode: PadMode = "reflect") -> Tensor:
    """``fn(x)`` with ``x`` padded to a multiple of ``multiple`` (:func:`pad_to_multiple`) and the output cropped back."""
    h, w = x.shape[-2:]
    padded = pad_to_multiple(x, multiple, pad_mode)
    out = fn(padded)
    expected = (round(padded.shape[-2] * scale), round(padded.shape[-1] * scale))
    if tuple(out.shape[-2:]) != expected:
        raise TileError(
            f"the model returned spatial size {tuple(out.shape[-2:])} for an input of {tuple(padded.shape[-2:])} "
            f"(padded to a multiple of {multiple}), expected {expected} at scale {scale}"
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
    pad_mode: PadMode = "reflect",
) -> Tensor:
    """Apply ``fn`` (B, C, h, w) -> (B, C', h*scale, w*scale) to ``x`` tile by tile.

    ``tile`` and ``overlap`` are in input pixels; ``multiple`` is the side multiple ``fn`` needs
    (inputs are padded by ``pad_mode`` and outputs cropped); ``batch_size`` tiles go through ``fn``
    at once. When ``scale < 1`` (an encoder), tile offsets are aligned to ``1 / scale``.
    The result is assembled from :func:`tiled_rows`: besides the output, memory holds one band of
    tiles (a tile tall, the image wide), not an image-sized weight map.
    """
    out: Tensor | None = None
    for top, rows in tiled_rows(fn, x, scale=scale, tile=tile, overlap=overlap, multiple=multiple,
                                batch_size=batch_size, progress=progress, pad_mode=pad_mode):
        if out is None:
            out = rows.new_empty(*rows.shape[:2], round(x.shape[-2] * scale), rows.shape[-1])
        out[..., top : top + rows.shape[-2], :] = rows
    assert out is not None
    return out


def crop_tensor(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """The region of ``x`` a tile covers (the default ``crop`` of :func:`tiled_rows`)."""
    return x[..., top : top + height, left : left + width]


def tiled_rows(
    fn: Callable[[Tensor], Tensor],
    x: Any,
    *,
    scale: float,
    tile: int,
    overlap: int = 32,
    multiple: int = 1,
    batch_size: int = 1,
    progress: bool = False,
    crop: Callable[[Any, int, int, int, int], Tensor] = crop_tensor,
    chunk_elements: int = 2**22,
    pad_mode: PadMode = "reflect",
) -> Iterator[tuple[int, Tensor]]:
    """:func:`tiled_apply`'s output as it becomes final: ``(first row, rows)`` pairs, top to bottom.

    The tiles run one row of tiles at a time and are blended into a band one tile tall and the image
    wide; after each row of tiles, the band's rows that no later tile reaches are yielded (in chunks of
    about ``chunk_elements`` values) and the band moves down. So memory follows the tile and the
    image's width, not its area: a caller that writes the rows out (:func:`srkit.io.write_png_rows`)
    super-resolves images whose output would not fit in memory.

    ``x`` is a (B, C, H, W) tensor, or any object with such a ``shape`` from which ``crop(x, top, left,
    height, width)`` returns a region as a tensor (an 8-bit image converted tile by tile).
    The blend weights are a product of per-axis ramps, so they are normalised per axis.
    """
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise TileError(f"tiled_apply expects a (B, C, H, W) tensor, got shape {shape}")
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
    batch, _, height, width = shape
    if align > 1 and (tile % align or height % align or width % align):
        raise TileError(
            f"with scale 1/{align}, the tile ({tile}) and the image sides {(height, width)} "
            f"must be multiples of {align}; pad or crop the image first"
        )
    if tile >= height and tile >= width:
        yield 0, apply_padded(fn, crop(x, 0, 0, height, width), scale=scale, multiple=multiple, pad_mode=pad_mode)
        return

    tile_h, tile_w = min(tile, height), min(tile, width)
    tops, lefts = tile_starts(height, tile_h, overlap, align), tile_starts(width, tile_w, overlap, align)
    out_h, out_w = round(height * scale), round(width * scale)
    tile_out_h, tile_out_w = round(tile_h * scale), round(tile_w * scale)

    def ramps(starts: list[int], size: int, size_out: int, length: int, length_out: int) -> tuple[list[Tensor], Tensor]:
        per_tile = [_ramp(size_out, scale, overlap, start > 0, start + size < length, torch.device("cpu")) for start in starts]
        total = torch.zeros(length_out, dtype=torch.float64)
        for start, ramp in zip(starts, per_tile):
            total[round(start * scale) : round(start * scale) + size_out] += ramp
        return per_tile, total

    row_ramps, row_total = ramps(tops, tile_h, tile_out_h, height, out_h)
    col_ramps, col_total = ramps(lefts, tile_w, tile_out_w, width, out_w)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(tops) * len(lefts), desc="tiles", unit="tile", disable=not progress, leave=False)
    band: Tensor | None = None  # rows [band_top, band_top + tile_out_h) of the weighted sum, on fn's device
    band_top, out_dtype = 0, torch.float32
    for index, top in enumerate(tops):
        rows = row_ramps[index]
        for first in range(0, len(lefts), batch_size):
            group = range(first, min(first + batch_size, len(lefts)))  # column indices of the tiles run together
            crops = torch.cat([crop(x, top, lefts[j], tile_h, tile_w) for j in group])
            results = apply_padded(fn, crops, scale=scale, multiple=multiple, pad_mode=pad_mode)
            if band is None:
                out_dtype = results.dtype
                accumulate = torch.float64 if out_dtype == torch.float64 else torch.float32
                band = torch.zeros(batch, results.shape[1], tile_out_h, out_w, device=results.device, dtype=accumulate)
                row_total, col_total = row_total.to(results.device, accumulate), col_total.to(results.device, accumulate)
            # The band starts at this row of tiles' top: the previous row moved it there.
            for k, j in enumerate(group):
                o_left = round(lefts[j] * scale)
                window = rows.to(band)[:, None] * col_ramps[j].to(band)[None, :]
                tile_out = results[k * batch : (k + 1) * batch].to(band)
                band[..., :, o_left : o_left + tile_out_w] += tile_out * window
            bar.update(len(group))
        assert band is not None
        done = out_h if index + 1 == len(tops) else round(tops[index + 1] * scale)  # rows no later tile reaches
        step = max(1, chunk_elements // (band.shape[0] * band.shape[1] * out_w))
        for first in range(band_top, done, step):
            last = min(first + step, done)
            norm = row_total[first:last, None] * col_total[None, :]
            yield first, (band[..., first - band_top : last - band_top, :] / norm).to(out_dtype)
        kept = band_top + tile_out_h - done  # rows of this band that the next row of tiles adds to
        if kept > 0:
            band[..., :kept, :] = band[..., done - band_top :, :].clone()
        band[..., max(kept, 0) :, :] = 0
        band_top = done
    bar.close()


# ------------------------------------------------------------------------------------------------
# tile="auto": a tile from free memory, halved on an out-of-memory error

# Working memory of one tile as a multiple of its float32 output: the networks' activations (a VAE decoder's widest
# stage holds 128-512 channels at the output's resolution) are tens of times the 3-channel output. A first guess:
# too large a guess costs one out-of-memory error and a retry with half the tile.
AUTO_TILE_WORKING_FACTOR = 64


def free_memory(device: torch.device) -> int:
    """Bytes that can be allocated on ``device`` now: the CUDA driver's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_tile(shape: Sequence[int], *, scale: float, device: torch.device, minimum: int = 64) -> int | None:
    """The tile ``tile="auto"`` starts from for a (B, C, H, W) input: None (untiled) when the whole image's working
    memory (:data:`AUTO_TILE_WORKING_FACTOR` x its float32 output) fits half the free memory, else the largest
    multiple of 8 that does (at least ``minimum``)."""
    batch, _, height, width = shape
    budget = free_memory(device) / 2
    per_lr_pixel = batch * 3 * 4 * scale * scale * AUTO_TILE_WORKING_FACTOR
    if height * width * per_lr_pixel <= budget:
        return None
    return max(minimum, int(math.sqrt(budget / per_lr_pixel)) // 8 * 8)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure: torch's OutOfMemoryError (CUDA, MPS) or the CPU allocator's."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in str(error) or "not enough memory" in str(error)))


def with_auto_tile(run: Callable[[int | None], _T], *, start: int | None, side: int, minimum: int,
                   device: torch.device) -> _T:
    """``run(tile)`` from ``start``, halving the tile after each out-of-memory error (None = untiled halves to
    the image's longer ``side``); a TileError once the tile would fall below ``minimum``."""
    tile = start
    while True:
        try:
            return run(tile)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            smaller = (side if tile is None else tile) // 2 // 8 * 8
            if smaller < minimum:
                raise TileError(
                    f"out of memory even with tile={tile}, the smallest tile for this model ({minimum}); free memory "
                    "(other processes, a smaller tile_batch or decoder_tile) or run on a device with more"
                ) from None
            log.warning("out of memory with tile=%s; retrying with tile=%d", tile or "none (untiled)", smaller)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            tile = smaller


# ------------------------------------------------------------------------------------------------
# Exact tiling of GroupNorm networks, stage by stage


def tile_cuts(length: int, tile: int) -> list[int]:
    """Boundaries ``[0, ..., length]`` of the fewest pieces of at most ``tile`` pixels, sizes as equal as possible."""
    pieces = max(1, math.ceil(length / tile))
    return [round(i * length / pieces) for i in range(pieces + 1)]


Region = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]  # per axis: (crop start, crop size, core start, core end)


class _StatisticsPending(Exception):
    """Raised by a synchronised GroupNorm whose image-wide statistics are not known yet, after adding the tile's share."""


class GroupNormSync:
    """Makes every ``nn.GroupNorm`` of some modules normalise tiles with image-wide statistics.

    Inside :meth:`active`, a GroupNorm whose statistics are frozen normalises with them. Any other
    one adds the per-(sample, group) sum, sum of squares and count of its input over the current
    tile's core (``region``, in the coordinates of the tile's input) to running totals in float64
    and stops the forward (:class:`_StatisticsPending`): nothing after it can be right yet. Cores
    partition the image, so once every tile has passed, :meth:`freeze` turns the totals into
    exactly the untiled statistics.
    """

    def __init__(self, modules: Sequence[nn.Module]):
        self.norms = [m for module in modules for m in module.modules() if isinstance(m, nn.GroupNorm)]
        self.region: Region | None = None
        self._sums: dict[int, Tensor] = {}
        self._stats: dict[int, tuple[Tensor, Tensor]] = {}

    def freeze(self) -> None:
        """Turn the accumulated totals into the statistics used from now on."""
        for key, totals in self._sums.items():
            s1, s2, n = totals.unbind(-1)
            mean = s1 / n
            self._stats[key] = (mean, (s2 / n - mean.square()).clamp_min(0))
        self._sums = {}

    def _core(self, x: Tensor) -> Tensor:
        assert self.region is not None, "run_stage sets the region of every piece"
        slices = []
        for (start, size, lo, hi), extent in zip(self.region, x.shape[-2:]):
            r = extent / size  # this layer's resolution relative to the tile's input
            slices.append(slice(round((lo - start) * r), round((hi - start) * r)))
        return x[..., slices[0], slices[1]]

    def _forward(self, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        key = id(norm)
        if key not in self._stats:
            core = self._core(x).reshape(x.shape[0], norm.num_groups, -1).double()
            count = torch.full_like(core[..., 0], core.shape[-1])
            totals = torch.stack([core.sum(-1), core.square().sum(-1), count], -1)
            self._sums[key] = self._sums[key] + totals if key in self._sums else totals
            raise _StatisticsPending
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32  # F.group_norm's precision
        mean, var = (s.to(compute)[..., None] for s in self._stats[key])
        groups = x.reshape(x.shape[0], norm.num_groups, -1).to(compute)
        y = ((groups - mean) * torch.rsqrt(var + norm.eps)).to(x.dtype).reshape(x.shape)
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

    def run_stage(self, stage: Callable[[Tensor], Tensor], h: Tensor, rows: list[int], cols: list[int], *,
                  halo: int, device: torch.device) -> Tensor:
        """``stage(h)`` computed piece by piece (cut at ``rows`` x ``cols``), each piece with ``halo`` pixels of context.

        Each GroupNorm of the stage costs one pass over the pieces up to it (its statistics); the last
        pass writes every piece's core into the output, kept on ``h``'s device.
        """
        height, width = h.shape[-2:]
        pieces = [(top, bottom, left, right) for top, bottom in itertools.pairwise(rows)
                  for left, right in itertools.pairwise(cols)]
        out: Tensor | None = None
        while True:
            done = 0
            for top, bottom, left, right in pieces:
                crop_top, crop_left = max(top - halo, 0), max(left - halo, 0)
                crop_bottom, crop_right = min(bottom + halo, height), min(right + halo, width)
                self.region = ((crop_top, crop_bottom - crop_top, top, bottom), (crop_left, crop_right - crop_left, left, right))
                try:
                    y = stage(h[..., crop_top:crop_bottom, crop_left:crop_right].to(device))
                except _StatisticsPending:
                    continue
                scale = y.shape[-2] // (crop_bottom - crop_top)
                if y.shape[-2:] != ((crop_bottom - crop_top) * scale, (crop_right - crop_left) * scale):
                    raise TileError(f"a tiled stage mapped a {tuple(h.shape[-2:])} crop to {tuple(y.shape[-2:])}: "
                                    "stages must keep the size or enlarge it by a whole factor")
                if out is None:
                    out = h.new_empty(*y.shape[:2], height * scale, width * scale, dtype=y.dtype)
                inner = (slice((top - crop_top) * scale, (bottom - crop_top) * scale),
                         slice((left - crop_left) * scale, (right - crop_left) * scale))
                out[..., top * scale : bottom * scale, left * scale : right * scale] = y[(..., *inner)].to(out.device)
                done += 1
            if done == len(pieces):
                assert out is not None
                return out
            if done:  # a stage's GroupNorms must be met in the same order on every piece
                raise TileError("a tiled stage ran different GroupNorms on different tiles; it cannot be tiled exactly")
            self.freeze()


def stagewise_tiled_apply(
    stages: Sequence[Callable[[Tensor], Tensor]],
    x: Tensor,
    modules: Sequence[nn.Module],
    *,
    tile: int,
    halo: int = 2,
    store: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """The composition of ``stages`` applied to ``x``, exactly, holding one tile's working memory at a time.

    Each stage is local (convolutions, GroupNorm, nearest upsampling: its output pixel depends on
    input pixels at most ``halo`` away) and keeps the size or enlarges it by a whole factor. The
    stages run one after another on the whole image, kept on ``store`` (default: ``x``'s device;
    ``"cpu"`` leaves the accelerator one tile's working memory); each stage runs over pieces of at
    most ``tile`` pixels of ``x`` (scaled to the stage's resolution) plus ``halo`` pixels of
    context, and only the pieces' cores are kept, so no blending is needed. The GroupNorms inside
    ``modules`` normalise with the statistics of the whole image (:class:`GroupNormSync`), so the
    result equals the untiled one up to float rounding; the price is one extra partial pass per
    GroupNorm (a residual block of two GroupNorms costs 3 convolutions instead of 2).
    """
    if x.dim() != 4:
        raise TileError(f"stagewise_tiled_apply expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if tile < 1 or halo < 0:
        raise TileError(f"tile must be >= 1 and halo >= 0, got tile={tile}, halo={halo}")
    if tile >= x.shape[-2] and tile >= x.shape[-1]:
        return _compose(stages, x)  # one piece: the untiled computation
    keep = x.device if store is None else torch.device(store)
    rows, cols = tile_cuts(x.shape[-2], tile), tile_cuts(x.shape[-1], tile)
    h = x.to(keep)
    sync = GroupNormSync(modules)

    from tqdm.auto import tqdm

    with sync.active():
        for stage in tqdm(stages, desc="tiled stages", unit="stage", disable=not progress, leave=False):
            factor = h.shape[-2] // x.shape[-2]  # the stage's resolution relative to x
            h = sync.run_stage(stage, h, [c * factor for c in rows], [c * factor for c in cols], halo=halo, device=x.device)
    return h.to(x.device)


def tiled_network_apply(
    stages: Sequence[Callable[[Tensor], Tensor]],
    x: Tensor,
    modules: Sequence[nn.Module],
    *,
    scale: float,
    tile: int,
    overlap: int,
    statistics: Literal["image", "tile"] = "image",
    store: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """The composition of ``stages`` (GroupNorms inside ``modules``, overall ``scale``) on ``x`` in tiles.

    ``statistics="image"``: :func:`stagewise_tiled_apply`, exact. ``statistics="tile"``:
    :func:`tiled_apply` of the whole composition on tiles blended over ``overlap`` pixels, each
    normalised with its own statistics (diffusers' VAE tiling): one pass, memory bounded by the
    tile everywhere, but not the untiled result.
    """
    if statistics == "image":
        return stagewise_tiled_apply(stages, x, modules, tile=tile, store=store, progress=progress)
    if statistics != "tile":
        raise TileError(f"statistics must be 'image' (untiled GroupNorm statistics) or 'tile' (per tile), got {statistics!r}")
    return tiled_apply(lambda h: _compose(stages, h), x, scale=scale, tile=tile, overlap=overlap, progress=progress)


def _compose(stages: Sequence[Callable[[Tensor], Tensor]], x: Tensor) -> Tensor:
    for stage in stages:
        x = stage(x)
    return x
