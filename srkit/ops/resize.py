"""MATLAB-compatible bicubic resizing: a PyTorch port of ``imresize(A, scale, 'bicubic')``.

Every super-resolution paper generates its LR inputs and its bicubic baseline with MATLAB's
``imresize``; this module reproduces it in floating point (to ~1e-15 in float64):

* the Keys cubic kernel with ``a = -0.5`` (support 4);
* when downscaling with antialiasing, the kernel is stretched by ``1 / scale`` and its values
  multiplied by ``scale`` (width ``4 / scale``);
* output pixel ``i`` (1-based) samples the input at ``u = i / scale + 0.5 * (1 - 1 / scale)``,
  using ``P = ceil(width) + 2`` taps starting at ``floor(u - width / 2)``, normalised to sum 1;
* indices outside the image are mirrored (symmetric padding, ``[1..n, n..1]`` repeated);
* the two axes are resized separately, the axis with the smaller scale first.

The implementation gathers ``P`` shifted copies of the input per axis (index + weight tensors),
so memory is O(output size) and the operation is batched over any leading dimensions, runs on the
input's device and is differentiable. Weights are computed in float64 and cached per
``(in_len, out_len, scale, antialias, device, dtype)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InvalidImageError

__all__ = ["bicubic_upsample", "contributions", "cubic", "imresize"]

KERNEL_WIDTH = 4.0  # support of the Keys cubic kernel


def cubic(x: Tensor) -> Tensor:
    """The Keys cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    absx = x.abs()
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return inner + outer


@lru_cache(maxsize=256)
def contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[Tensor, Tensor]:
    """MATLAB's ``contributions``: (indices, weights), both (out_len, P), on the CPU.

    ``indices`` are 0-based int64 positions in ``[0, in_len)`` (mirrored at the borders);
    ``weights`` are float64, each row summing to 1. Columns of taps that are zero for every
    output pixel are removed, as MATLAB does.
    """
    if scale < 1 and antialias:
        width = KERNEL_WIDTH / scale

        def kernel(d: Tensor) -> Tensor:
            return scale * cubic(scale * d)
    else:
        width = KERNEL_WIDTH
        kernel = cubic
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)  # 1-based, may fall outside
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(dim=1, keepdim=True)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])  # 0-based [1..n, n..1]
    indices = mirror[torch.remainder(indices.long() - 1, 2 * in_len)]
    keep = (weights != 0).any(dim=0)
    return indices[:, keep].contiguous(), weights[:, keep].contiguous()


@lru_cache(maxsize=256)
def _contributions_on(
    in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor] | None:
    """The contributions moved to ``device`` / ``dtype`` (weights cast from float64), or ``None``
    when the resampling along this axis is the identity (one tap of weight 1 on the same pixel)."""
    indices, weights = contributions(in_len, out_len, scale, antialias)
    if out_len == in_len and indices.shape[1] == 1 and bool((weights == 1).all()) and bool(
        (indices[:, 0] == torch.arange(in_len)).all()
    ):
        return None
    return indices.to(device), weights.to(device=device, dtype=dtype)


def _resize_axis(x: Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    found = _contributions_on(x.shape[dim], out_len, scale, antialias, x.device, x.dtype)
    if found is None:
        return x
    indices, weights = found
    if dim == -1 and x.device.type == "cpu" and x.shape[-1] >= 1024:
        # On the CPU, gathering whole rows is about twice as fast as gathering along the last
        # axis of a wide image: transpose, resize rows, transpose back.
        return _resize_axis(x.transpose(-1, -2).contiguous(), -2, out_len, scale, antialias).transpose(-1, -2).contiguous()
    view = [1] * x.dim()
    view[dim] = -1
    out = x.index_select(dim, indices[:, 0]) * weights[:, 0].view(view)
    for tap in range(1, indices.shape[1]):
        out = out.addcmul_(x.index_select(dim, indices[:, tap]), weights[:, tap].view(view))
    return out


def _check_scale(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"imresize: scale must be a positive number, got {value!r}")
    scale = float(value)
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"imresize: scale must be a positive finite number, got {value!r}")
    return scale


def _check_size(value: object) -> tuple[int, int]:
    if not isinstance(value, (tuple, list, torch.Size)) or len(value) != 2:
        raise ConfigError(f"imresize: size must be a pair (height, width), got {value!r}")
    out = []
    for side in value:
        if isinstance(side, bool) or not isinstance(side, Real) or int(side) != side or side <= 0:
            raise ConfigError(f"imresize: size must hold two positive integers, got {value!r}")
        out.append(int(side))
    return out[0], out[1]


def imresize(
    x: Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    antialias: bool = True,
) -> Tensor:
    """Resize the last two axes of ``x`` (..., H, W) exactly like MATLAB's ``imresize(x, ..., 'bicubic')``.

    ``scale`` alone gives an output of ``(ceil(H * scale), ceil(W * scale))``; ``size`` alone
    gives ``size`` with the per-axis scale ``out / in``; with both, ``size`` sets the output shape
    and ``scale`` the kernel (e.g. ``scale=1/4, size=(H // 4, W // 4)``). ``antialias`` stretches
    the kernel when downscaling (MATLAB's default). The result has the dtype and device of ``x``;
    float16/bfloat16 inputs are computed in float32 and cast back. Values are not clamped
    (bicubic overshoots near edges).
    """
    if not isinstance(x, Tensor):
        raise InvalidImageError(f"imresize: expected a torch.Tensor (..., H, W), got {type(x).__name__}")
    if x.dim() < 2:
        raise InvalidImageError(f"imresize: expected a tensor of shape (..., H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InvalidImageError(
            f"imresize: expected a floating-point tensor, got {x.dtype}; use x.float() / 255 for uint8 images"
        )
    if x.numel() == 0:
        raise InvalidImageError(f"imresize: the input is empty: shape {tuple(x.shape)}")
    if not isinstance(antialias, bool):
        raise ConfigError(f"imresize: antialias must be True or False, got {antialias!r}")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if scale is None and size is None:
        raise ConfigError("imresize: give scale= (e.g. 0.25 or 4) or size=(height, width)")
    if size is not None:
        out_h, out_w = _check_size(size)
        if scale is None:
            scale_h, scale_w = out_h / in_h, out_w / in_w
        else:
            scale_h = scale_w = _check_scale(scale)
    else:
        scale_h = scale_w = _check_scale(scale)
        out_h, out_w = math.ceil(in_h * scale_h), math.ceil(in_w * scale_w)

    source, out_dtype = x, x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    # MATLAB resizes the dimension with the smaller scale first (stable sort: rows on a tie).
    passes = [(-2, out_h, scale_h), (-1, out_w, scale_w)]
    if scale_w < scale_h:
        passes.reverse()
    for dim, out_len, axis_scale in passes:
        x = _resize_axis(x, dim, out_len, axis_scale, antialias)
    return x.clone() if x is source else x.to(out_dtype)


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """PyTorch's bicubic upsampling (a = -0.75, no antialiasing), what the official diffusion SR codes feed their
    encoders and colour fixes; not MATLAB's :func:`imresize`."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def pil_bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """Pillow's bicubic resize by ``scale`` (a = -0.5, out-of-image taps dropped and the rest renormalised), run by
    Pillow itself: what CCSR's code does to the LR (``Image.resize(..., BICUBIC)``) before encoding it; not
    :func:`bicubic_upsample` (mean difference 0.015 on photographs).

    An 8-bit image (every value a multiple of 1/255, as read from a PNG or JPEG) takes Pillow's 8-bit path, equal to
    the official code bit for bit (8-bit results); other values each channel's 32-bit float path (no rounding)."""
    import numpy as np
    from PIL import Image

    if x.dim() != 4 or x.shape[1] != 3:
        raise InvalidImageError(f"pil_bicubic_upsample takes RGB batches (B, 3, h, w), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    size = (width * scale, height * scale)
    pixels = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    levels = np.round(pixels * 255)
    eight_bit = bool(np.all(np.abs(levels - pixels * 255) < 1e-4)) and levels.min() >= 0 and levels.max() <= 255
    images = []
    for image in pixels:
        if eight_bit:
            resized = Image.fromarray(np.round(image * 255).astype(np.uint8), "RGB").resize(size, Image.Resampling.BICUBIC)
            images.append(np.asarray(resized, dtype=np.float32) / 255)
        else:
            channels = [Image.fromarray(image[..., c].astype(np.float32), "F").resize(size, Image.Resampling.BICUBIC)
                        for c in range(3)]
            images.append(np.stack([np.asarray(c, dtype=np.float32) for c in channels], -1))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)


def bicubic_upsample_rows(read: Callable[[int, int], Tensor], first: int, last: int, *, scale: int, height: int) -> Tensor:
    """Rows ``[first, last)`` of ``bicubic_upsample(image, scale)``, computed from the rows ``read(top, bottom)`` of
    the ``height``-row image that they reach: the 4-tap kernel reaches 2 input rows beyond its centre, and the
    border is replicated only at the image's own edges, so the rows equal the whole image's."""
    top, bottom = max(0, first // scale - 2), min(height, -(-last // scale) + 2)
    return bicubic_upsample(read(top, bottom), scale)[..., first - top * scale : last - top * scale, :]
