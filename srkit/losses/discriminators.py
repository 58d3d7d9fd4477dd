"""The discriminators the papers name; all return logits (see :mod:`srkit.losses.gan`).

* :class:`PatchGANDiscriminator` -- LPNSR v2: a spectrally normalised PatchGAN on ResShift latents
  (ndf 64, 3 layers, 3 input channels; facts/resshift-lpnsr.md).
* :class:`UNetDiscriminator` -- InvSR Sec. 3.3: a diffusion-UNet discriminator with a multi-in,
  multi-out design (DMD2): it reads a latent, its timestep and (``cross_attention_dim``) the prompt
  embedding, and returns one logit map per decoder resolution.
* :class:`ControlNetDiscriminator` -- DM-SR Eq. (4)-(5) and Appendix A.1: a ControlNet with the
  channels reduced to [64, 128, 256, 256], conditioned on the LR image, followed by pooling and a
  linear layer giving one logit per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import ConfigError

__all__ = ["ControlNetDiscriminator", "PatchGANDiscriminator", "UNetDiscriminator"]


class PatchGANDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN with spectral norm on every convolution (no batch norm).

    Layers: conv4x4/2 (ndf) + LeakyReLU(0.2); ``n_layers - 1`` conv4x4/2 doubling the width (at most
    8·ndf); one conv4x4/1; a conv4x4/1 to one logit per patch.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"PatchGAN n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [spectral_norm(nn.Conv2d(width, out, 4, stride, 1)), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(spectral_norm(nn.Conv2d(width, 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class UNetDiscriminator(nn.Module):
    """A diffusion UNet (diffusers ``UNet2DModel``, or ``UNet2DConditionModel`` when conditioned on a prompt) with a
    logit head at every decoder resolution.

    Multi-in: the latent ``x``, its diffusion ``timestep`` and, with ``cross_attention_dim`` (the prompt embedding's
    width), the prompt embedding ``encoder_hidden_states`` (B or 1, tokens, dim). Conditioned, it follows InvSR's
    official ``UNet2DConditionDiscriminator`` (``configs/sd-turbo-sr-ldis.yaml``): a plain first down block, cross
    attention in the others and in the mid block (up blocks mirrored), and the prompt also pooled into the timestep
    embedding (diffusers' ``addition_embed_type="text"``; ``text_embed_heads`` pooling heads, default gcd(64, dim):
    64 for SD-Turbo's 1024). ``attention_head_dim``: heads per level (default 8 at the first level, 16 after,
    official). Unlike the official network, the input is not re-injected at every down level and each head is one
    GroupNorm-SiLU-conv. Multi-out: logits from the mid block and every up block, coarse to fine; the last one is the
    UNet's own full-resolution output.
    """

    def __init__(
        self,
        in_channels: int = 4,
        block_out_channels: Sequence[int] = (128, 256, 512),
        layers_per_block: int = 1,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = None,
        attention_head_dim: int | Sequence[int] | None = None,
        text_embed_heads: int | None = None,
    ):
        super().__init__()
        from diffusers import UNet2DConditionModel, UNet2DModel

        levels = len(block_out_channels)
        self.cross_attention_dim = cross_attention_dim
        if cross_attention_dim is None:
            self.unet = UNet2DModel(
                in_channels=in_channels, out_channels=1, block_out_channels=tuple(block_out_channels),
                down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
            )
        else:
            heads = attention_head_dim if attention_head_dim is not None else (8, *(16,) * (levels - 1))
            self.unet = UNet2DConditionModel(
                in_channels=in_channels, out_channels=1, block_out_channels=tuple(block_out_channels),
                down_block_types=("DownBlock2D", *("CrossAttnDownBlock2D",) * (levels - 1)),
                mid_block_type="UNetMidBlock2DCrossAttn",
                up_block_types=(*("CrossAttnUpBlock2D",) * (levels - 1), "UpBlock2D"),
                layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
                cross_attention_dim=int(cross_attention_dim),
                attention_head_dim=heads if isinstance(heads, int) else tuple(heads),
                addition_embed_type="text",
                addition_embed_type_num_heads=text_embed_heads or math.gcd(64, int(cross_attention_dim)),
            )
        reversed_channels = [block_out_channels[-1], *reversed(block_out_channels)][:levels]

        def head(channels: int) -> nn.Module:
            return nn.Sequential(nn.GroupNorm(norm_num_groups, channels), nn.SiLU(), nn.Conv2d(channels, 1, 3, padding=1))

        # mid block output and every up block output except the last (which feeds conv_out).
        self.heads = nn.ModuleList(head(c) for c in reversed_channels)
        self._features: list[Tensor] = []
        for block in [self.unet.mid_block, *list(self.unet.up_blocks)[:-1]]:
            block.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: object, output: Tensor) -> None:
        self._features.append(output)

    @property
    def conditional(self) -> bool:
        """Whether the discriminator reads a prompt embedding (built with ``cross_attention_dim``)."""
        return self.cross_attention_dim is not None

    def forward(self, x: Tensor, timestep: Tensor | int = 0, encoder_hidden_states: Tensor | None = None) -> list[Tensor]:
        self._features = []
        if self.conditional:
            if encoder_hidden_states is None:
                raise ConfigError("this UNetDiscriminator is conditioned on a prompt (cross_attention_dim): pass "
                                  "encoder_hidden_states, the prompt embedding")
            context = encoder_hidden_states.to(x.dtype).expand(x.shape[0], -1, -1)
            final = self.unet(x, timestep, encoder_hidden_states=context).sample
        else:
            if encoder_hidden_states is not None:
                raise ConfigError("this UNetDiscriminator has no prompt conditioning: build it with cross_attention_dim")
            final = self.unet(x, timestep).sample
        features, self._features = self._features, []
        return [h(f) for h, f in zip(self.heads, features)] + [final]


class ControlNetDiscriminator(nn.Module):
    """DM-SR's LR-conditional discriminator D(z, I_LR) -> one logit per sample.

    A diffusers ``ControlNetModel`` over the latent ``z`` with the LR image as its control input,
    channels [64, 128, 256, 256] (Appendix A.1), then global average pooling of the mid-block
    output and a linear layer (ControlNet's zero convolutions are initialised normally). The LR
    image is resized (bicubic) to the pixel size of the latent (``cond_downscale`` times its side),
    the resolution ControlNet's conditioning embedding expects.
    """

    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 3,
        block_out_channels: Sequence[int] = (64, 128, 256, 256),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        conditioning_embedding_out_channels: Sequence[int] = (16, 32, 96, 256),
    ):
        super().__init__()
        from diffusers import ControlNetModel

        self.cross_attention_dim = 8  # DownBlock2D/UNetMidBlock2D have no cross-attention; a stub context is passed
        self.controlnet = ControlNetModel(
            in_channels=in_channels, conditioning_channels=conditioning_channels,
            down_block_types=("DownBlock2D",) * len(block_out_channels), mid_block_type="UNetMidBlock2D",
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, cross_attention_dim=self.cross_attention_dim,
            conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels),
        )
        # ControlNet zero-initialises its output convolutions to leave a pretrained UNet untouched at
        # the start; a discriminator trained from scratch has nothing to protect and would start
        # blind to its inputs, so they get PyTorch's default initialisation.
        cn = self.controlnet
        for conv in [cn.controlnet_cond_embedding.conv_out, *cn.controlnet_down_blocks, cn.controlnet_mid_block]:
            conv.reset_parameters()
        self.cond_downscale = 2 ** (len(conditioning_embedding_out_channels) - 1)
        self.head = nn.Linear(block_out_channels[-1], 1)

    def forward(self, z: Tensor, lr: Tensor, timestep: Tensor | int = 0) -> Tensor:
        size = (z.shape[-2] * self.cond_downscale, z.shape[-1] * self.cond_downscale)
        cond = lr if lr.shape[-2:] == size else F.interpolate(lr, size=size, mode="bicubic", align_corners=False)
        context = z.new_zeros(z.shape[0], 1, self.cross_attention_dim)
        _, mid = self.controlnet(z, timestep, encoder_hidden_states=context, controlnet_cond=cond, return_dict=False)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(mid, 1), 1)).squeeze(1)
