"""CCSR v2 (Sun et al., arXiv 2401.00877): SD 2.1-base + an LR-conditioned ControlNet, non-uniform
timestep sampling, and a GAN-fine-tuned VAE decoder.

Inference (CCSR Sec. III-B/D; official v2 ``test_ccsr_tile.py`` / ``pipeline_ccsr.py``, facts §2 v2):
the LR image is bicubic-upsampled x4 by Pillow (as the official code) and encoded by the VAE
(``latent_dist.sample()`` x scaling factor, drawn from the seeded generator); that latent z_LR conditions the
ControlNet and is also
the start point, x_T = q(z_LR, T = 999) (``start_point=lr``). The :class:`NonUniformSampler` visits
T once (no classifier-free guidance there, as v2), jumps to t_max and runs the loop to t_min with
CFG (``guidance_scale``, fixed ``prompt`` / ``negative_prompt``); the x0 estimate is decoded by the
(stage-2 fine-tuned) VAE decoder and colour-corrected towards the upsampled LR (AdaIN by default).

``steps`` is S, the number of network evaluations: 1 is CCSR-S1 (the official one-step mode
N = 1: x̂0←T is decoded); S >= 2 keeps the sampler's (t_max, t_min) (default 2/3, 1/2) and picks
N = (S - 1) / (t_max - t_min), so S = (t_max - t_min) N + 1 (Sec. III-D): CCSR-S2 is N = 6, and
S = 3, 4 are Table II's (12, 3) and (18, 4). The knobs ``T`` (N), ``t_max`` and ``t_min`` of
:meth:`CCSR.sr` override this (Tables II-III); with an explicit ``T``, ``steps`` is ignored. The knob
``sampling="uniform"`` replaces the non-uniform chain by S uniform DDPM steps from T (``trailing``
spacing: [999, 499] for S = 2), the same backbone without NUTS for the stability comparison.

ControlNet conditioning (v2 ``use_vae_encode_condition``): diffusers' conditioning-embedding CNN
is replaced by ``condition_conv_in``, one 3x3 convolution from the 4 latent channels to the first
block's width, whose output is added to ``conv_in(x_t)``. It is registered on diffusers'
``ControlNetModel`` under that name (the official key), the diffusers embedding becomes an identity
without parameters, so the state dict is diffusers' ControlNet keys plus ``condition_conv_in.*``.
That this matches the released ``controlnet/`` folder is UNVERIFIED (facts §2).

Tiling: ``sr(tile=...)`` runs the whole pipeline per LR tile and blends the HR tiles with srkit's
raised-cosine ramp (:func:`srkit.tiling.tiled_apply`). The official ``--tile_diffusion`` instead
blends the noise predictions of 64x64 latent tiles with Gaussian weights at every step and decodes
the whole latent (``--tile_vae``); srkit's per-tile pipeline needs no per-step hook, at the price
of independent noise draws per tile, which the blending ramp hides in the overlaps.

Training (``stage``, Sec. III-B/C/D): stage 1 trains the ControlNet with the ε loss (Eq. (2)) at
t < ``train_t_max`` (v2: 667) plus Eq. (3), l_T + l_tmax: the x0 estimate at T from x_T = q(z_HR, T)
(Eq. (1)) and the x0 estimate at t_max from its re-noised x̂_tmax, both against the HR latent.
Stage 2 ("DeFT") trains only the VAE decoder on the frozen stage-1 one-step output x̂0←T (as v2):
``stage2_recipe="v2"`` is MSE + 0.05 hinge GAN; v2's projected discriminator on DINOv2-ViT-S/14
(conditioned on the LR's CLS token) is not available offline, so an unconditional spectral-norm
PatchGAN (:class:`srkit.losses.discriminators.PatchGANDiscriminator`) stands in for it.
``stage2_recipe="paper"`` is the VAE's own loss (LDM's ``LPIPSWithDiscriminator``, as v1):
L1 + LPIPS + 0.5 x the adaptive-weighted hinge GAN of the same PatchGAN.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...backends.sd import DIFFUSERS_WEIGHTS, StableDiffusion, build_component
from ...diffusion import Chain, DiffusionMethod, MeanCorrectionHook, NoiseHook, StartState, TimestepProvider
from ...errors import ConfigError
from ...ops.resize import pil_bicubic_upsample
from ...samplers.ddpm import DDPMSampler
from ...samplers.nonuniform import NonUniformSampler
from ...types import Denoiser, Sampler
from ...weights import companion, load_weights, resolve_weights
from . import DESCRIPTOR

__all__ = ["CCSR", "NEGATIVE_PROMPT", "PROMPT", "vae_condition_controlnet"]

PROMPT = "clean, high-resolution, 8k"  # v2 argparse default
NEGATIVE_PROMPT = "blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed"
Stage = Literal[1, 2]
Stage2Recipe = Literal["v2", "paper"]


def vae_condition_controlnet(config: Mapping[str, Any], *, device: str = "cpu") -> nn.Module:
    """diffusers' ``ControlNetModel`` of ``config`` with v2's ``condition_conv_in`` (see the module docstring)."""
    controlnet = build_component("controlnet", config, device=device)
    channels = int(controlnet.config.conditioning_channels)
    width = int(controlnet.config.block_out_channels[0])
    with torch.device(device):
        controlnet.controlnet_cond_embedding = nn.Identity()
        controlnet.condition_conv_in = nn.Conv2d(channels, width, 3, padding=1)
    return controlnet


class CCSR(DiffusionMethod):
    """CCSR v2 x4; see the module docstring.

    ``weights``: SD 2.1-base (see :class:`srkit.backends.sd.StableDiffusion`); ``"synthetic"`` also
    makes ``ccsr_weights`` and ``lpips_weights`` synthetic unless given. ``ccsr_weights``: the release folder holding
    ``controlnet/`` and the stage-2 ``vae/`` (diffusers layout; ``None``: ``ccsr_v2`` in
    ``SRKIT_HOME/weights`` or ``./weights``), ``"synthetic"``, or ``"init"`` (the stage-1 start:
    ControlNet copied from the UNet, SD's own VAE). ``backend_config`` is merged into
    ``conf/backend/sd21_base.yaml`` (its ``controlnet`` entry configures the ControlNet).
    ``sampler``: the :class:`NonUniformSampler` (any DDPM-family sampler works: ``DDPMSampler`` with
    ``spacing=trailing, steps_offset=0`` is the uniform baseline); its knobs ``T``, ``t_max``, ``t_min`` shape the
    chain per call. ``sr()`` knobs of CCSR itself: ``guidance_scale``, ``sampling`` ("uniform": the sampler's
    :meth:`~NonUniformSampler.uniform` twin).
    ``for_training`` builds stage ``stage``'s losses (``stage2_recipe``, ``discriminator`` = keyword
    arguments of the PatchGAN, ``lpips_weights`` = torchvision's VGG16 file for the paper recipe).
    """

    descriptor = DESCRIPTOR
    sampler_type = DDPMSampler
    compiled_networks = ("sd.unet", "controlnet")
    method_knobs = ("guidance_scale", "sampling")

    def __init__(
        self,
        weights: str | None = None,
        ccsr_weights: str | None = None,
        backend_config: Mapping[str, Any] | None = None,
        prompt: str = PROMPT,
        negative_prompt: str = NEGATIVE_PROMPT,
        guidance_scale: float = 4.5,
        conditioning_scale: float = 1.0,
        color_fix: str = "adain",
        sampler: DDPMSampler | None = None,
        stage: Stage = 1,
        for_training: bool = False,
        train_t_max: int = 667,
        stage2_recipe: Stage2Recipe = "v2",
        discriminator: Mapping[str, Any] | None = None,
        lpips_weights: str | None = None,
        timesteps: TimestepProvider | None = None,
        start_state: StartState | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
    ):
        super().__init__(4, sampler=sampler if sampler is not None else NonUniformSampler(), timesteps=timesteps,
                         start_state=start_state, noise=noise, mean_correction=mean_correction, color_fix=color_fix)
        if stage not in (1, 2):
            raise ConfigError(f"ccsr stage must be 1 (ControlNet) or 2 (VAE decoder), got {stage!r}")
        if stage2_recipe not in ("v2", "paper"):
            raise ConfigError(f"stage2_recipe must be 'v2' or 'paper', got {stage2_recipe!r}")
        if not 0 < train_t_max < self.big_t:
            raise ConfigError(f"train_t_max must lie in [1, {self.big_t - 1}], got {train_t_max}")
        ccsr_weights, lpips_weights = companion(ccsr_weights, weights), companion(lpips_weights, weights)
        config = registry.backend_config("sd21_base", backend_config, prompt=prompt, weights=weights)
        control_config = config.pop("controlnet")
        self.sd = StableDiffusion(**config, controlnet=None)
        self._init = ccsr_weights == "init"
        self.controlnet = self._controlnet(control_config, ccsr_weights)
        self.prior_loaded()
        self.requires_grad_(False)

        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.guidance_scale, self.conditioning_scale = float(guidance_scale), float(conditioning_scale)
        self.stage, self.train_t_max, self.stage2_recipe = stage, int(train_t_max), stage2_recipe
        self.disc: nn.Module | None = None
        if for_training and stage == 2:
            self._build_stage2(discriminator, lpips_weights)

    def _controlnet(self, config: Mapping[str, Any], spec: str | None) -> nn.Module:
        if spec == "init":
            return vae_condition_controlnet(config)  # the UNet copied in by prior_loaded, called after this
        controlnet = vae_condition_controlnet(config, device="meta").to_empty(device="cpu")
        folder = resolve_weights(self.descriptor, "release", spec)
        load_weights(controlnet, folder, filename=DIFFUSERS_WEIGHTS, subfolder="controlnet", what="CCSR ControlNet")
        load_weights(self.sd.vae.vae, folder, filename=DIFFUSERS_WEIGHTS, subfolder="vae", what="CCSR fine-tuned VAE")
        return controlnet

    def prior_loaded(self) -> None:
        """``ccsr_weights="init"``: the ControlNet starts as a copy of the UNet now loaded (the ControlNet recipe)."""
        if self._init:
            self.controlnet.load_state_dict(self.sd.unet.state_dict(), strict=False)

    def save_weights(self, folder: str | os.PathLike[str]) -> None:
        """Write ``controlnet/`` and ``vae/`` (diffusers layout, safetensors): the folder ``ccsr_weights`` reads,
        e.g. the stage-1 result for stage 2 and the stage-2 result for inference."""
        from safetensors.torch import save_file

        for name, module in (("controlnet", self.controlnet), ("vae", self.sd.vae.vae)):
            path = Path(folder) / name / DIFFUSERS_WEIGHTS
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(path))

    def _build_stage2(self, discriminator: Mapping[str, Any] | None, lpips_weights: str | None) -> None:
        from ...losses.discriminators import PatchGANDiscriminator

        self.disc = PatchGANDiscriminator(in_channels=3, **dict(discriminator or {}))
        if self.stage2_recipe == "paper":
            from ...losses.lpips import PixelLPIPS

            self.lpips = PixelLPIPS("vgg", backbone_weights=lpips_weights)

    # ------------------------------------------------------------------ the model

    @property
    def big_t(self) -> int:
        """T, CCSR's first timestep (999: the non-uniform sampler's ``start``, the last training step otherwise)."""
        return int(getattr(self.sampler, "start", self.sampler.num_train_timesteps - 1))

    def encode_lr(self, lr: Tensor, generator: torch.Generator | None) -> Tensor:
        """z_LR: the scaled VAE latent (a posterior sample) of the x4 bicubic upsampling of ``lr`` in [0, 1], by Pillow
        as CCSR's code does it (:func:`~srkit.ops.resize.pil_bicubic_upsample`)."""
        up = pil_bicubic_upsample(lr, self.scale).clamp(0, 1)
        return self.sd.vae.encode(up * 2 - 1, sample=True, generator=generator)

    def eps(self, x_t: Tensor, t: int | Tensor, z_lr: Tensor, context: Tensor) -> Tensor:
        """ε_θ(x_t, t | z_LR, prompt): the ControlNet's residuals added to the UNet."""
        down, mid = self.controlnet(
            x_t, t, encoder_hidden_states=context, controlnet_cond=self.controlnet.condition_conv_in(z_lr),
            conditioning_scale=self.conditioning_scale, return_dict=False,
        )
        return self.sd.unet(x_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample

    def _context(self, batch: int, prompt: str) -> Tensor:
        return self.sd.prompt_embedding(prompt).expand(batch, -1, -1)

    def condition(self, lr: Tensor, generator: torch.Generator | None, *, guidance_scale: float | None = None,
                  sampling: str = "nonuniform", **knobs: Any) -> Chain:
        """z_LR conditions the ControlNet and is the start point (x_T = q(z_LR, T), ``start_point=lr``)."""
        if sampling not in ("nonuniform", "uniform"):
            raise ConfigError(f"sampling must be 'nonuniform' (CCSR) or 'uniform' (DDPM baseline), got {sampling!r}")
        batch = lr.shape[0]
        extras = {"cond": self._context(batch, self.prompt), "uncond": self._context(batch, self.negative_prompt),
                  "guidance": float(self.guidance_scale if guidance_scale is None else guidance_scale), "sampling": sampling}
        return Chain(lr, self.encode_lr(lr, generator), generator, extras)

    def call_sampler(self, chain: Chain) -> Sampler:
        if chain.extras["sampling"] == "uniform":
            if not isinstance(self.sampler, NonUniformSampler):
                raise ConfigError("sampling='uniform' is the non-uniform sampler's uniform twin; this CCSR has "
                                  f"{type(self.sampler).__name__}, which is uniform already")
            return self.sampler.uniform()
        return super().call_sampler(chain)

    def denoiser(self, chain: Chain) -> Denoiser:
        """The x0 estimate of ε_θ, with classifier-free guidance against the negative prompt except at T (v2)."""
        z_lr, cond, uncond, guidance = chain.y, chain.extras["cond"], chain.extras["uncond"], chain.extras["guidance"]

        def denoise(x_t: Tensor, t: int) -> Tensor:
            if t == self.big_t or guidance == 1.0:
                eps = self.eps(x_t, t, z_lr, cond)
            else:
                e_u, e_c = self.eps(torch.cat([x_t, x_t]), t, torch.cat([z_lr, z_lr]), torch.cat([uncond, cond])).chunk(2)
                eps = e_u + guidance * (e_c - e_u)
            return self.sampler.predict_x0(eps, x_t, t)

        return denoise

    def decode(self, z_0: Tensor, chain: Chain) -> Tensor:
        """The x0 estimate decoded by the (stage-2 fine-tuned) VAE, in [-1, 1] (mapped to [0, 1] here)."""
        return (self.decode_latents(self.sd.vae, z_0) + 1) / 2

    # ------------------------------------------------------------------ training

    def learned_modules(self) -> dict[str, nn.Module]:
        return {"controlnet": self.controlnet, "decoder": self.sd.vae.vae.decoder}  # stage 1, stage 2 (DeFT)

    def trainable_modules(self) -> dict[str, nn.Module]:
        if self.stage == 1:
            return {"controlnet": self.controlnet}
        return {"decoder": self.sd.vae.vae.decoder}  # v2: only parameters named 'decoder'

    def discriminator_modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.disc} if self.disc is not None else {}

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self._stage1_losses(batch) if self.stage == 1 else self._stage2_losses(batch)

    def _stage1_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        sampler, big_t = self.sampler, self.big_t
        lr, hr = batch["lr"], batch["hr"]
        with torch.no_grad():
            z_lr = self.encode_lr(lr, None)
            z0 = self.sd.vae.encode(hr * 2 - 1, sample=True)
        context = self._context(lr.shape[0], self.prompt)
        b = z0.shape[0]
        # Eq. (2) at t < t_max (v2: 667), one t per sample
        t = torch.randint(0, self.train_t_max, (b,), device=z0.device)
        noise = torch.randn_like(z0)
        x_t = sampler.q_sample(z0, t, noise)
        l_diff = F.mse_loss(self.eps(x_t, t, z_lr, context), noise)
        # Eq. (3): l_T on x̂0←T from x_T = q(z0, T) (Eq. (1)), l_tmax on x̂0 from x̂_tmax = q(x̂0←T, t_max)
        x_big_t = sampler.q_sample(z0, big_t, torch.randn_like(z0))
        x0_big_t = sampler.predict_x0(self.eps(x_big_t, big_t, z_lr, context), x_big_t, big_t)
        x_tmax = sampler.q_sample(x0_big_t, self.train_t_max, torch.randn_like(z0))
        x0_tmax = sampler.predict_x0(self.eps(x_tmax, self.train_t_max, z_lr, context), x_tmax, self.train_t_max)
        return {"diff": l_diff, "l_T": F.mse_loss(x0_big_t, z0), "l_tmax": F.mse_loss(x0_tmax, z0)}

    @torch.no_grad()
    def _one_step_latent(self, lr: Tensor) -> Tensor:
        """The frozen stage-1 output x̂0←T from the LR start (v2's stage-2 input)."""
        z_lr = self.encode_lr(lr, None)
        big_t = self.big_t
        x_big_t = self.sampler.prior(z_lr, torch.randn_like(z_lr), big_t)
        return self.sampler.predict_x0(self.eps(x_big_t, big_t, z_lr, self._context(lr.shape[0], self.prompt)), x_big_t, big_t)

    def _require_disc(self) -> nn.Module:
        if self.disc is None:
            raise ConfigError("ccsr stage 2 trains with a discriminator: build the method with for_training=True, stage=2")
        return self.disc

    def _stage2_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The decoder's loss; the GAN term times the trainer's GAN factor ``batch["gan_factor"]`` (official v2: 0 up
        to step 100, ``--begin_disc``; conf/train/ccsr_stage2.yaml)."""
        from ...losses.gan import adaptive_weight, gan_factor, generator_loss

        disc = self._require_disc()
        fake = self.sd.vae.decode(self._one_step_latent(batch["lr"]))
        real = batch["hr"] * 2 - 1
        factor = gan_factor(batch)
        if self.stage2_recipe == "v2":
            gan = 0.05 * factor * generator_loss(disc(fake), "hinge") if factor else fake.new_zeros(())
            return {"mse": F.mse_loss(fake, real), "gan": gan}
        # LDM's LPIPSWithDiscriminator: L1 + LPIPS, GAN weighted adaptively x 0.5 (weight 0 without gradients)
        nll = (fake - real).abs().mean() + self.lpips((fake + 1) / 2, batch["hr"]).mean()
        if not factor:
            return {"nll": nll, "gan": nll.new_zeros(())}
        g_loss = generator_loss(disc(fake), "hinge")
        last = self.sd.vae.vae.decoder.conv_out.weight
        weight = adaptive_weight(nll, g_loss, last) if nll.requires_grad and last.requires_grad else g_loss.new_zeros(())
        return {"nll": nll, "gan": 0.5 * factor * weight * g_loss}

    def discriminator_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Hinge loss, HR real and the decoded one-step output fake; the official weight 0.5 (v2 ``--lambda_disc_train``,
        v1 LDM's ``hinge_d_loss``) is the GAN schedule's ``disc_loss_weight``."""
        from ...losses.gan import discriminator_loss

        disc = self._require_disc()
        with torch.no_grad():
            fake = self.sd.vae.decode(self._one_step_latent(batch["lr"]))
        return {"discriminator": discriminator_loss(disc(batch["hr"] * 2 - 1), disc(fake), "hinge")}
