"""The fused element-wise loss path: L1, L2 and Charbonnier of one tensor pair in one pass.

For a prediction ``x`` and a target ``y`` with ``d = x - y`` over ``N`` elements the terms are

* L1 ``= mean |d|``, L2 ``= mean d^2`` (MSE), Charbonnier ``= mean sqrt(d^2 + eps^2)`` (the robust
  L1 of LapSRN, ``eps = 1e-3``),

and their weighted sum ``w1*L1 + w2*L2 + wc*Charbonnier``. :func:`elementwise_losses` returns all
four as a vector ``[l1, l2, charbonnier, total]``. On CUDA (or on the CPU with
``TRITON_INTERPRET=1``) one Triton kernel reads ``x`` and ``y`` once, accumulates every term in
fp32 and writes one partial sum per block; the backward kernel writes
``dL/dx = sum_k c_k * d(term_k)/dd / N`` in the input dtype (``dL/dy = -dL/dx``) without keeping
anything but the inputs. Elsewhere the same forward and backward formulas run in PyTorch (fp32,
also keeping only the inputs), so both backends give the same numbers.

The backend is chosen by the ``backend`` argument or ``SRKIT_LOSS_BACKEND`` (``auto``, ``torch`` or
``triton``); ``auto`` uses Triton for CUDA tensors when it is installed.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import ConfigError, UnsupportedError

Backend = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
CHARBONNIER_EPS = 1e-3
TERMS = ("l1", "l2", "charbonnier")
BLOCK = 1024

__all__ = ["BACKENDS", "CHARBONNIER_EPS", "TERMS", "elementwise_losses", "resolve_backend", "triton_available"]


@functools.cache
def _triton() -> Any:
    """The compiled Triton kernels, or None when Triton cannot be imported."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def forward_kernel(x_ptr, y_ptr, partial_ptr, n, w1, w2, wc, eps2, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        d = x - y
        sq = d * d
        ab = tl.abs(d)
        ch = tl.where(mask, tl.sqrt(sq + eps2), 0.0)
        s1 = tl.sum(ab, axis=0)
        s2 = tl.sum(sq, axis=0)
        sc = tl.sum(ch, axis=0)
        tl.store(partial_ptr + pid * 4 + 0, s1)
        tl.store(partial_ptr + pid * 4 + 1, s2)
        tl.store(partial_ptr + pid * 4 + 2, sc)
        tl.store(partial_ptr + pid * 4 + 3, w1 * s1 + w2 * s2 + wc * sc)

    @triton.jit
    def backward_kernel(x_ptr, y_ptr, gx_ptr, gy_ptr, coef_ptr, n, eps2, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        c1 = tl.load(coef_ptr + 0)
        c2 = tl.load(coef_ptr + 1)
        cc = tl.load(coef_ptr + 2)
        d = x - y
        sign = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
        g = c1 * sign + c2 * 2.0 * d + cc * d / tl.sqrt(d * d + eps2)
        tl.store(gx_ptr + offsets, g.to(gx_ptr.dtype.element_ty), mask=mask)
        tl.store(gy_ptr + offsets, (-g).to(gy_ptr.dtype.element_ty), mask=mask)

    return forward_kernel, backward_kernel


def triton_available() -> bool:
    return _triton() is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str | None, device: torch.device) -> Literal["torch", "triton"]:
    """The backend that will run for tensors on ``device`` (see the module docstring)."""
    choice = backend if backend is not None else os.environ.get("SRKIT_LOSS_BACKEND", "auto")
    if choice not in BACKENDS:
        raise ConfigError(f"loss backend must be one of {', '.join(BACKENDS)}, got {choice!r} (SRKIT_LOSS_BACKEND or backend=)")
    runnable = triton_available() and (device.type == "cuda" or _interpreting())
    if choice == "triton" and not runnable:
        why = "Triton is not installed (pip install triton)" if not triton_available() else (
            f"tensors are on {device.type}; Triton runs on CUDA, or on the CPU with TRITON_INTERPRET=1 set before import")
        raise UnsupportedError(f"loss backend 'triton' cannot run here: {why}; use backend 'auto' or 'torch'")
    if choice == "auto":
        return "triton" if runnable and device.type == "cuda" else "torch"
    return "triton" if choice == "triton" else "torch"


def _coefficients(grad: Tensor, weights: tuple[float, float, float], n: int) -> Tensor:
    """Per-term gradient coefficients: d total / d term_k = w_k, so c_k = (g_k + w_k * g_total) / N."""
    w = torch.tensor(weights, device=grad.device, dtype=torch.float32)
    return ((grad[:3].float() + w * grad[3].float()) / n).contiguous()


class _TritonElementwise(torch.autograd.Function):
    """Triton forward/backward of ``[l1, l2, charbonnier, total]`` (means over all elements)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, weights: tuple[float, float, float], eps: float) -> Tensor:
        forward_kernel, _ = _triton()
        x_flat, y_flat = x.contiguous().view(-1), y.contiguous().view(-1)
        n = x_flat.numel()
        blocks = max(1, -(-n // BLOCK))
        partial = torch.empty(blocks, 4, device=x.device, dtype=torch.float32)
        forward_kernel[(blocks,)](x_flat, y_flat, partial, n, *weights, eps**2, BLOCK_SIZE=BLOCK)
        ctx.save_for_backward(x_flat, y_flat)
        ctx.shape, ctx.weights, ctx.eps = x.shape, weights, eps
        return partial.sum(0) / n

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        _, backward_kernel = _triton()
        x_flat, y_flat = ctx.saved_tensors
        n = x_flat.numel()
        coef = _coefficients(grad, ctx.weights, n)
        gx, gy = torch.empty_like(x_flat), torch.empty_like(y_flat)
        blocks = max(1, -(-n // BLOCK))
        backward_kernel[(blocks,)](x_flat, y_flat, gx, gy, coef, n, ctx.eps**2, BLOCK_SIZE=BLOCK)
        return gx.view(ctx.shape), gy.view(ctx.shape), None, None


class _TorchElementwise(torch.autograd.Function):
    """The same computation in PyTorch: fp32 terms, only the inputs kept for backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, weights: tuple[float, float, float], eps: float) -> Tensor:
        d = x.float() - y.float()
        sq = d.square()
        terms = torch.stack([d.abs().mean(), sq.mean(), (sq + eps**2).sqrt().mean()])
        ctx.save_for_backward(x, y)
        ctx.weights, ctx.eps = weights, eps
        return torch.cat([terms, (terms * torch.tensor(weights, device=d.device)).sum().view(1)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, y = ctx.saved_tensors
        c = _coefficients(grad, ctx.weights, x.numel())
        d = x.float() - y.float()
        g = c[0] * d.sign() + c[1] * 2 * d + c[2] * d / (d.square() + ctx.eps**2).sqrt()
        gy = (-g).to(y.dtype) if ctx.needs_input_grad[1] else None
        return g.to(x.dtype), gy, None, None


def elementwise_losses(
    pred: Tensor,
    target: Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    eps: float = CHARBONNIER_EPS,
    backend: str | None = None,
) -> Tensor:
    """``[l1, l2, charbonnier, w·terms]`` (fp32) of ``pred`` vs ``target``, differentiable in both."""
    if pred.shape != target.shape:
        raise ConfigError(f"loss inputs differ in shape: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    if pred.dtype != target.dtype or pred.device != target.device:
        target = target.to(pred.device, pred.dtype)
    function = _TritonElementwise if resolve_backend(backend, pred.device) == "triton" else _TorchElementwise
    w1, w2, wc = (float(w) for w in weights)
    return function.apply(pred, target, (w1, w2, wc), float(eps))
