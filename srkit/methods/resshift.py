"""ResShift (Yue et al., NeurIPS 2023 / TPAMI 2024): x4 SR by residual shifting in the VQ-f4 latent.

The official inference path (``sampler.py: ResShiftSampler``, shared/reference/README.md sec. 7.1):
LR in [0, 1] -> y_0 = (lr - 0.5) / 0.5, reflect-padded (bottom, right) to the Swin-UNet's multiple
(both done by :meth:`SRMethod.sr`: ``value_range`` (-1, 1), ``size_multiple`` 64) ->
z_y = encode(bicubic_x4(y_0)) (``F.interpolate``, not quantised) -> the residual-shifting chain
(:class:`srkit.samplers.residual_shift.ResidualShiftSampler`) with the denoiser conditioned on y_0
-> decode (quantised) -> clamp to [-1, 1] -> [0, 1] -> crop the padding.

Tiling differs from the official ``ImageSpliterTh`` on purpose: overlapping tiles are blended
smoothly by :func:`srkit.tiling.tiled_apply` instead of averaged uniformly; like the official code,
every tile draws its own noise (from the one seeded generator, in tile order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backends.swin_unet import UNetModelSwin
from ..backends.vq import VQModelTorch
from ..catalog import RESSHIFT
from ..errors import ConfigError, UnsupportedError
from ..registry import backend_config
from ..samplers.residual_shift import ResidualShiftSampler
from ..types import SRMethod

__all__ = ["CHECKPOINTS", "RESSHIFT", "Condition", "ResShift"]

# Denoiser file and schedule of each released x4 real-SR checkpoint, by schedule length T.
CHECKPOINTS: dict[int, tuple[str, dict[str, float]]] = {
    4: ("resshift_realsrx4_s4_v3.pth", {"min_noise_level": 0.2}),  # v3, journal config
    15: ("resshift_realsrx4_s15_v2.pth", {"min_noise_level": 0.04}),  # v2 (v1: pass its file as weights)
}
AUTOENCODER = "autoencoder_vq_f4.pth"


@dataclass(frozen=True)
class Condition:
    """What the residual-shifting chain is conditioned on for one LR batch."""

    y0: Tensor  # LR in [-1, 1], padded to the denoiser's multiple (the Swin-UNet's ``lq``)
    z_y: Tensor  # latent of the bicubic x4 upsampling of y0: the chain's y (prior mean)


class ResShift(SRMethod):
    """ResShift x4 real-world SR with the official Swin-UNet denoiser and VQ-f4 autoencoder.

    ``steps`` is the schedule length T of the checkpoint: 4 (v3, ``resshift_realsrx4_s4_v3.pth``)
    or 15 (v1/v2, ``resshift_realsrx4_s15_v{1,2}.pth``, min noise level 0.04); ``sr()`` runs that many.
    ``weights``: ``None`` (the official denoiser file and ``autoencoder_vq_f4.pth``, found by
    :func:`srkit.weights.resolve` in ``$SRKIT_HOME/weights`` or ``./weights``), a folder holding
    both, or ``"synthetic"`` (srkit-synthetic-v1 weights, for tests and timing). ``dtype`` is the
    precision the networks are built in (synthetic weights are evaluated in it; ``srkit.load(dtype=)``
    converts the built model instead). ``unet_config`` / ``autoencoder_config`` override keys of
    ``conf/backend/resshift_unet_v3.yaml`` / ``vq_f4.yaml`` (for retrained or smaller networks).
    """

    descriptor = RESSHIFT  # catalog data: listing methods must not import this module

    def __init__(
        self,
        steps: int = 4,
        weights: str | None = None,
        dtype: torch.dtype = torch.float32,
        unet_config: Mapping[str, Any] | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
    ):
        super().__init__(scale=4)
        if steps not in CHECKPOINTS:
            raise UnsupportedError(f"resshift checkpoints exist for steps in {sorted(CHECKPOINTS)}, got steps={steps}")
        from ..weights import resolve

        denoiser_file, schedule = CHECKPOINTS[steps]
        unet_weights = resolve(weights, filename=denoiser_file, what="resshift denoiser")
        vq_weights = resolve(weights, filename=AUTOENCODER, what="resshift autoencoder")
        self.sampler = ResidualShiftSampler(steps=steps, **schedule)
        self.unet: UNetModelSwin = UNetModelSwin.from_pretrained(
            unet_weights, dtype=dtype, **{**backend_config("resshift_unet_v3"), **(unet_config or {})}
        )
        self.autoencoder: VQModelTorch = VQModelTorch.from_pretrained(
            vq_weights, dtype=dtype, **{**backend_config("vq_f4"), **(autoencoder_config or {})}
        )
        if self.autoencoder.downscale != self.scale:
            raise ConfigError(
                f"resshift feeds the LR image to the denoiser at latent size, so the autoencoder must downscale by "
                f"{self.scale}; autoencoder_config gives {self.autoencoder.downscale} (use ch_mult of length 3)"
            )
        self.requires_grad_(False)

    def _check_steps(self, steps: int | None) -> int:
        if steps is not None and steps != self.sampler.num_steps:
            raise UnsupportedError(
                f"this resshift model was trained for {self.sampler.num_steps} steps, got steps={steps}; "
                f"build it with srkit.load('resshift', steps={steps}) and that schedule's checkpoint"
            )
        return self.sampler.num_steps

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        if knobs:
            raise UnsupportedError(f"resshift has no options {sorted(knobs)}; it takes steps= and seed=")
        condition = self.condition(lr)
        z_0 = self.sampler.sample(self.denoiser(condition), condition.z_y, steps=steps, generator=generator)
        return self.decode(z_0)

    def condition(self, y0: Tensor) -> Condition:
        """The chain's condition for y_0 (the LR in [-1, 1], padded to :attr:`size_multiple`): y_0 and its latent
        z_y (encoder of the bicubic x4 upsampling, not quantised), as the official sampler computes them."""
        return Condition(y0, self.encode_upsampled(y0))

    @property
    def size_multiple(self) -> int:
        """The side multiple y_0 is padded to (official: lq_size = 64; a retrained Swin-UNet may need more)."""
        return math.lcm(self.descriptor.size_multiple, self.unet.size_multiple)

    def encode_upsampled(self, image: Tensor) -> Tensor:
        """z of the bicubic x4 upsampling of ``image`` in [-1, 1] (``F.interpolate``, as officially)."""
        return self.autoencoder.encode(F.interpolate(image, scale_factor=self.scale, mode="bicubic"))

    def denoiser(self, condition: Condition) -> Callable[[Tensor, int], Tensor]:
        """``(x_t, t) -> x0`` prediction of the Swin-UNet conditioned on y_0 (input scaled by the sampler)."""
        t_batch = torch.empty(condition.y0.shape[0], dtype=torch.long, device=condition.y0.device)

        def denoise(x_t: Tensor, t: int) -> Tensor:
            return self.unet(self.sampler.scale_input(x_t, t), t_batch.fill_(t), lq=condition.y0)

        return denoise

    def decode(self, z_0: Tensor) -> Tensor:
        """Decode (quantised) and clamp to [-1, 1], as the official sampler does."""
        return self.decode_latents(self.autoencoder, z_0).clamp(-1, 1)
