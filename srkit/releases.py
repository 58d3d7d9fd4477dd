"""What several methods' descriptors share, as data: official release files (timm's pretrained configs in
spirit) and the residual-shift pipeline's properties, so that one file name, one source and one size multiple
live in one place. Read by ``srkit/methods/<name>/__init__.py`` without importing any model code.
"""

from __future__ import annotations

from .types import WeightFile

__all__ = [
    "RESIDUAL_SHIFT_PIPELINE",
    "RESSHIFT_AUTOENCODER",
    "RESSHIFT_V1_S15_DENOISER",
    "RESSHIFT_V2_S15_DENOISER",
    "RESSHIFT_V3_DENOISER",
    "SD_TURBO",
    "STABLE_DIFFUSION_PIPELINE",
    "S_LAB_LICENCE",
]

S_LAB_LICENCE = "S-Lab License 1.0 (non-commercial), as the authors' InvSR"
_RESSHIFT_RELEASE = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"
RESSHIFT_V3_DENOISER = WeightFile("denoiser", "resshift_realsrx4_s4_v3.pth", source=_RESSHIFT_RELEASE + "resshift_realsrx4_s4_v3.pth",
                                  licence=S_LAB_LICENCE)
RESSHIFT_V2_S15_DENOISER = WeightFile("denoiser-s15", "resshift_realsrx4_s15_v2.pth",
                                      source=_RESSHIFT_RELEASE + "resshift_realsrx4_s15_v2.pth", licence=S_LAB_LICENCE)
RESSHIFT_V1_S15_DENOISER = WeightFile("denoiser-s15-v1", "resshift_realsrx4_s15_v1.pth",  # 300k iterations; v2: 500k
                                      source=_RESSHIFT_RELEASE + "resshift_realsrx4_s15_v1.pth", licence=S_LAB_LICENCE)
RESSHIFT_AUTOENCODER = WeightFile("autoencoder", "autoencoder_vq_f4.pth", source=_RESSHIFT_RELEASE + "autoencoder_vq_f4.pth",
                                  licence=S_LAB_LICENCE)
SD_TURBO = WeightFile("sd_turbo", "stabilityai/sd-turbo", source="https://huggingface.co/stabilityai/sd-turbo",
                      licence="Stability AI Non-Commercial Research Community License")

# srkit.pipelines.residual_shift: x4 in the VQ-f4 latent, y_0 in [-1, 1] padded to the Swin-UNet's lq_size 64.
RESIDUAL_SHIFT_PIPELINE = {
    "scale": 4, "dtypes": ("float32", "float64"), "tiling": "supported", "size_multiple": 64, "value_range": (-1.0, 1.0),
    "licence": S_LAB_LICENCE,
}

# The Stable Diffusion methods (InvSR, DM-SR, CCSR): x4 through the f8 SD VAE, half precision supported.
STABLE_DIFFUSION_PIPELINE = {"scale": 4, "dtypes": ("float32", "float16", "bfloat16"), "tiling": "supported", "trainable": True}
