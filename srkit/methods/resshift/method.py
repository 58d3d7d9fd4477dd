"""ResShift (Yue et al., NeurIPS 2023 / TPAMI 2024): x4 SR by residual shifting in the VQ-f4 latent.

The pipeline is :class:`srkit.pipelines.residual_shift.ResidualShiftMethod` (which picks the released checkpoint
and its schedule by ``steps``) with no hook.

Tiling differs from the official ``ImageSpliterTh`` on purpose: overlapping tiles are blended
smoothly by :func:`srkit.tiling.tiled_apply` instead of averaged uniformly; like the official code,
every tile draws its own noise (from the one seeded generator, in tile order).
"""

from __future__ import annotations

from ...errors import UnsupportedError
from ...pipelines.residual_shift import ResidualShiftMethod
from . import DESCRIPTOR

__all__ = ["ResShift"]

class ResShift(ResidualShiftMethod):
    """ResShift x4 real-world SR with the official Swin-UNet denoiser and VQ-f4 autoencoder: the residual-shift
    pipeline with no hook by default (``noise`` / ``mean_correction`` by config, e.g. PG-ResShift's guidance);
    ``sr()`` runs the checkpoint's T steps."""

    descriptor = DESCRIPTOR

    def _check_steps(self, steps: int | None) -> int | None:
        if steps is not None and steps != self.sampler.num_steps:
            raise UnsupportedError(
                f"this resshift model was trained for {self.sampler.num_steps} steps, got steps={steps}; "
                f"build it with srkit.load('resshift', steps={steps}) and that schedule's checkpoint"
            )
        return steps
