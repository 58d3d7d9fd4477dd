"""DM-SR's two trained networks: the timestep estimator T and the timestep-aware encoder E_θ.

* :class:`TimestepEstimator` (App. A.1) -- the first five convolutional blocks of VGG19
  (torchvision's ``vgg19().features`` layout and keys, without the last max-pool, which global
  average pooling makes redundant), global average pooling and a linear layer to
  F_t̂ ∈ R^500; t̂ = Σ softmax(F_t̂)·[0, ..., 499] (Eq. (10), :func:`expected_timestep`).
* :class:`TimestepAwareEncoder` (Sec. 3.2, App. A.1) -- a copy of the SD VAE encoder (and its
  ``quant_conv``) in which t̂ is projected by one linear layer per encoder level to
  ``block_out_channels`` (128/256/512/512 for SD) and added to the output of that level's down
  block. t̂ enters as SD's sinusoidal timestep features; the linear layers are zero-initialised
  (the ControlNet design the paper follows), so before training E_θ is exactly the VAE encoder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, WeightsNotFoundError
from ...weights import SYNTHETIC, load_state_dict, synthetic_tensor

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "NUM_BINS", "VGG19_CHANNELS", "VGG19_FILE", "TimestepAwareEncoder",
    "TimestepEstimator", "expected_timestep",
]

NUM_BINS = 500  # t̂ ∈ [0, 499] (Eq. (10))
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19
VGG19_CHANNELS = (64, 128, 256, 512, 512)
VGG19_CONVS = (2, 2, 4, 4, 4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expected_timestep(logits: Tensor) -> Tensor:
    """Eq. (10): t̂ = sum(softmax(F_t̂) * [0, 1, ..., K - 1]) per sample, a float in [0, K - 1]."""
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    return (logits.softmax(dim=-1) * bins).sum(dim=-1)


class TimestepEstimator(nn.Module):
    """T(I_LR) -> logits F_t̂ (B, 500); :meth:`forward` returns Eq. (10)'s t̂ (B,), a float.

    ``channels`` (VGG19: 64/128/256/512/512) may be reduced for tests; ``backbone_weights`` is
    torchvision's ``vgg19-dcbb9e9d.pth`` (``None``: the torch hub cache), a path, ``"synthetic"``,
    or ``"none"`` (left to a full DM-SR checkpoint loaded afterwards). The head starts at zero (a
    uniform softmax, t̂ = 249.5). Inputs are images in [0, 1], normalised with ImageNet statistics.
    """

    def __init__(self, channels: Sequence[int] = VGG19_CHANNELS, bins: int = NUM_BINS,
                 backbone_weights: str | os.PathLike[str] | None = None):
        super().__init__()
        if len(channels) != len(VGG19_CONVS):
            raise ConfigError(f"the estimator has VGG19's 5 blocks: give 5 channel widths, got {list(channels)}")
        from torchvision.models.vgg import make_layers

        cfg: list[int | str] = []
        for width, convs in zip(channels, VGG19_CONVS, strict=True):
            cfg += [int(width)] * convs + ["M"]
        self.features = make_layers(cfg[:-1])  # torchvision's indices; the last pool is dropped
        self.head = nn.Linear(int(channels[-1]), bins)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load_backbone(backbone_weights)

    def _load_backbone(self, spec: str | os.PathLike[str] | None) -> None:
        expected = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        if spec is not None and str(spec) == "none":
            return
        if spec is not None and str(spec) == SYNTHETIC:
            state = {k: synthetic_tensor(k, v.shape, v.dtype) for k, v in expected.items()}
        else:
            path = Path(spec).expanduser() if spec is not None else Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
            if not path.is_file():
                raise WeightsNotFoundError(
                    f"DM-SR timestep estimator: cannot find torchvision's ImageNet VGG19 ({VGG19_FILE}); looked at {path}. "
                    f"Copy it into {Path(torch.hub.get_dir()) / 'checkpoints'} or pass vgg_weights=<path>"
                )
            state = load_state_dict(path, what="VGG19 backbone")
        wrong = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
        if wrong:
            raise ConfigError(f"VGG19 backbone: {len(wrong)} tensors missing or misshapen ({wrong[:3]}); "
                              f"expected torchvision's {VGG19_FILE} with channels {list(VGG19_CHANNELS)}")
        self.features.load_state_dict({k.removeprefix("features."): state[k] for k in expected})

    def logits(self, image: Tensor) -> Tensor:
        """F_t̂ (B, bins) of images in [0, 1]."""
        h = self.features((image - self.mean.to(image.dtype)) / self.std.to(image.dtype))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    def forward(self, image: Tensor) -> Tensor:
        return expected_timestep(self.logits(image))


class TimestepAwareEncoder(nn.Module):
    """E_θ(I_LR, t̂) -> X_SR^t̂: the SD VAE encoder with t̂ injected at every level (module docstring).

    ``vae`` is diffusers' ``AutoencoderKL`` whose encoder initialises E_θ (it is copied, never
    shared). Inputs are images in [-1, 1]; the output is the posterior mean times ``scaling_factor``
    (the latent space of the diffusion model).
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        from diffusers.models.embeddings import Timesteps

        self.encoder = copy.deepcopy(vae.encoder)
        self.quant_conv = copy.deepcopy(vae.quant_conv)
        self.latent_channels = int(vae.config.latent_channels)
        self.scaling_factor = float(vae.config.scaling_factor)
        widths = [int(c) for c in vae.config.block_out_channels]
        self.time_features = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_proj = nn.ModuleList(nn.Linear(widths[0], c) for c in widths)
        for layer in self.time_proj:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, image: Tensor, t: Tensor) -> Tensor:
        enc = self.encoder
        features = self.time_features(t.flatten()).to(image.dtype)
        h = enc.conv_in(image)
        for block, proj in zip(enc.down_blocks, self.time_proj, strict=True):
            h = block(h) + proj(features)[:, :, None, None]
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h[:, : self.latent_channels] * self.scaling_factor  # the posterior mean (mode)
