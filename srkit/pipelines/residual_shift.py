"""The residual-shifting pipeline that ResShift, LPNSR and posterior-guided ResShift compose: the VQ-f4
autoencoder, the Swin-UNet x0-denoiser and :class:`~srkit.samplers.residual_shift.ResidualShiftSampler`.

The official inference path (ResShift's ``sampler.py: ResShiftSampler``, shared/reference/README.md sec. 7.1):
LR in [0, 1] -> y_0 = (lr - 0.5) / 0.5, reflect-padded (bottom, right) to the Swin-UNet's multiple (both done
by :meth:`SRMethod.sr`: ``value_range`` (-1, 1), :attr:`~ResidualShiftMethod.size_multiple`) ->
z_y = encode(bicubic_x4(y_0)) (``F.interpolate``, not quantised) -> the residual-shifting chain with the
denoiser conditioned on y_0 -> decode (quantised) -> clamp to [-1, 1] (-> [0, 1] and the crop, by ``sr()``).

What the methods add are hooks (:mod:`srkit.diffusion`): LPNSR's predicted noise, PG-ResShift's guidance; any
residual-shift method takes any of them by config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..backends.swin_unet import UNetModelSwin
from ..backends.vq import VQModelTorch
from ..diffusion import Chain, DiffusionMethod, MeanCorrectionHook, NoiseHook
from ..errors import ConfigError, UnsupportedError
from ..ops.resize import bicubic_upsample
from ..registry import backend_config
from ..samplers.residual_shift import ResidualShiftSampler
from ..tiling import pad_to_multiple
from ..types import Denoiser, MethodDescriptor
from ..weights import resolve_weights_together

__all__ = ["DEFAULT_VERSIONS", "RELEASES", "ResidualShiftMethod", "released_chain"]

# Each released x4 real-SR denoiser: its weight-file role in the method's descriptor, schedule length T and schedule.
RELEASES: dict[str, tuple[str, int, dict[str, float]]] = {
    "v3": ("denoiser", 4, {"min_noise_level": 0.2}),  # journal config
    "v2": ("denoiser-s15", 15, {"min_noise_level": 0.04}),
    "v1": ("denoiser-s15-v1", 15, {"min_noise_level": 0.04}),  # the official inference script's --version default
}
DEFAULT_VERSIONS = {4: "v3", 15: "v2"}  # the release a schedule length picks when no version is given


def released_chain(descriptor: MethodDescriptor, steps: int | None, weights: str | None,
                   companions: Mapping[str, str | None] | None = None, version: str | None = None) -> dict[str, Any]:
    """The denoiser and autoencoder weights and the sampler of the release ``version`` (default: the one of T =
    ``steps``, 4 -> v3, 15 -> v2; neither: v3), and the paths of the method's ``companions`` (its other weight files,
    role -> spec), all resolved together so that a missing or single file is reported for every role at once
    (:func:`~srkit.weights.resolve_weights_together`)."""
    if version is None:
        if steps is not None and steps not in DEFAULT_VERSIONS:
            raise UnsupportedError(f"{descriptor.name} checkpoints exist for steps in {sorted(DEFAULT_VERSIONS)}, got steps={steps}")
        version = DEFAULT_VERSIONS[4 if steps is None else steps]
    if version not in RELEASES:
        raise UnsupportedError(f"{descriptor.name} releases are {', '.join(sorted(RELEASES))}, got version={version!r}")
    denoiser, length, schedule = RELEASES[version]
    if steps is not None and steps != length:
        raise ConfigError(f"{descriptor.name} {version} was trained for T = {length} steps, got steps={steps}; "
                          f"pass steps={length} or leave steps unset")
    steps = length
    paths = resolve_weights_together(descriptor, {denoiser: weights, "autoencoder": weights, **(companions or {})})
    return {
        "unet_weights": paths.pop(denoiser),
        "autoencoder_weights": paths.pop("autoencoder"),
        "companion_weights": paths,
        "sampler": ResidualShiftSampler(steps=steps, **schedule),
    }


class ResidualShiftMethod(DiffusionMethod):
    """x4 SR on the residual-shifting chain (see the module docstring).

    ``steps`` is the schedule length T of the released checkpoint (:data:`RELEASES`): 4 (v3,
    ``resshift_realsrx4_s4_v3.pth``) or 15 (v2 ``resshift_realsrx4_s15_v2.pth``, min noise level 0.04); ``version``
    picks a release by name instead ("v1": ``resshift_realsrx4_s15_v1.pth``, also 15 steps).
    ``weights``: ``None`` (the official denoiser file and ``autoencoder_vq_f4.pth``, found by
    :func:`srkit.weights.resolve` in ``$SRKIT_HOME/weights`` or ``./weights``), a folder holding both, or
    ``"synthetic"`` (srkit-synthetic-v1 weights, for tests and timing). ``noise`` / ``mean_correction``: hooks by
    config (LPNSR's predicted noise, PG-ResShift's guidance). ``dtype`` is the precision the networks are built in
    (synthetic weights are evaluated in it; ``srkit.load(dtype=)`` converts the built model instead).
    ``unet_config`` / ``autoencoder_config`` override keys of ``conf/backend/resshift_unet_v3.yaml`` / ``vq_f4.yaml``
    (for retrained or smaller networks). ``companion_weights``: a subclass's other weight files (role -> spec, e.g.
    LPNSR's noise predictor), resolved with the chain's into :attr:`companion_weights` (role -> path).
    """

    sampler_type = ResidualShiftSampler
    compiled_networks = ("unet",)

    def __init__(
        self,
        steps: int | None = None,
        weights: str | None = None,
        dtype: torch.dtype = torch.float32,
        unet_config: Mapping[str, Any] | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
        color_fix: str | None = None,
        companion_weights: Mapping[str, str | None] | None = None,
        version: str | None = None,
    ):
        release = released_chain(self.descriptor, steps, weights, companion_weights, version)
        super().__init__(4, sampler=release["sampler"], noise=noise, mean_correction=mean_correction, color_fix=color_fix)
        unet_weights, autoencoder_weights = release["unet_weights"], release["autoencoder_weights"]
        self.companion_weights: dict[str, Any] = release["companion_weights"]
        self.unet: UNetModelSwin = UNetModelSwin.from_pretrained(
            unet_weights, dtype=dtype, **backend_config("resshift_unet_v3", unet_config)
        )
        self.autoencoder: VQModelTorch = VQModelTorch.from_pretrained(
            autoencoder_weights, dtype=dtype, **backend_config("vq_f4", autoencoder_config)
        )
        if self.autoencoder.downscale != self.scale:
            raise ConfigError(
                f"{self.descriptor.name} feeds the LR image to the denoiser at latent size, so the autoencoder must "
                f"downscale by {self.scale}; autoencoder_config gives {self.autoencoder.downscale} (use ch_mult of length 3)"
            )
        self.requires_grad_(False)

    def learned_modules(self) -> dict[str, nn.Module]:
        """The Swin-UNet denoiser: what the papers count (ResShift's 118.59 M); the VQ-f4 autoencoder is LDM's, frozen."""
        return {"unet": self.unet}

    @property
    def size_multiple(self) -> int:
        """The side multiple y_0 is padded to: the official samplers' ``padding_offset`` is the denoiser's ``lq_size``
        (64 for the released models; a smaller retrained one pads less), and the Swin windows may need more."""
        return math.lcm(self.unet.lq_size, self.unet.size_multiple)

    def condition(self, lr: Tensor, generator: torch.Generator | None, **knobs: Any) -> Chain:
        """The chain for y_0 = ``lr`` (in [-1, 1], padded): ``chain.lr`` is the Swin-UNet's ``lq``, ``chain.y`` = z_y,
        the encoder of the bicubic x4 upsampling (not quantised), as the official sampler computes them."""
        return Chain(lr, self.encode_upsampled(lr), generator)

    def encode_upsampled(self, image: Tensor) -> Tensor:
        """z of the bicubic x4 upsampling of ``image`` in [-1, 1] (``F.interpolate``, as officially)."""
        return self.autoencoder.encode(bicubic_upsample(image, self.scale))

    def encode_guide(self, image: Tensor, *, hr: bool) -> Tensor:
        """The latent of a guide image in [0, 1], padded as y_0 is: an HR (``hr``, output size) is encoded as is, an
        LR-size image as the chain's y (bicubic x4, then the encoder), so that the LR itself gives exactly z_y."""
        if hr:
            return self.autoencoder.encode(pad_to_multiple(self.to_model_range(image), self.scale * self.size_multiple))
        return self.encode_upsampled(self.prepare(image))

    def denoiser(self, chain: Chain) -> Denoiser:
        """``(x_t, t) -> x0`` prediction of the Swin-UNet conditioned on y_0 (input scaled by the sampler)."""
        t_batch = torch.empty(chain.lr.shape[0], dtype=torch.long, device=chain.lr.device)

        def denoise(x_t: Tensor, t: int) -> Tensor:
            return self.unet(self.sampler.scale_input(x_t, t), t_batch.fill_(t), lq=chain.lr)

        return denoise

    def decode(self, z_0: Tensor, chain: Chain) -> Tensor:
        """Decode (quantised) and clamp to [-1, 1], as the official sampler does."""
        return self.decode_latents(self.autoencoder, z_0).clamp(-1, 1)
