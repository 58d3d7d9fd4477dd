"""ResShift's Swin-UNet denoiser and its LPNSR twin, the noise predictor, in the official layout.

Both networks are the UNet of ResShift (``models/unet.py::UNetModelSwin``; shared/reference/README.md
sec. 1.2): residual blocks with scale-shift time conditioning, one Swin layer (two window-attention
blocks on GroupNorm, not LayerNorm) after the first residual block of every level, and the LR image
concatenated to the input at latent size. Module and parameter names follow the official classes,
so official checkpoints (``resshift_realsrx4_s4_v3.pth``, ``resshift_realsrx4_s15_v{1,2}.pth``,
LPNSR's ``noise_predictor*.pth``) load unchanged, persistent buffers included.

* :class:`UNetModelSwin` -- ``x0 = model(x_t / std(t), t, lq=y)`` (x0 prediction in latent space).
* :class:`SwinUNetNoisePredictor` -- ``g_w(z_t, x0_pred, y, t)`` of LPNSR: 9 input channels, 6 output
  channels holding the mean and log-variance of the noise injected at each reverse step.

Two official details are reproduced on purpose: the timestep sinusoid is computed in float32 (then
cast to the parameter dtype), and the shifted-window mask is recomputed from the runtime size with
the official row-only, column-major region ids (README sec. 1.2); the stored ``attn_mask`` buffer
is kept for checkpoint compatibility but, as in the official code, never read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InvalidImageError, UnsupportedError

__all__ = [
    "SwinUNetNoisePredictor", "UNetModelSwin", "build_pretrained", "relative_position_index",
    "shifted_window_mask", "timestep_embedding",
]

M = TypeVar("M", bound=nn.Module)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups, eps 1e-5); half-precision inputs are normalised in float32 (as officially)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t f), sin(t f)]``, ``f_k = max_period^(-k / (dim/2))``, in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class ResBlock(nn.Module):
    """Residual block with FiLM time conditioning: ``GN(h) * (1 + scale) + shift`` (README sec. 1.2)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = True):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """3x3 convolution with stride 2 and symmetric padding 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def relative_position_index(window: int) -> Tensor:
    """``index[i, j] = (h_i - h_j + w - 1)(2w - 1) + (w_i - w_j + w - 1)`` for tokens ``i = h_i w + w_i``."""
    h, w = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    h, w = h.flatten(), w.flatten()
    return (h[:, None] - h[None, :] + window - 1) * (2 * window - 1) + (w[:, None] - w[None, :] + window - 1)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """The official shifted-window mask (nW, window^2, window^2): 0 within a region, -100 across.

    Region ids depend on the row only (0 above ``H - window``, 1 above ``H - shift``, 2 below) and
    are flattened column-major inside each window, so in the last window row the mask separates
    tokens by their column inside the window (README sec. 1.2, "an official quirk").
    """
    rows = torch.zeros(height)
    rows[height - window : height - shift] = 1
    rows[height - shift :] = 2
    ids = rows.view(height // window, 1, window).expand(-1, width // window, -1)  # (nH, nW, h_in)
    k = torch.arange(window * window)
    ids = ids[..., k % window].reshape(-1, window * window)  # m_n[k] = R[hn * w + k mod w]
    return torch.where(ids[:, None, :] == ids[:, :, None], 0.0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, dropout: float):
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.to(attn.dtype)
        if mask is not None:
            windows = mask.shape[0]
            attn = (attn.view(b // windows, windows, self.num_heads, n, n) + mask[None, :, None]).view(b, self.num_heads, n, n)
        out = attn.softmax(dim=-1) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    """1x1 conv, exact GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinTransformerBlock(nn.Module):
    """Pre-norm (GroupNorm) window attention and MLP on a (B, C, H, W) map.

    Window and shift are fixed at construction from the config resolution: when
    ``resolution <= window`` the window shrinks to the resolution and the shift becomes 0.
    """

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int, mlp_ratio: float, dropout: float):
        super().__init__()
        if resolution <= window:
            window, shift = resolution, 0
        self.window, self.shift = window, shift
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, num_heads, dropout)
        self.norm2 = GroupNorm32(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        mask = shifted_window_mask(resolution, resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)  # stored in checkpoints, never read (official behaviour)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        w, s = self.window, self.shift
        h = self.norm1(x)
        if s > 0:
            h = torch.roll(h, shifts=(-s, -s), dims=(2, 3))
        # windows row-major over (H/w, W/w), tokens row-major inside a window
        windows = h.view(b, c, height // w, w, width // w, w).permute(0, 2, 4, 3, 5, 1).reshape(-1, w * w, c)
        mask = shifted_window_mask(height, width, w, s).to(x.device, x.dtype) if s > 0 else None
        windows = self.attn(windows, mask)
        h = windows.view(b, height // w, width // w, w, w, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, height, width)
        if s > 0:
            h = torch.roll(h, shifts=(s, s), dims=(2, 3))
        x = x + h
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """1x1 projection into the Swin width (patch size 1), optionally GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, patch_norm: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.norm = GroupNorm32(out_channels) if patch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class BasicLayer(nn.Module):
    """Swin layer: 1x1 embed, ``depth`` blocks with shifts 0, w/2, 0, ..., 1x1 unembed; no outer residual."""

    def __init__(self, in_chans: int, embed_dim: int, num_heads: int, window: int, depth: int, resolution: int,
                 mlp_ratio: float, dropout: float, patch_norm: bool):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_norm)
        self.patch_unembed = PatchEmbed(embed_dim, in_chans, patch_norm)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(embed_dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, dropout)
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)


class TimestepSequential(nn.Sequential):
    """A sequence whose residual blocks also receive the time embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def build_pretrained(
    cls: type[M], weights: str | os.PathLike[str] | Mapping[str, Tensor], *, dtype: torch.dtype | None = None, **config: Any
) -> M:
    """``cls(**config)`` in ``dtype`` (default float32) with ``weights`` loaded strictly, in eval mode.

    ``weights``: an official checkpoint file (``params_ema``/``state_dict`` wrappers and ``module.``/
    ``_orig_mod.`` prefixes are removed by :func:`srkit.weights.load_checkpoint`), a state dict, or
    ``"synthetic"`` (the ``srkit-synthetic-v1`` rule evaluated in ``dtype``, for tests and timing).
    """
    from ..weights import load_checkpoint, load_state_dict_strict, synthetic_state_dict

    model = cls(**config).to(dtype or torch.float32)
    if isinstance(weights, Mapping):
        state, source = dict(weights), "the given state dict"
    elif str(weights) == "synthetic":
        state, source = synthetic_state_dict(model), "synthetic weights"
    else:
        state, source = load_checkpoint(weights), str(Path(weights))
    load_state_dict_strict(model, state, source=source)
    return model.eval()


class _SwinUNet(nn.Module):
    """The UNet body shared by the denoiser and the noise predictor (official block table)."""

    def __init__(
        self,
        *,
        input_channels: int,
        output_channels: int,
        image_size: int,
        model_channels: int,
        num_res_blocks: int | Sequence[int],
        attention_resolutions: Sequence[int],
        dropout: float,
        channel_mult: Sequence[int],
        num_heads: int,
        num_head_channels: int,
        use_scale_shift_norm: bool,
        swin_depth: int,
        swin_embed_dim: int,
        window_size: int,
        mlp_ratio: float,
        patch_norm: bool,
        cond_lq: bool,
        lq_size: int,
    ):
        super().__init__()
        if not cond_lq or lq_size != image_size:
            raise ConfigError(
                f"cond_lq={cond_lq}, lq_size={lq_size}, image_size={image_size}: srkit supports the released x4 "
                "configs, where the LR image is concatenated at latent size (cond_lq=True, lq_size == image_size)"
            )
        self.lq_size = lq_size  # the official samplers pad the LR to multiples of it (padding_offset = lq_size)
        levels = len(channel_mult)
        blocks = [num_res_blocks] * levels if isinstance(num_res_blocks, int) else list(num_res_blocks)
        if len(blocks) != levels:
            raise ConfigError(f"num_res_blocks {blocks} must have one entry per channel_mult level ({levels})")
        heads = num_heads if num_head_channels == -1 else swin_embed_dim // num_head_channels
        self.model_channels = model_channels
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def swin(channels: int, resolution: int) -> BasicLayer:
            return BasicLayer(channels, swin_embed_dim, heads, window_size, swin_depth, resolution, mlp_ratio, dropout, patch_norm)

        def res(channels: int, out: int) -> ResBlock:
            return ResBlock(channels, emb_dim, dropout, out, use_scale_shift_norm)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(input_channels, ch, 3, padding=1))])
        skip_channels, ds = [ch], image_size
        multiple = 1  # latent sides must let every Swin layer tile its map into whole windows
        for level, mult in enumerate(channel_mult):
            for j in range(blocks[level]):
                out = int(mult * model_channels)
                layers: list[nn.Module] = [res(ch, out)]
                ch = out
                if ds in attention_resolutions and j == 0:
                    layers.append(swin(ch, ds))
                    multiple = math.lcm(multiple, 2**level * min(window_size, ds))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != levels - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds //= 2
        self.middle_block = TimestepSequential(res(ch, ch), swin(ch, ds), res(ch, ch))
        multiple = math.lcm(multiple, 2 ** (levels - 1) * min(window_size, ds))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(blocks[level] + 1):
                out = int(model_channels * mult)
                layers = [res(ch + skip_channels.pop(), out)]
                ch = out
                if ds in attention_resolutions and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == blocks[level]:
                    layers.append(Upsample(ch))
                    ds *= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, output_channels, 3, padding=1))
        self.size_multiple = multiple

    def _check(self, **tensors: Tensor) -> None:
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        first = next(iter(tensors.values()))
        if any(t.dim() != 4 or t.shape[0] != first.shape[0] or t.shape[2:] != first.shape[2:] for t in tensors.values()):
            raise InvalidImageError(f"{type(self).__name__} needs (B, C, h, w) inputs of one batch and spatial size, got {shapes}")
        h, w = first.shape[2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise InvalidImageError(
                f"{type(self).__name__} needs latent sides that are multiples of {self.size_multiple}, got {h}x{w}; "
                f"reflect-pad the LR image to a multiple of {self.size_multiple} (as the official samplers do) and crop after"
            )

    def _run(self, x: Tensor, timesteps: Tensor | int) -> Tensor:
        """Time embedding, encoder with skips, middle, decoder and head, in the parameter dtype."""
        dtype = self.out[2].weight.dtype
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
        h = x.to(dtype)
        skips = []
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    @classmethod
    def from_pretrained(
        cls: type[M], weights: str | os.PathLike[str] | Mapping[str, Tensor], *, dtype: torch.dtype | None = None, **config: Any
    ) -> M:
        """Build from ``config`` and load ``weights`` strictly (see :func:`build_pretrained`)."""
        return build_pretrained(cls, weights, dtype=dtype, **config)


class UNetModelSwin(_SwinUNet):
    """ResShift's denoiser: ``x0 = model(x_t / std(t), t, lq=y)`` in latent space (README sec. 1.3).

    It is f_theta of the posterior mean, Eq. (5) of LPNSR (ResShift's x0-parameterisation).

    Defaults are the realsr v3 (4-step) config, ``configs/realsr_swinunet_realesrgan256_journal.yaml``;
    the 15-step v1/v2 checkpoints use the same network (only the diffusion schedule differs).
    ``in_channels`` counts the latent channels; the LR image adds 3 more at the input.
    """

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        model_channels: int = 160,
        out_channels: int = 3,
        num_res_blocks: int | Sequence[int] = (2, 2, 2, 2),
        attention_resolutions: Sequence[int] = (64, 32, 16, 8),
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_heads: int = 1,
        num_head_channels: int = 32,
        use_scale_shift_norm: bool = True,
        swin_depth: int = 2,
        swin_embed_dim: int = 192,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        patch_norm: bool = False,
        cond_lq: bool = True,
        lq_size: int = 64,
    ):
        super().__init__(
            input_channels=in_channels + 3, output_channels=out_channels, image_size=image_size,
            model_channels=model_channels, num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
            dropout=dropout, channel_mult=channel_mult, num_heads=num_heads, num_head_channels=num_head_channels,
            use_scale_shift_norm=use_scale_shift_norm, swin_depth=swin_depth, swin_embed_dim=swin_embed_dim,
            window_size=window_size, mlp_ratio=mlp_ratio, patch_norm=patch_norm, cond_lq=cond_lq, lq_size=lq_size,
        )

    def forward(self, x: Tensor, timesteps: Tensor | int, lq: Tensor) -> Tensor:
        """x0 prediction from the normalised latent ``x`` and the LR image ``lq`` in [-1, 1] at latent size.

        ``timesteps`` are step indices (0 .. T-1), an int or a (B,) tensor. Returns (B, out_channels, h, w)
        in the parameter dtype, not clamped.
        """
        self._check(x=x, lq=lq)
        return self._run(torch.cat([x, lq.to(x.dtype)], dim=1), timesteps)


class SwinUNetNoisePredictor(_SwinUNet):
    """LPNSR's noise predictor g_w(x_t, x'_0, y_0, t) of Eq. (11): a diagonal Gaussian over the injected noise.

    The input is ``[z_t (un-normalised), x0_pred, y]`` (2 * in_channels + 3 channels) and, with
    ``double_z``, the head emits ``2 * out_channels`` channels: mean and log-variance (README sec. 3).
    Defaults are ``configs/noise_predictor_config.yaml`` with ``inference.py``'s arguments.
    """

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        model_channels: int = 160,
        out_channels: int = 3,
        num_res_blocks: int | Sequence[int] = 2,
        attention_resolutions: Sequence[int] = (64, 32, 16, 8),
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_heads: int = -1,
        num_head_channels: int = 32,
        use_scale_shift_norm: bool = True,
        swin_depth: int = 2,
        swin_embed_dim: int = 192,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        patch_norm: bool = False,
        cond_lq: bool = True,
        lq_size: int = 64,
        double_z: bool = True,
    ):
        super().__init__(
            input_channels=2 * in_channels + 3, output_channels=(2 if double_z else 1) * out_channels,
            image_size=image_size, model_channels=model_channels, num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions, dropout=dropout, channel_mult=channel_mult, num_heads=num_heads,
            num_head_channels=num_head_channels, use_scale_shift_norm=use_scale_shift_norm, swin_depth=swin_depth,
            swin_embed_dim=swin_embed_dim, window_size=window_size, mlp_ratio=mlp_ratio, patch_norm=patch_norm,
            cond_lq=cond_lq, lq_size=lq_size,
        )
        self.double_z = double_z

    def forward(self, z_t: Tensor, pred_x0: Tensor, lq: Tensor, timesteps: Tensor | int) -> Tensor:
        """The raw head output (B, 2C, h, w) (mean | log-variance) for the latent ``z_t`` (not divided by
        std(t)), the denoiser's unclamped ``pred_x0`` and the LR image ``lq`` in [-1, 1] at latent size."""
        self._check(z_t=z_t, pred_x0=pred_x0, lq=lq)
        return self._run(torch.cat([z_t, pred_x0.to(z_t.dtype), lq.to(z_t.dtype)], dim=1), timesteps)

    def mean_logvar(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Split the raw output into the mean and the log-variance clamped to [-30, 20]."""
        if not self.double_z:
            raise UnsupportedError("this noise predictor has no variance head (double_z=False); its output is the noise itself")
        mean, logvar = raw.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def sample(
        self, z_t: Tensor, pred_x0: Tensor, lq: Tensor, timesteps: Tensor | int, *,
        generator: torch.Generator | None = None, sample_posterior: bool = True,
    ) -> Tensor:
        """The noise for the reverse step: ``mean + exp(logvar / 2) * eps``, eps ~ N(0, I) from ``generator``.

        ``mean`` alone when not ``sample_posterior``; the raw output when the model has no variance head.
        """
        raw = self(z_t, pred_x0, lq, timesteps)
        if not self.double_z:
            return raw
        mean, logvar = self.mean_logvar(raw)
        if not sample_posterior:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps  # the g_w sample that replaces z_{t-1} in Eq. (7), LPNSR Eq. (11)
