"""CCSR v2: SD 2.1-base + an LR-conditioned ControlNet, non-uniform timesteps, a fine-tuned decoder."""

from __future__ import annotations

from ...registry import lazy_exports
from ...releases import STABLE_DIFFUSION_PIPELINE
from ...types import MethodDescriptor, WeightFile

DESCRIPTOR = MethodDescriptor(
    **STABLE_DIFFUSION_PIPELINE,
    name="ccsr",
    title="CCSR v2",
    paper="Sun et al., 'Improving the Stability and Efficiency of Diffusion Models for Content Consistent "
    "Super-Resolution', arXiv 2401.00877",
    steps=(1, 2, 3, 4, 5, 6),
    default_steps=2,
    size_multiple=8,
    weights=(
        WeightFile("sd21_base", "stabilityai/stable-diffusion-2-1-base",
                   source="https://huggingface.co/stabilityai/stable-diffusion-2-1-base", licence="CreativeML Open RAIL++-M"),
        # a folder in diffusers layout: controlnet/ and the stage-2 fine-tuned vae/ (diffusion_pytorch_model.safetensors)
        WeightFile("release", "ccsr_v2", source="the CCSR v2 release (Google Drive / Baidu, see the CCSR README)", folder=True),
    ),
    licence="CreativeML Open RAIL++-M (SD 2.1); CCSR weights as released by the authors",
    summary="SD 2.1-base + LR-conditioned ControlNet, non-uniform timesteps (T, t_max, t_min): one jump then a few "
    "steps; GAN-fine-tuned decoder.",
)

TARGET = "srkit.methods.ccsr.method:CCSR"
__getattr__ = lazy_exports(__name__, {"CCSR": "method"})
