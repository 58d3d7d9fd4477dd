"""LPNSR (Huang et al.): ResShift's frozen chain with a learned intermediate noise (shared/papers/lpnsr.md)."""

from __future__ import annotations

from ...registry import lazy_exports
from ...releases import RESIDUAL_SHIFT_PIPELINE, RESSHIFT_AUTOENCODER, RESSHIFT_V3_DENOISER
from ...types import MethodDescriptor, WeightFile

DESCRIPTOR = MethodDescriptor(
    **RESIDUAL_SHIFT_PIPELINE,
    name="lpnsr",
    title="LPNSR",
    paper="Huang, Liu, Wei, 'LPNSR: Prior-Enhanced Diffusion Image Super-Resolution via LR-Guided Noise Prediction', "
    "arXiv 2603.21045",
    steps=(1, 2, 3, 4),
    default_steps=4,
    weights=(
        RESSHIFT_V3_DENOISER,
        RESSHIFT_AUTOENCODER,
        WeightFile("noise_predictor", "noise_predictor_v2.pth",
                   source="https://huggingface.co/mirpri/LPNSR (or the Faze-Hsw/LPNSR GitHub release)"),
        WeightFile("pre_upsampler", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
                   source="https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                   "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", licence="Apache-2.0"),
    ),
    trainable=True,
    summary="Frozen ResShift denoiser with a learned intermediate-noise predictor g_w(x_t, x0, y, t); 1-4 steps; "
    "PreSet-A (bicubic y) or PreSet-B (regression pre-upsampler).",
)

TARGET = "srkit.methods.lpnsr.method:LPNSR"
__getattr__ = lazy_exports(__name__, {"LPNSR": "method"})
