"""InvSR's start-noise predictor f_w(y_0, t) (SD-Turbo, ``noise_predictor_sd_turbo_v5.pth``).

A VQGAN/VAE-style encoder with a timestep embedding, built from diffusers' own blocks
(``Timesteps``, ``TimestepEmbedding``, ``AttnDownBlock2D``, ``UNetMidBlock2D``) with the
arguments InvSR's ``TimeAwareEncoder`` passes them, so the state dict has the official keys
(``encoder.*``, 164 tensors, 33,837,576 parameters for the v5 config).

The network predicts the mean and log-variance of a Gaussian over the start noise (the VAE
reparameterisation of InvSR Sec. 3.2.1); ``sample`` draws ``mean + exp(logvar / 2) * eps`` and the
start state is then ``x_N = sqrt(abar_N) y_0 + sqrt(1 - abar_N) f_w(y_0, N)`` (InvSR Eq. (8)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...weights import load_weights, resolve_weights
from . import DESCRIPTOR

__all__ = ["InvSRNoisePredictor", "TimeAwareEncoder"]


class TimeAwareEncoder(nn.Module):
    """An SD-VAE-like encoder whose resnets receive a timestep embedding (InvSR's ``TimeAwareEncoder``)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 4,
        down_block_types: Sequence[str] = ("AttnDownBlock2D", "AttnDownBlock2D"),
        block_out_channels: Sequence[int] = (256, 512),
        layers_per_block: int | Sequence[int] = (3, 3),
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        double_z: bool = True,
        mid_block_add_attention: bool = True,
        resnet_time_scale_shift: str = "default",
        temb_channels: int = 512,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        attention_head_dim: int = 64,
    ):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block

        if len(block_out_channels) != len(down_block_types):
            raise ConfigError(
                f"block_out_channels ({len(block_out_channels)}) and down_block_types ({len(down_block_types)}) "
                "must have the same length: one output width per down block"
            )
        layers = [layers_per_block] * len(down_block_types) if isinstance(layers_per_block, int) else list(layers_per_block)
        time_dim = max(128, block_out_channels[0])
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(time_dim, temb_channels)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            self.down_blocks.append(
                get_down_block(
                    block_type, num_layers=layers[i], in_channels=channels, out_channels=block_out_channels[i],
                    add_downsample=i < len(block_out_channels) - 1, resnet_eps=1e-6, downsample_padding=0,
                    resnet_act_fn=act_fn, resnet_groups=norm_num_groups, attention_head_dim=attention_head_dim,
                    resnet_time_scale_shift=resnet_time_scale_shift, temb_channels=temb_channels,
                )
            )
            channels = block_out_channels[i]
        self.mid_block = UNetMidBlock2D(
            in_channels=channels, resnet_eps=1e-6, resnet_act_fn=act_fn, output_scale_factor=1,
            attention_head_dim=attention_head_dim, resnet_groups=norm_num_groups, add_attention=mid_block_add_attention,
            resnet_time_scale_shift=resnet_time_scale_shift, temb_channels=temb_channels,
        )
        self.conv_norm_out = nn.GroupNorm(num_channels=channels, num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels, 2 * out_channels if double_z else out_channels, 3, padding=1)

    def forward(self, sample: Tensor, timesteps: Tensor | float) -> Tensor:
        """Encode ``sample`` (B, C, H, W) at ``timesteps`` (scalar or (B,)) to (B, 2*latent, H/2^k, W/2^k)."""
        t = torch.as_tensor(timesteps, device=sample.device)
        t = t.reshape(-1).expand(sample.shape[0]) if t.numel() == 1 else t.reshape(-1)
        # The sinusoid is computed in float32 by diffusers and cast to the weights' dtype (as InvSR does).
        emb = self.time_embedding(self.time_proj(t).to(self.time_embedding.linear_1.weight.dtype))
        h = self.conv_in(sample)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = self.mid_block(h, emb)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))




class InvSRNoisePredictor(nn.Module):
    """InvSR's ``NoisePredictor``: f_w(y_0, t) as a diagonal Gaussian over the start noise.

    Constructor arguments are the keys of InvSR's ``model_start.params`` (``configs/sample-sd-turbo.yaml``);
    ``up_block_types`` and ``sample_size`` are accepted for config compatibility and unused, as there.
    ``weights``: ``None`` (``noise_predictor_sd_turbo_v5.pth`` from ``SRKIT_HOME/weights``,
    ``./weights`` or the ``OAOA/InvSR`` hub cache), a file, a folder holding it, a hub id, or
    ``"synthetic"`` (srkit-synthetic-v1, also the starting point for training from scratch).
    """

    def __init__(
        self,
        in_channels: int = 3,
        down_block_types: Sequence[str] = ("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types: Sequence[str] = ("AttnUpBlock2D", "AttnUpBlock2D"),
        block_out_channels: Sequence[int] = (256, 512),
        layers_per_block: int | Sequence[int] = (3, 3),
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 128,
        mid_block_add_attention: bool = True,
        resnet_time_scale_shift: str = "default",
        temb_channels: int = 512,
        attention_head_dim: int = 64,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        double_z: bool = True,
        weights: str | None = None,
    ):
        super().__init__()
        if not double_z:
            raise ConfigError("InvSRNoisePredictor needs double_z=True: it predicts a mean and a log-variance")
        self.latent_channels = latent_channels
        self.downscale = 2 ** (len(block_out_channels) - 1)
        self.encoder = TimeAwareEncoder(
            in_channels=in_channels, out_channels=latent_channels, down_block_types=down_block_types,
            block_out_channels=block_out_channels, layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
            act_fn=act_fn, double_z=True, mid_block_add_attention=mid_block_add_attention,
            resnet_time_scale_shift=resnet_time_scale_shift, temb_channels=temb_channels, freq_shift=freq_shift,
            flip_sin_to_cos=flip_sin_to_cos, attention_head_dim=attention_head_dim,
        )
        # the file, its hub repository and source are InvSR's descriptor data (role "noise_predictor")
        load_weights(self, resolve_weights(DESCRIPTOR, "noise_predictor", weights), what="InvSR noise predictor")

    def parameters_of(self, image: Tensor, timesteps: Tensor | float, *, center_input_sample: bool = True) -> Tensor:
        """Raw Gaussian parameters (B, 2*latent, H/2, W/2): ``[mean | logvar]`` before the clamp.

        ``image`` is the LR in [0, 1]; ``center_input_sample`` maps it to ``2 * image - 1`` first.
        """
        if center_input_sample:
            image = image * 2 - 1.0
        return self.encoder(image, timesteps)

    def mean_logvar(self, image: Tensor, timesteps: Tensor | float, *, center_input_sample: bool = True) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (clamped to [-30, 20] as diffusers' ``DiagonalGaussianDistribution``)."""
        mean, logvar = self.parameters_of(image, timesteps, center_input_sample=center_input_sample).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(
        self,
        image: Tensor,
        timesteps: Tensor | float,
        *,
        sample_posterior: bool = True,
        center_input_sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The predicted start noise ``mean + exp(logvar / 2) * eps`` (or the mean, ``sample_posterior=False``)."""
        mean, logvar = self.mean_logvar(image, timesteps, center_input_sample=center_input_sample)
        if not sample_posterior:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

