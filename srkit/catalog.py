"""The built-in plugins, as data: names and import paths (no model code is imported here)."""

from __future__ import annotations

import importlib

from .registry import REGISTRIES

# Each built-in method is one folder srkit/methods/<package>/ whose __init__ holds its DESCRIPTOR and TARGET.
BUILT_IN_METHODS = ("bicubic", "realesrgan", "resshift", "pg_resshift", "lpnsr", "invsr", "dmsr", "ccsr")

for _kind, _name, _target, _descriptor in [
    ("sampler", "residual_shift", "srkit.samplers.residual_shift:ResidualShiftSampler", None),
    ("sampler", "ddpm", "srkit.samplers.ddpm:DDPMSampler", None),
    ("sampler", "ddim", "srkit.samplers.ddpm:DDPMSampler", None),  # conf/sampler/ddim.yaml: eta 0
    ("sampler", "renoise", "srkit.samplers.ddpm:DDPMSampler", None),  # conf/sampler/renoise.yaml: renoise true
    ("sampler", "nonuniform", "srkit.samplers.nonuniform:NonUniformSampler", None),
    ("backend", "resshift_unet_v3", "srkit.backends.swin_unet:UNetModelSwin", None),
    ("backend", "lpnsr_noise_predictor", "srkit.backends.swin_unet:SwinUNetNoisePredictor", None),
    ("backend", "vq_f4", "srkit.backends.vq:VQModelTorch", None),
    ("backend", "invsr_noise_predictor", "srkit.methods.invsr.noise_predictor:InvSRNoisePredictor", None),
    ("backend", "sd_turbo", "srkit.backends.sd:StableDiffusion", None),
    ("backend", "sd21_base", "srkit.backends.sd:StableDiffusion", None),
    ("degradation", "bicubic", "srkit.degradations.bicubic:BicubicDownsample", None),
    ("degradation", "realesrgan", "srkit.degradations.realesrgan:RealESRGANDegradation", None),
    # ResShift's test-time values of the same pipeline (conf/degradation/resshift_test.yaml).
    ("degradation", "resshift_test", "srkit.degradations.realesrgan:RealESRGANDegradation", None),
]:
    REGISTRIES[_kind].register(_name, _target, descriptor=_descriptor)

for _package in BUILT_IN_METHODS:
    _method = importlib.import_module(f"srkit.methods.{_package}")
    REGISTRIES["method"].register(_method.DESCRIPTOR.name, _method.TARGET, descriptor=_method.DESCRIPTOR)
