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
        # configs/inference.yaml's file; the LPNSR README says the paper's numbers come from noise_predictor.pth
        WeightFile("noise_predictor", "noise_predictor_v2.pth",
                   source="https://huggingface.co/mirpri/LPNSR (or the Faze-Hsw/LPNSR GitHub release)"),
        WeightFile("noise_predictor-v1", "noise_predictor.pth",  # predictor_version="v1": the paper's tables
                   source="https://huggingface.co/mirpri/LPNSR (or the Faze-Hsw/LPNSR GitHub release)"),
        # the pre-upsamplers of Table 6 (PreSet-B), by name; swinir-gan is LPNSR's default
        WeightFile("pre_upsampler/swinir-gan", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
                   source="https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                   "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", licence="Apache-2.0"),
        WeightFile("pre_upsampler/bsrgan", "BSRGAN.pth", source="https://github.com/cszn/KAIR/releases/download/v1.0/BSRGAN.pth",
                   licence="Apache-2.0"),
        WeightFile("pre_upsampler/realesrgan", "RealESRGAN_x4plus.pth",
                   source="https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                   licence="BSD-3-Clause"),
    ),
    trainable=True,
    summary="Frozen ResShift denoiser with a learned intermediate-noise predictor g_w(x_t, x0, y, t); 1-4 steps; "
    "PreSet-A (bicubic y) or PreSet-B (regression pre-upsampler).",
)

TARGET = "srkit.methods.lpnsr.method:LPNSR"
__getattr__ = lazy_exports(__name__, {"LPNSR": "method"})
