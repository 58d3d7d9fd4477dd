"""Posterior-guided ResShift: plug-in image-quality control by posterior guidance (shared/papers/pg-resshift.md)."""

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
    name="pg-resshift",
    title="Posterior-guided ResShift (plug-in image-quality control)",
    paper="Plug-in image quality control for diffusion SR by posterior guidance (shared/papers/pg-resshift.md)",
    steps=(4, 15),
    default_steps=4,
    weights=(RESSHIFT_V3_DENOISER, RESSHIFT_V2_S15_DENOISER, RESSHIFT_V1_S15_DENOISER, RESSHIFT_AUTOENCODER),
    summary="ResShift with a mean correction mu + alpha Sigma grad KL from a guide image: HR (fidelity) or LR (perception); "
    "alpha calibrated on LR-HR pairs.",
)

TARGET = "srkit.methods.pg_resshift.method:PosteriorGuidedResShift"
__getattr__ = lazy_exports(__name__, {
    "PosteriorGuidedResShift": "method",
    **dict.fromkeys(["DEFAULT_CANDIDATES", "algorithm1_terms", "calibrate", "choose_scales", "eq10_sums", "run_calibration"],
                    "calibration"),
    **dict.fromkeys(["GRADIENTS", "MODES", "GuidanceScales", "PosteriorGuidance", "PosteriorGuidanceStep",
                     "guidance_direction", "kl_direction", "kl_gradient", "read_scales"], "guidance"),
})
