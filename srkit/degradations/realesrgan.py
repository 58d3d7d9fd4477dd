"""The Real-ESRGAN second-order degradation (Wang et al., ICCVW 2021, Sec. 3 and Fig. 2).

HR -> [blur k1 -> random resize -> Gaussian/Poisson noise -> JPEG]
   -> [blur k2 (prob. ``second_blur_prob``) -> random resize -> noise]   (prob. ``second_order_prob``)
   -> in random order: [resize to HR/scale + sinc filter] and JPEG
   -> rounded to 8-bit levels.

The defaults are the values of ResShift's training config (``realsr_swinunet_realesrgan256_journal.yaml``,
identical in InvSR's ``sd-turbo-sr-ldis.yaml``); ``conf/degradation/resshift_test.yaml`` holds the milder
values ResShift used to synthesise ImageNet-Test. Constructor keys are those configs' keys (``sf`` is
``scale``). As in ResShift's data pipeline, kernel sizes are the odd sizes from 3 to
``blur_kernel_size - 2`` and the final sinc kernel uses the second-stage sizes.

Per image: kernels, noise levels, gray-noise flags, Poisson scales and JPEG qualities. Per batch (as
upstream, since they change the image size or the code path): resize direction/scale/mode, noise type,
whether the second order and its blur run, and the order of the final steps. Every draw comes from the
``torch.Generator`` given to ``__call__`` (none from the global RNG); JPEG is kornia's differentiable
codec (:func:`kornia.enhance.jpeg_codec_differentiable`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InvalidImageError, import_optional
from ..types import Degradation
from .kernels import KERNEL_TYPES, KernelSpec, build_kernel, choice, filter2d, sample_kernel, uniform

__all__ = ["NoiseDraw", "RealESRGANDegradation", "RealESRGANDraw", "ResizeDraw"]

RESIZE_MODES = ("area", "bilinear", "bicubic")
RESIZE_DIRECTIONS = ("up", "down", "keep")


@dataclass(frozen=True)
class ResizeDraw:
    """A random resize: direction (up/down/keep), scale factor and interpolation mode."""

    direction: str
    scale: float
    mode: str


@dataclass(frozen=True)
class NoiseDraw:
    """Noise of one stage: Gaussian (``level`` = sigma in 8-bit units) or Poisson (``level`` = scale), per image."""

    gaussian: bool
    level: Tensor  # (B,)
    gray: Tensor  # (B,) bool


@dataclass(frozen=True)
class RealESRGANDraw:
    """All random parameters of one call, except the noise fields themselves (drawn when applied)."""

    kernel1: tuple[KernelSpec, ...]
    resize1: ResizeDraw
    noise1: NoiseDraw
    jpeg1: Tensor  # (B,) qualities
    second_order: bool
    second_blur: bool
    kernel2: tuple[KernelSpec, ...]
    resize2: ResizeDraw
    noise2: NoiseDraw
    final_sinc: tuple[KernelSpec, ...]  # kind "pulse" when no final sinc filter is applied
    resize_then_jpeg: bool
    final_mode: str
    jpeg2: Tensor  # (B,)


def _range(name: str, value: Sequence[float], low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    if len(value) != 2 or not low <= float(value[0]) <= float(value[1]) <= high:
        raise ConfigError(f"realesrgan degradation: {name} must be [min, max] with {low} <= min <= max <= {high}, got {list(value)}")
    return float(value[0]), float(value[1])


def _prob(name: str, value: float) -> float:
    if not 0 <= float(value) <= 1:
        raise ConfigError(f"realesrgan degradation: {name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _probs(name: str, value: Sequence[float], n: int) -> tuple[float, ...]:
    if len(value) != n or any(float(p) < 0 for p in value) or sum(value) <= 0:
        raise ConfigError(f"realesrgan degradation: {name} must be {n} non-negative weights with a positive sum, got {list(value)}")
    return tuple(float(p) for p in value)


def _kernel_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 5 or value % 2 == 0:
        raise ConfigError(f"realesrgan degradation: {name} must be an odd integer >= 5, got {value!r}")
    return value


class RealESRGANDegradation(Degradation):
    """Real-ESRGAN's second-order degradation HR (B, 3, H, W) -> LR (B, 3, H/scale, W/scale) in 8-bit levels."""

    sinc_prob: float
    sinc_prob2: float
    final_sinc_prob: float
    gaussian_noise_prob: float
    gaussian_noise_prob2: float
    gray_noise_prob: float
    gray_noise_prob2: float
    second_order_prob: float
    second_blur_prob: float
    blur_sigma: tuple[float, float]
    blur_sigma2: tuple[float, float]
    betag_range: tuple[float, float]
    betag_range2: tuple[float, float]
    betap_range: tuple[float, float]
    betap_range2: tuple[float, float]
    resize_range: tuple[float, float]
    resize_range2: tuple[float, float]
    noise_range: tuple[float, float]
    noise_range2: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    poisson_scale_range2: tuple[float, float]
    jpeg_range: tuple[float, float]
    jpeg_range2: tuple[float, float]

    def __init__(
        self,
        scale: int = 4,
        # first-stage kernel (Real-ESRGAN Sec. 3.2)
        blur_kernel_size: int = 21,
        kernel_list: Sequence[str] = KERNEL_TYPES,
        kernel_prob: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        sinc_prob: float = 0.1,
        blur_sigma: Sequence[float] = (0.2, 3.0),
        betag_range: Sequence[float] = (0.5, 4.0),
        betap_range: Sequence[float] = (1.0, 2.0),
        # second-stage kernel
        blur_kernel_size2: int = 15,
        kernel_list2: Sequence[str] = KERNEL_TYPES,
        kernel_prob2: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        sinc_prob2: float = 0.1,
        blur_sigma2: Sequence[float] = (0.2, 1.5),
        betag_range2: Sequence[float] = (0.5, 4.0),
        betap_range2: Sequence[float] = (1.0, 2.0),
        final_sinc_prob: float = 0.8,
        # first stage: resize, noise, JPEG
        resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
        resize_range: Sequence[float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: Sequence[float] = (1.0, 30.0),
        poisson_scale_range: Sequence[float] = (0.05, 3.0),
        gray_noise_prob: float = 0.4,
        jpeg_range: Sequence[float] = (30.0, 95.0),
        # second stage
        second_order_prob: float = 0.5,
        second_blur_prob: float = 0.8,
        resize_prob2: Sequence[float] = (0.3, 0.4, 0.3),
        resize_range2: Sequence[float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: Sequence[float] = (1.0, 25.0),
        poisson_scale_range2: Sequence[float] = (0.05, 2.5),
        gray_noise_prob2: float = 0.4,
        jpeg_range2: Sequence[float] = (30.0, 95.0),
    ):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ConfigError(f"realesrgan degradation: scale must be a positive integer, got {scale!r}")
        self.scale = scale
        self.blur_kernel_size = _kernel_size("blur_kernel_size", blur_kernel_size)
        self.blur_kernel_size2 = _kernel_size("blur_kernel_size2", blur_kernel_size2)
        for name, kinds in (("kernel_list", kernel_list), ("kernel_list2", kernel_list2)):
            unknown = [k for k in kinds if k not in KERNEL_TYPES]
            if unknown or not kinds:
                raise ConfigError(f"realesrgan degradation: {name} has unknown kernel types {unknown}; use {list(KERNEL_TYPES)}")
        self.kernel_list, self.kernel_list2 = tuple(kernel_list), tuple(kernel_list2)
        self.kernel_prob = _probs("kernel_prob", kernel_prob, len(kernel_list))
        self.kernel_prob2 = _probs("kernel_prob2", kernel_prob2, len(kernel_list2))
        for name, value in (("sinc_prob", sinc_prob), ("sinc_prob2", sinc_prob2), ("final_sinc_prob", final_sinc_prob),
                            ("gaussian_noise_prob", gaussian_noise_prob), ("gaussian_noise_prob2", gaussian_noise_prob2),
                            ("gray_noise_prob", gray_noise_prob), ("gray_noise_prob2", gray_noise_prob2),
                            ("second_order_prob", second_order_prob), ("second_blur_prob", second_blur_prob)):
            setattr(self, name, _prob(name, value))
        for name, value, low, high in (
            ("blur_sigma", blur_sigma, 1e-3, math.inf), ("blur_sigma2", blur_sigma2, 1e-3, math.inf),
            ("betag_range", betag_range, 1e-3, math.inf), ("betag_range2", betag_range2, 1e-3, math.inf),
            ("betap_range", betap_range, 1e-3, math.inf), ("betap_range2", betap_range2, 1e-3, math.inf),
            ("resize_range", resize_range, 1e-3, math.inf), ("resize_range2", resize_range2, 1e-3, math.inf),
            ("noise_range", noise_range, 0, math.inf), ("noise_range2", noise_range2, 0, math.inf),
            ("poisson_scale_range", poisson_scale_range, 0, math.inf), ("poisson_scale_range2", poisson_scale_range2, 0, math.inf),
            ("jpeg_range", jpeg_range, 1, 100), ("jpeg_range2", jpeg_range2, 1, 100),
        ):
            setattr(self, name, _range(name, value, low, high))
        self.resize_prob, self.resize_prob2 = _probs("resize_prob", resize_prob, 3), _probs("resize_prob2", resize_prob2, 3)

    # ---------------------------------------------------------------------------------- sampling

    def sample(self, batch: int, generator: torch.Generator) -> RealESRGANDraw:
        """Draw the random parameters of one call on a batch of ``batch`` images."""
        g = generator
        sizes1 = range(3, self.blur_kernel_size, 2)
        sizes2 = range(3, self.blur_kernel_size2, 2)
        kernel1, kernel2, final_sinc = [], [], []
        for _ in range(batch):
            kernel1.append(sample_kernel(
                g, sizes=sizes1, sinc_prob=self.sinc_prob, kernel_list=self.kernel_list, kernel_prob=self.kernel_prob,
                blur_sigma=self.blur_sigma, betag_range=self.betag_range, betap_range=self.betap_range,
            ))
            kernel2.append(sample_kernel(
                g, sizes=sizes2, sinc_prob=self.sinc_prob2, kernel_list=self.kernel_list2, kernel_prob=self.kernel_prob2,
                blur_sigma=self.blur_sigma2, betag_range=self.betag_range2, betap_range=self.betap_range2,
            ))
            if uniform(g, 0, 1) < self.final_sinc_prob:
                size = int(sizes2[choice(g, [1.0] * len(sizes2))])
                final_sinc.append(KernelSpec("sinc", size, cutoff=uniform(g, math.pi / 3, math.pi)))
            else:
                final_sinc.append(KernelSpec("pulse", 1))
        resize1 = self._resize(g, self.resize_prob, self.resize_range)
        noise1 = self._noise(g, batch, self.gaussian_noise_prob, self.noise_range, self.poisson_scale_range, self.gray_noise_prob)
        jpeg1 = self._uniform_batch(g, batch, self.jpeg_range)
        second_order = uniform(g, 0, 1) < self.second_order_prob
        second_blur = uniform(g, 0, 1) < self.second_blur_prob
        resize2 = self._resize(g, self.resize_prob2, self.resize_range2)
        noise2 = self._noise(g, batch, self.gaussian_noise_prob2, self.noise_range2, self.poisson_scale_range2, self.gray_noise_prob2)
        resize_then_jpeg = uniform(g, 0, 1) < 0.5
        final_mode = RESIZE_MODES[choice(g, [1.0] * 3)]
        jpeg2 = self._uniform_batch(g, batch, self.jpeg_range2)
        return RealESRGANDraw(
            tuple(kernel1), resize1, noise1, jpeg1, second_order, second_blur, tuple(kernel2), resize2, noise2,
            tuple(final_sinc), resize_then_jpeg, final_mode, jpeg2,
        )

    @staticmethod
    def _uniform_batch(g: torch.Generator, batch: int, value_range: tuple[float, float]) -> Tensor:
        low, high = value_range
        return (low + (high - low) * torch.rand(batch, generator=g, device=g.device, dtype=torch.float64)).cpu()

    @staticmethod
    def _resize(g: torch.Generator, probs: Sequence[float], value_range: tuple[float, float]) -> ResizeDraw:
        direction = RESIZE_DIRECTIONS[choice(g, probs)]
        scale = 1.0
        if direction == "up":
            scale = uniform(g, 1, value_range[1])
        elif direction == "down":
            scale = uniform(g, value_range[0], 1)
        return ResizeDraw(direction, scale, RESIZE_MODES[choice(g, [1.0] * 3)])

    def _noise(
        self, g: torch.Generator, batch: int, gaussian_prob: float, sigma_range: tuple[float, float],
        poisson_range: tuple[float, float], gray_prob: float,
    ) -> NoiseDraw:
        gaussian = uniform(g, 0, 1) < gaussian_prob
        level = self._uniform_batch(g, batch, sigma_range if gaussian else poisson_range)
        gray = torch.rand(batch, generator=g, device=g.device, dtype=torch.float64).cpu() < gray_prob
        return NoiseDraw(gaussian, level, gray)

    # ---------------------------------------------------------------------------------- applying

    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(hr, Tensor) or hr.dim() != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
            shape = tuple(hr.shape) if isinstance(hr, Tensor) else type(hr).__name__
            raise InvalidImageError(f"realesrgan degradation: hr must be a float tensor (B, 3, H, W) in [0, 1], got {shape}")
        if generator is None:  # fresh randomness without touching the global RNG
            generator = torch.Generator().manual_seed(secrets.randbits(63))
        return self.apply(hr, self.sample(hr.shape[0], generator), generator)

    def apply(self, hr: Tensor, draw: RealESRGANDraw, generator: torch.Generator) -> Tensor:
        """Degrade ``hr`` with the parameters ``draw``; the noise fields are drawn from ``generator``."""
        b, _, h, w = hr.shape
        s = self.scale
        if h % s or w % s:
            raise InvalidImageError(
                f"realesrgan degradation: HR size {h}x{w} is not divisible by scale {s}; crop it first, "
                f"e.g. hr[..., :{h - h % s}, :{w - w % s}] (srkit uses LR = HR / scale exactly)"
            )
        if len(draw.kernel1) != b:
            raise InvalidImageError(f"realesrgan degradation: the draw is for {len(draw.kernel1)} images, hr has {b}")
        if hr.dtype in (torch.float16, torch.bfloat16):  # resampling and JPEG in float32, result cast back
            return self.apply(hr.float(), draw, generator).to(hr.dtype)
        k1 = torch.stack([build_kernel(k, self.blur_kernel_size) for k in draw.kernel1])
        k2 = torch.stack([build_kernel(k, self.blur_kernel_size2) for k in draw.kernel2])
        sinc = torch.stack([build_kernel(k, self.blur_kernel_size2) for k in draw.final_sinc])

        # first order
        out = filter2d(hr, k1)
        out = F.interpolate(out, scale_factor=draw.resize1.scale, mode=draw.resize1.mode)
        out = self._add_noise(out, draw.noise1, generator)
        out = self._jpeg(out, draw.jpeg1)
        # second order
        if draw.second_order:
            if draw.second_blur:
                out = filter2d(out, k2)
            size = (max(1, int(h / s * draw.resize2.scale)), max(1, int(w / s * draw.resize2.scale)))
            out = F.interpolate(out, size=size, mode=draw.resize2.mode)
            out = self._add_noise(out, draw.noise2, generator)
        # [resize back + sinc] and JPEG, in random order
        if draw.resize_then_jpeg:
            out = filter2d(F.interpolate(out, size=(h // s, w // s), mode=draw.final_mode), sinc)
            out = self._jpeg(out, draw.jpeg2)
        else:
            out = self._jpeg(out, draw.jpeg2)
            out = filter2d(F.interpolate(out, size=(h // s, w // s), mode=draw.final_mode), sinc)
        return torch.clamp((out * 255).round(), 0, 255) / 255

    @staticmethod
    def _jpeg(x: Tensor, quality: Tensor) -> Tensor:
        jpeg_codec_differentiable = import_optional(
            "kornia.enhance", extra="train", needed_for="the realesrgan degradation's JPEG compression").jpeg_codec_differentiable

        x = x.clamp(0, 1)  # Real-ESRGAN clamps before JPEG to avoid artifacts
        return jpeg_codec_differentiable(x, quality.to(x.device, x.dtype))

    @staticmethod
    def _add_noise(x: Tensor, draw: NoiseDraw, generator: torch.Generator) -> Tensor:
        """Gaussian or Poisson noise, colour or gray per image; the result is clipped to [0, 1] (BasicSR)."""
        b, c, h, w = x.shape
        gdev = generator.device
        gray = draw.gray.to(x.device, x.dtype).view(b, 1, 1, 1)
        level = draw.level.to(x.device, x.dtype).view(b, 1, 1, 1)
        if draw.gaussian:
            # drawn in float32 whatever x's dtype, so that every dtype sees the same noise
            color = torch.randn((b, c, h, w), generator=generator, device=gdev).to(x)
            mono = torch.randn((b, 1, h, w), generator=generator, device=gdev).to(x)
            noise = (mono * gray + color * (1 - gray)) * level / 255
        else:
            noise = torch.zeros_like(x)
            if not bool(draw.gray.all()):
                noise = noise + RealESRGANDegradation._poisson(x, generator) * (1 - gray)
            if bool(draw.gray.any()):
                luma = 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # torchvision's rgb_to_grayscale
                noise = noise + RealESRGANDegradation._poisson(luma, generator) * gray
            noise = noise * level
        return (x + noise).clamp(0, 1)

    @staticmethod
    def _poisson(x: Tensor, generator: torch.Generator) -> Tensor:
        """Poisson noise at ``2^ceil(log2(#distinct 8-bit levels))`` photons per unit (BasicSR's generate_poisson_noise_pt)."""
        x = torch.clamp((x * 255).round(), 0, 255) / 255
        levels = [len(torch.unique(img)) for img in x]
        vals = torch.tensor([2 ** math.ceil(math.log2(n)) for n in levels], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        rates = (x * vals).to(generator.device, torch.float32)
        counts = torch.poisson(rates, generator=generator).to(x)
        return counts / vals - x

    def __repr__(self) -> str:
        return (f"RealESRGANDegradation(scale={self.scale}, second_order_prob={self.second_order_prob}, "
                f"jpeg_range={list(self.jpeg_range)})")
