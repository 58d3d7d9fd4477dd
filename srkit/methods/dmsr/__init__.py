"""DM-SR (ICLR 2026): map the LR image into the noisy-latent distribution of a frozen SD-Turbo."""

from __future__ import annotations

from ...registry import lazy_exports
from ...releases import SD_TURBO, STABLE_DIFFUSION_PIPELINE
from ...types import MethodDescriptor, WeightFile

DESCRIPTOR = MethodDescriptor(
    **STABLE_DIFFUSION_PIPELINE,
    name="dmsr",
    title="DM-SR",
    paper="Bridging the Distribution Gap to Harness Pretrained Diffusion Priors for Super-Resolution, ICLR 2026",
    steps=(1, 2, 3, 4, 5, 10, 20),  # Table 4 runs 10 and 20
    default_steps=1,
    size_multiple=8,
    weights=(
        SD_TURBO,
        WeightFile("dmsr", "dmsr_sdturbo.safetensors",  # estimator.* and encoder.* tensors
                   source="a file written by srkit's DMSR.save_weights after `srkit train method=dmsr` (no official weights exist)"),
    ),
    licence="Stability AI Non-Commercial Research Community License (SD-Turbo); no official DM-SR weights exist",
    summary="Timestep estimator t(LR) + timestep-aware VAE encoder map the LR to a noisy SD-Turbo latent; "
    "one denoising step (DDIM reuse for more).",
)

TARGET = "srkit.methods.dmsr.method:DMSR"
__getattr__ = lazy_exports(__name__, {"DMSR": "method"})
