"""InvSR (CVPR 2025): arbitrary-step SR by inverting SD-Turbo with a learned start-noise predictor."""

from __future__ import annotations

from ...registry import lazy_exports
from ...releases import S_LAB_LICENCE, SD_TURBO, STABLE_DIFFUSION_PIPELINE
from ...types import MethodDescriptor, WeightFile

DESCRIPTOR = MethodDescriptor(
    **STABLE_DIFFUSION_PIPELINE,
    name="invsr",
    title="InvSR",
    paper="Yue et al., 'Arbitrary-steps Image Super-resolution via Diffusion Inversion', CVPR 2025",
    steps=(1, 2, 3, 4, 5),
    default_steps=1,
    size_multiple=16,
    weights=(
        SD_TURBO,
        WeightFile("noise_predictor", "noise_predictor_sd_turbo_v5.pth", hub_id="OAOA/InvSR",
                   source="https://huggingface.co/OAOA/InvSR/resolve/main/noise_predictor_sd_turbo_v5.pth", licence=S_LAB_LICENCE),
    ),
    licence=S_LAB_LICENCE,
    summary="Frozen SD-Turbo; a noise predictor f_w(LR, t) gives the start state of a partial reverse chain, 1-5 steps.",
)

TARGET = "srkit.methods.invsr.method:InvSR"
__getattr__ = lazy_exports(__name__, {"InvSR": "method"})
