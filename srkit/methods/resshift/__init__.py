"""ResShift (Yue et al., NeurIPS 2023 / TPAMI 2024): x4 SR by residual shifting in the VQ-f4 latent."""

from __future__ import annotations

from ...registry import lazy_exports
from ...releases import (
    RESIDUAL_SHIFT_PIPELINE,
    RESSHIFT_AUTOENCODER,
    RESSHIFT_V1_S15_DENOISER,
    RESSHIFT_V2_S15_DENOISER,
    RESSHIFT_V3_DENOISER,
)
from ...types import MethodDescriptor

DESCRIPTOR = MethodDescriptor(
    **RESIDUAL_SHIFT_PIPELINE,
    name="resshift",
    title="ResShift",
    paper="Yue et al., 'ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting', "
    "NeurIPS 2023 / TPAMI 2024",
    steps=(4, 15),
    default_steps=4,
    weights=(RESSHIFT_V3_DENOISER, RESSHIFT_V2_S15_DENOISER, RESSHIFT_V1_S15_DENOISER, RESSHIFT_AUTOENCODER),
    summary="Residual-shifting diffusion in the VQ-f4 latent, Swin-UNet x0-denoiser; 4 steps (v3) or 15 (v1/v2).",
)

TARGET = "srkit.methods.resshift.method:ResShift"
__getattr__ = lazy_exports(__name__, {"ResShift": "method"})
