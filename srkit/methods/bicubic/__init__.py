"""Bicubic upsampling (MATLAB ``imresize``), the reference baseline of every SR paper."""

from __future__ import annotations

from ...registry import lazy_exports
from ...types import MethodDescriptor

DESCRIPTOR = MethodDescriptor(
    name="bicubic",
    title="Bicubic interpolation (MATLAB imresize)",
    paper="Keys, 'Cubic convolution interpolation for digital image processing', IEEE TASSP 1981",
    scale=4,
    dtypes=("float32", "float64", "float16", "bfloat16"),
    summary="The reference upsampler of every paper's pipeline: MATLAB-compatible bicubic, a = -0.5.",
)

TARGET = "srkit.methods.bicubic.method:Bicubic"
__getattr__ = lazy_exports(__name__, {"Bicubic": "method"})
