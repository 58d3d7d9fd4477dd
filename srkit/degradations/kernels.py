"""Blur kernels of the Real-ESRGAN degradation and their seeded sampling.

Kernels follow Real-ESRGAN (Wang et al., ICCVW 2021, Sec. 3.2) as implemented by BasicSR and
used unchanged by ResShift and InvSR: for a covariance ``Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T``
and the pixel offsets ``c`` from the kernel centre, with ``q = c^T Sigma^-1 c``,

* Gaussian ``k = exp(-q / 2)`` (Eq. 2 of Real-ESRGAN),
* generalized Gaussian ``k = exp(-(q)^beta / 2)`` (Eq. 3; BasicSR's form),
* plateau ``k = 1 / (1 + q^beta)`` (Eq. 4; BasicSR's form),
* 2-D sinc (ideal circular low-pass) ``k = omega J1(omega r) / (2 pi r)``, centre ``omega^2 / (4 pi)`` (Eq. 5),

each normalised to sum 1. All randomness comes from a ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "KERNEL_TYPES", "KernelSpec", "bivariate_kernel", "build_kernel", "choice", "circular_lowpass_kernel", "filter2d",
    "sample_kernel", "uniform",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@dataclass(frozen=True)
class KernelSpec:
    """One sampled kernel: its type (one of :data:`KERNEL_TYPES`, ``"sinc"`` or ``"pulse"``) and parameters."""

    kind: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    cutoff: float = 0.0  # omega_c of a sinc kernel


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """A float drawn uniformly from [low, high) with ``generator``."""
    return low + (high - low) * float(torch.rand((), generator=generator, device=generator.device))


def choice(generator: torch.Generator, probs: Sequence[float]) -> int:
    """An index drawn with the (unnormalised) probabilities ``probs``."""
    weights = torch.tensor([float(p) for p in probs], dtype=torch.float64, device=generator.device)
    return int(torch.multinomial(weights, 1, generator=generator))


def _grid(size: int) -> Tensor:
    """Offsets from the centre, (size, size, 2) as (x, y) = (column, row), float64."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def bivariate_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0) -> Tensor:
    """A normalised (size, size) float64 Gaussian, generalized-Gaussian or plateau kernel (Eqs. 2-4)."""
    family = kind.removesuffix("_iso").removesuffix("_aniso")
    if kind not in KERNEL_TYPES:
        raise ConfigError(f"unknown kernel type {kind!r}; use one of {', '.join(KERNEL_TYPES)}")
    cos, sin = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    sigma = rot @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rot.T
    grid = _grid(size)
    q = ((grid @ torch.linalg.inv(sigma)) * grid).sum(-1)
    if family == "iso" or family == "aniso":
        kernel = torch.exp(-0.5 * q)  # Eq. (2)
    elif family == "generalized":
        kernel = torch.exp(-0.5 * q.pow(beta))  # Eq. (3)
    else:
        kernel = 1 / (q.pow(beta) + 1)  # Eq. (4)
    return kernel / kernel.sum()


def circular_lowpass_kernel(cutoff: float, size: int) -> Tensor:
    """The normalised (size, size) float64 2-D sinc kernel with cut-off frequency ``cutoff`` (Eq. 5)."""
    r = _grid(size).norm(dim=-1)
    safe = r.clamp_min(1e-12)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), kernel)
    return kernel / kernel.sum()


def build_kernel(spec: KernelSpec, pad_to: int) -> Tensor:
    """The float64 kernel of ``spec``, zero-padded to (pad_to, pad_to)."""
    if spec.kind == "pulse":
        kernel = torch.ones(1, 1, dtype=torch.float64)
    elif spec.kind == "sinc":
        kernel = circular_lowpass_kernel(spec.cutoff, spec.size)
    else:
        kernel = bivariate_kernel(spec.kind, spec.size, spec.sigma_x, spec.sigma_y, spec.theta, spec.beta)
    pad = (pad_to - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad))


def _beta(generator: torch.Generator, beta_range: Sequence[float]) -> float:
    # BasicSR: beta below or above 1 with probability 1/2 each (random_bivariate_generalized_Gaussian/plateau).
    if uniform(generator, 0, 1) < 0.5:
        return uniform(generator, beta_range[0], 1)
    return uniform(generator, 1, beta_range[1])


def sample_kernel(
    generator: torch.Generator,
    *,
    sizes: Sequence[int],
    sinc_prob: float,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    blur_sigma: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> KernelSpec:
    """Draw one blur kernel as Real-ESRGAN's dataset does: a size, then sinc or a mixed kernel.

    A sinc kernel takes ``omega_c ~ U(pi/3, pi)`` below size 13 and ``U(pi/5, pi)`` from 13 on;
    otherwise the type is drawn from ``kernel_list`` with ``kernel_prob``, ``sigma_x, sigma_y ~ U(blur_sigma)``
    (``sigma_y = sigma_x`` and ``theta = 0`` when isotropic), ``theta ~ U(-pi, pi)`` and beta per :func:`_beta`.
    """
    size = int(sizes[choice(generator, [1.0] * len(sizes))])
    if uniform(generator, 0, 1) < sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return KernelSpec("sinc", size, cutoff=uniform(generator, low, math.pi))
    kind = kernel_list[choice(generator, kernel_prob)]
    sigma_x = uniform(generator, *blur_sigma)
    sigma_y, theta = sigma_x, 0.0
    if kind.endswith("aniso"):
        sigma_y = uniform(generator, *blur_sigma)
        theta = uniform(generator, -math.pi, math.pi)
    beta = 1.0
    if kind.startswith("generalized"):
        beta = _beta(generator, betag_range)
    elif kind.startswith("plateau"):
        beta = _beta(generator, betap_range)
    return KernelSpec(kind, size, sigma_x, sigma_y, theta, beta)


def filter2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Correlate each image of ``x`` (B, C, H, W) with its own kernel ``kernels`` (B, k, k), odd k.

    Borders are reflected (BasicSR's ``filter2D``); images too small to reflect are edge-replicated.
    """
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < h and pad < w else "replicate"
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    weight = kernels.to(x).repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, k, k)
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.view(b, c, h, w)
