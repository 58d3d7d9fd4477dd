"""LPIPS (Zhang et al. 2018) in pixel space and in the latent space of Stable Diffusion.

LPIPS(x, y) = sum_l mean_hw( w_l · (f̂_l(x) - f̂_l(y))^2 ), with f̂_l the channel-normalised
activations of layer l of a frozen backbone and w_l learned non-negative 1x1 weights.

* :class:`PixelLPIPS` -- the ``lpips`` package (``pip install 'srkit[metrics]'``) with its shipped
  v0.1 linear weights; the VGG16/AlexNet backbone is torchvision's ImageNet file, read from the
  torch hub cache (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) or a given path, never
  downloaded. Inputs are images in [0, 1].
* :class:`LatentLPIPS` -- the latent perceptual loss InvSR (Sec. 3.3) and DM-SR (Eq. (3)) train
  with: VGG16 whose first convolution reads the 4 SD-latent channels, with the max-pools after
  relu1_2, relu2_2 and relu3_3 removed (latents are already 8x downscaled), the five LPIPS taps
  relu1_2..relu5_3 and LPIPS linear heads; InvSR's fine-tuned weights are
  ``vgg16_sdturbo_lpips.pth`` (Hugging Face ``OAOA/InvSR``; facts/invsr-ccsr-dmsr-pyiqa.md),
  stored with the ``lpips`` package's key layout (``net.sliceK.<vgg index>``, ``linK.model.1``).
  Those weights are not available offline here; ``weights="synthetic"`` gives seeded random ones.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, WeightsNotFoundError, import_optional
from ..weights import SYNTHETIC, load_state_dict, synthetic_state_dict, synthetic_tensor

__all__ = ["BACKBONE_FILES", "LATENT_LPIPS_FILE", "LatentLPIPS", "PixelLPIPS", "backbone_file", "lpips_distance"]

BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
LATENT_LPIPS_FILE = "vgg16_sdturbo_lpips.pth"
LATENT_LPIPS_HUB = "OAOA/InvSR"
VGG_CHANNELS = (64, 128, 256, 512, 512)
# torchvision vgg16.features indices of each LPIPS slice; the latent variant drops pools 4, 9, 16.
VGG_SLICES = (range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30))
LATENT_SKIPPED_POOLS = (4, 9, 16)


def _vgg16_features(in_channels: int) -> list[nn.Module]:
    """torchvision's ``vgg16().features`` layers (same indices), reading ``in_channels`` channels."""
    layers: list[nn.Module] = []
    width = in_channels
    for channels, convs in zip(VGG_CHANNELS, (2, 2, 3, 3, 3)):
        for _ in range(convs):
            layers += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(inplace=True)]
            width = channels
        layers.append(nn.MaxPool2d(2, 2))
    return layers


def backbone_file(net: Literal["vgg", "alex"]) -> Path:
    """Where :class:`PixelLPIPS` looks for torchvision's ``net`` backbone file when given none: the torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def _normalize(f: Tensor, eps: float = 1e-10) -> Tensor:
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_distance(feats0: list[Tensor], feats1: list[Tensor], lins: nn.ModuleList) -> Tensor:
    """``sum_l mean_hw lin_l((f̂0_l - f̂1_l)^2)`` per sample, shape (B,)."""
    total = 0
    for f0, f1, lin in zip(feats0, feats1, lins, strict=True):
        total = total + lin((_normalize(f0) - _normalize(f1)).square()).mean(dim=(2, 3))
    assert isinstance(total, Tensor)
    return total.flatten()


def _freeze(module: nn.Module) -> None:
    module.requires_grad_(False)
    module.eval()


class PixelLPIPS(nn.Module):
    """LPIPS v0.1 on RGB images in [0, 1] (VGG16 or AlexNet); returns one distance per sample."""

    def __init__(self, net: Literal["vgg", "alex"] = "vgg", backbone_weights: str | os.PathLike[str] | None = None):
        super().__init__()
        if net not in BACKBONE_FILES:
            raise ConfigError(f"LPIPS net must be one of {', '.join(BACKBONE_FILES)}, got {net!r}")
        lpips = import_optional("lpips", extra="train", needed_for="pixel LPIPS")
        self.net_name = net
        # pretrained=True loads the package's shipped linear weights; pnet_rand=True builds the
        # backbone without downloading (its ImageNet weights are loaded below).
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated pretrained=False
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        self._load_backbone(backbone_weights)
        _freeze(self)

    def _load_backbone(self, spec: str | os.PathLike[str] | None) -> None:
        """Copy torchvision's ``features.<i>`` tensors into the lpips slices (which keep those indices)."""
        net = self.model.net
        layers = {int(i): layer for k in range(1, net.N_slices + 1) for i, layer in getattr(net, f"slice{k}").named_children()}
        expected = {f"features.{i}.{n}": p for i, layer in layers.items() for n, p in layer.named_parameters()}
        if spec is not None and str(spec) == SYNTHETIC:
            state = {k: synthetic_tensor(k, p.shape, p.dtype) for k, p in expected.items()}
        else:
            filename = BACKBONE_FILES[self.net_name]
            path = Path(spec).expanduser() if spec is not None else backbone_file(self.net_name)
            if not path.is_file():
                raise WeightsNotFoundError(
                    f"LPIPS-{self.net_name} backbone: cannot find torchvision's {filename}; looked at {path}. "
                    f"Copy it into {Path(torch.hub.get_dir()) / 'checkpoints'} or pass backbone_weights=<path>"
                )
            state = load_state_dict(path, what=f"LPIPS-{self.net_name} backbone")
        wrong = [k for k, p in expected.items() if k not in state or state[k].shape != p.shape]
        if wrong:
            raise ConfigError(f"LPIPS-{self.net_name} backbone: {len(wrong)} tensors missing or misshapen ({wrong[:3]}); "
                              f"expected torchvision's {BACKBONE_FILES[self.net_name]}")
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(state[key])

    def train(self, mode: bool = True) -> PixelLPIPS:
        return super().train(False)  # always frozen: a loss, not a trained module

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x, y, normalize=True).flatten()


class LatentLPIPS(nn.Module):
    """LPIPS on SD latents (InvSR's ``vgg16_sdturbo_lpips.pth``); returns one distance per sample.

    ``weights``: a file or folder, ``None`` (``vgg16_sdturbo_lpips.pth`` in ``SRKIT_HOME/weights``,
    ``./weights`` or the Hugging Face cache of ``OAOA/InvSR``) or ``"synthetic"``.
    """

    def __init__(self, in_channels: int = 4, weights: str | os.PathLike[str] | None = None):
        super().__init__()
        features = _vgg16_features(in_channels)
        self.net = nn.Module()
        for k, indices in enumerate(VGG_SLICES, start=1):
            slice_ = nn.Sequential()
            for i in indices:
                if i not in LATENT_SKIPPED_POOLS:
                    slice_.add_module(str(i), features[i])
            self.net.add_module(f"slice{k}", slice_)
        self.lins = nn.ModuleList(nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False)) for c in VGG_CHANNELS)
        self._load(weights)
        _freeze(self)

    def _load(self, spec: str | os.PathLike[str] | None) -> None:
        if spec is not None and str(spec) == SYNTHETIC:
            state = synthetic_state_dict(self)
            # LPIPS heads are non-negative by construction (the official training clamps them).
            state.update({k: v.abs() for k, v in state.items() if k.startswith("lins.")})
        else:
            raw = load_state_dict(spec, filename=LATENT_LPIPS_FILE, hub_id=LATENT_LPIPS_HUB, what="latent LPIPS")
            # The lpips package's layout: linK.model.1.weight -> lins.K.1.weight; the RGB scaling
            # layer's buffers do not apply to latents.
            state = {}
            for key, value in raw.items():
                if key.startswith("scaling_layer."):
                    continue
                if key.startswith("lin") and ".model." in key:
                    head, rest = key.split(".model.", 1)
                    key = f"lins.{head.removeprefix('lin')}.{rest}"
                state[key] = value
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"latent LPIPS: the checkpoint does not fit (missing {missing[:4]}, unexpected {unexpected[:4]}); "
                f"expected InvSR's {LATENT_LPIPS_FILE}"
            )

    def train(self, mode: bool = True) -> LatentLPIPS:
        return super().train(False)

    def features(self, z: Tensor) -> list[Tensor]:
        out = []
        h = z
        for k in range(1, len(VGG_SLICES) + 1):
            h = getattr(self.net, f"slice{k}")(h)
            out.append(h)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return lpips_distance(self.features(x), self.features(y), self.lins)
