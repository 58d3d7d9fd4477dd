"""ResShift's first stage, the VQGAN f4 autoencoder (``autoencoder_vq_f4.pth``), in the official layout.

``VQModelTorch`` of ResShift (``ldm/models/autoencoder.py``; shared/reference/README.md sec. 2) is
CompVis LDM's VQ-f4 in plain PyTorch: ``encode`` returns the **un-quantised** latent
(``quant_conv(encoder(x))``) and ``decode`` **quantises** to the nearest codebook vector before
``post_quant_conv`` and the decoder, exactly as the ResShift and LPNSR samplers use it. LPNSR's own
copy (built with LoRA arguments that create no layer) has the same state dict and maths, so the same
class and checkpoint serve ResShift, posterior-guided ResShift and LPNSR.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InvalidImageError
from ..tiling import tiled_network_apply
from ..types import Autoencoder
from .swin_unet import build_pretrained

__all__ = ["Decoder", "Encoder", "VQModelTorch", "VectorQuantizer"]

# Rows of the (positions x codebook) distance matrix computed at once: bounds the quantiser's memory.
_QUANTIZE_CHUNK = 4096


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """GN, swish, conv3x3, GN, swish, dropout, conv3x3, plus a 1x1 ``nin_shortcut`` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head global self-attention over all positions: ``x + proj_out(softmax(q k^T / sqrt(C)) v)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)
        # (B, 1, HW, C), contiguous: PyTorch's fused attention (default scale 1/sqrt(C)) then never forms
        # the HW x HW matrix, so memory stays linear in HW (strided inputs fall back to the quadratic path).
        q, k, v = (proj(h).flatten(2).transpose(1, 2)[:, None].contiguous() for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, height, width))


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then conv3x3 with stride 2 and no padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _blocks(num_res_blocks: int | Sequence[int], levels: int) -> list[int]:
    blocks = [num_res_blocks] * levels if isinstance(num_res_blocks, int) else list(num_res_blocks)
    if len(blocks) != levels:
        raise ConfigError(f"num_res_blocks {blocks} must have one entry per ch_mult level ({levels})")
    return blocks


class Encoder(nn.Module):
    """LDM encoder: conv_in, levels of residual blocks (+ attention) with downsampling, mid, GN-swish-conv_out."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int | Sequence[int], attn_resolutions: Sequence[int],
                 dropout: float, in_channels: int, resolution: int, z_channels: int, double_z: bool):
        super().__init__()
        blocks = _blocks(num_res_blocks, len(ch_mult))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in, res = ch, resolution
        for level, mult in enumerate(ch_mult):
            down = nn.Module()
            down.block = nn.ModuleList()
            down.attn = nn.ModuleList()
            for _ in range(blocks[level]):
                down.block.append(ResnetBlock(block_in, ch * mult, dropout))
                block_in = ch * mult
                if res in attn_resolutions:
                    down.attn.append(AttnBlock(block_in))
            if level != len(ch_mult) - 1:
                down.downsample = Downsample(block_in)
                res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for down in self.down:
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[i](h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """LDM decoder: conv_in, mid, levels (run from the lowest resolution up) with upsampling, GN-swish-conv_out.

    ``up`` is indexed by resolution level (``up.0`` is the full resolution), as in the official keys.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int | Sequence[int],
                 attn_resolutions: Sequence[int], dropout: float, resolution: int, z_channels: int):
        super().__init__()
        blocks = _blocks(num_res_blocks, len(ch_mult))
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        ups: list[nn.Module] = []
        for level in reversed(range(len(ch_mult))):
            up = nn.Module()
            up.block = nn.ModuleList()
            up.attn = nn.ModuleList()
            for _ in range(blocks[level] + 1):
                up.block.append(ResnetBlock(block_in, ch * ch_mult[level], dropout))
                block_in = ch * ch_mult[level]
                if res in attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.up_path(self.mid_path(z))

    def mid_path(self, z: Tensor) -> Tensor:
        """The latent-resolution part: ``conv_in`` and the mid block (global attention)."""
        return self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))

    def up_path(self, h: Tensor) -> Tensor:
        """Everything after the mid block: the levels with upsampling, then GN-swish-conv_out."""
        for stage in self.up_stages():
            h = stage(h)
        return h

    def up_stages(self) -> list[Callable[[Tensor], Tensor]]:
        """:meth:`up_path` as the sequence of its blocks (the stages :func:`srkit.tiling.stagewise_tiled_apply` tiles)."""
        stages: list[Callable[[Tensor], Tensor]] = []
        for up in reversed(self.up):
            for i, block in enumerate(up.block):
                stages.append(block)
                if len(up.attn):
                    stages.append(up.attn[i])
            if hasattr(up, "upsample"):
                stages.append(up.upsample)
        stages.append(lambda h: self.conv_out(_swish(self.norm_out(h))))
        return stages


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantiser (LDM ``VectorQuantizer2``, inference path): ``z_q = z + (e_k - z).detach()``."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def indices(self, z: Tensor) -> Tensor:
        """argmin_j ``||z||^2 + ||e_j||^2 - 2 z.e_j`` per position of ``z`` (B, C, H, W), flattened in (b, h, w) order."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        codebook = self.embedding.weight
        norms = (codebook**2).sum(dim=1)
        return torch.cat([
            ((rows**2).sum(dim=1, keepdim=True) + norms - 2 * rows @ codebook.t()).argmin(dim=1)
            for rows in flat.split(_QUANTIZE_CHUNK)
        ])

    def nearest(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The nearest codebook entries e_k (B, C, H, W; differentiable in the codebook, as the codebook loss needs)
        and the code indices of ``z``."""
        index = self.indices(z)
        b, c, height, width = z.shape
        return self.embedding(index).view(b, height, width, c).permute(0, 3, 1, 2), index

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The quantised latent (straight-through, same shape as ``z``) and the code indices."""
        codes, index = self.nearest(z)
        return z + (codes - z).detach(), index


class VQModelTorch(Autoencoder):
    """VQGAN f4 (``ddconfig``, ``n_embed``, ``embed_dim`` as in ResShift's yaml ``autoencoder.params``).

    Images are in [-1, 1]; latents have ``embed_dim`` channels at 1/4 resolution. ``decode`` returns
    the decoder output unclamped (the samplers clamp to [-1, 1]).
    """

    def __init__(self, ddconfig: Mapping[str, Any], n_embed: int = 8192, embed_dim: int = 3):
        super().__init__()
        config = dict(ddconfig)
        if config.pop("padding_mode", "zeros") != "zeros":
            raise ConfigError("ddconfig.padding_mode must be 'zeros' (the official VQModelTorch ignores any other value)")
        try:
            shared = {k: config[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution", "z_channels")}
            encoder_only = {"in_channels": config["in_channels"], "double_z": config.get("double_z", False)}
            decoder_only = {"out_ch": config["out_ch"]}
        except KeyError as err:
            raise ConfigError(f"ddconfig lacks the key {err}; see conf/backend/vq_f4.yaml for the full VQ-f4 ddconfig") from None
        known = {*shared, *encoder_only, *decoder_only, "dropout"}
        if set(config) - known:
            raise ConfigError(f"ddconfig has unknown keys {sorted(set(config) - known)}; known: {sorted(known)}")
        dropout = float(config.get("dropout", 0.0))
        self.encoder = Encoder(**shared, **encoder_only, dropout=dropout)
        self.decoder = Decoder(**shared, **decoder_only, dropout=dropout)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(shared["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, shared["z_channels"], 1)
        self.downscale = 2 ** (len(shared["ch_mult"]) - 1)
        self.latent_channels = embed_dim
        self.in_channels = encoder_only["in_channels"]

    def encode(self, x: Tensor) -> Tensor:
        """``quant_conv(encoder(x))`` for images in [-1, 1], **not** quantised (README sec. 2.2)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % self.downscale or x.shape[3] % self.downscale:
            raise InvalidImageError(
                f"encode needs (B, {self.in_channels}, H, W) with H and W multiples of {self.downscale}, got {tuple(x.shape)}; "
                "pad the image (reflect) and crop the result"
            )
        return self.quant_conv(self.encoder(x))

    def decode(self, z: Tensor, force_not_quantize: bool = False) -> Tensor:
        """``decoder(post_quant_conv(quantize(z)))``; quantisation is skipped only if ``force_not_quantize``."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise InvalidImageError(f"decode needs latents (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        if not force_not_quantize:
            z, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def decode_tiled(
        self, z: Tensor, *, tile: int = 64, overlap: int = 32, statistics: Literal["image", "tile"] = "image",
        store: torch.device | str | None = None, force_not_quantize: bool = False, progress: bool = False,
    ) -> Tensor:
        """:meth:`decode` with the up path in tiles of ``tile`` latent pixels.

        Quantisation, ``post_quant_conv`` and the mid block (global attention) run on the whole
        latent, 1/16 of the pixels. ``statistics="image"``: the up path runs block by block over the
        tiles with image-wide GroupNorm statistics (:func:`srkit.tiling.stagewise_tiled_apply`; the
        blocks' outputs are kept on ``store``), which is the untiled decode up to float rounding.
        ``statistics="tile"``: independent tiles blended over ``overlap`` latent pixels, each
        normalised with its own statistics (memory bounded by the tile everywhere; ~0.3 max abs off).
        """
        if any(len(up.attn) for up in self.decoder.up):
            raise ConfigError("decode_tiled cannot tile an up path with global attention (attn_resolutions); use decode")
        if not force_not_quantize:
            z, _ = self.quantize(z)
        hidden = self.decoder.mid_path(self.post_quant_conv(z))
        return tiled_network_apply(
            self.decoder.up_stages(), hidden, [*self.decoder.up, self.decoder.norm_out], scale=self.downscale, tile=tile,
            overlap=overlap, statistics=statistics, store=store, progress=progress,
        )

    @classmethod
    def from_pretrained(
        cls, weights: str | os.PathLike[str] | Mapping[str, Tensor], *, dtype: torch.dtype | None = None, **config: Any
    ) -> VQModelTorch:
        """Build from ``config`` and load ``weights`` strictly (see :func:`srkit.backends.swin_unet.build_pretrained`)."""
        return build_pretrained(cls, weights, dtype=dtype, **config)
