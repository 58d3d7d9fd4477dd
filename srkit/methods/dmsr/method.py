"""DM-SR (ICLR 2026): map the LR image into the noisy-latent distribution of a frozen SD-Turbo.

Inference (Sec. 3.1-3.3, 4.4): I_LR is the LR image bicubic-upsampled x4 (the paper's I_LR is the
512² bicubic upsampling of a 128² patch); the timestep estimator T predicts t̂ from I_LR (Eq. (10));
the timestep-aware encoder E_θ maps (I_LR, t̂) to X_SR^t̂; the frozen UNet with the fixed prompt of
footnote 1 splits it into noise ε_SR = μ_ψ(X_SR^t̂, t̂) and image Z_SR (Eq. (2)); the VAE decoder
gives I_SR. With N > 1 steps (Sec. 4.4) the visited timesteps are spaced linearly from t̂ down
(``round(t̂ (N - i) / N)``, the sampler's partial-chain spacing) and every later input is
sqrt(ᾱ) Z + sqrt(1 - ᾱ) ε_SR: DDIM without noise injection, reusing the first ε_SR. Inference is
deterministic, so ``seed`` has no effect. Each sample of a batch has its own t̂ and schedule.

Training (Sec. 3.4-3.5, App. A.2) has two stages (``stage``): ``"estimator"`` trains T alone to
regress the normalised LR-HR distance (LPIPS; L1 or SSIM as in Table 5) with a squared error;
``"encoder"`` trains E_θ with T frozen: λ_L1 L1 + λ_per latent LPIPS + λ_adv L_adv (the
LR-conditional ControlNet discriminator, Eq. (4)-(5)) on Z_SR vs X_HR^0, λ_dm L_dm (Eq. (6)-(7)) and
λ_ε L_ε (Eq. (8)); the UNet and VAE stay frozen and gradients pass through the UNet into E_θ.

No official code or weights exist. ``dmsr_weights`` names a file written by :meth:`DMSR.save_weights`
(``estimator.*`` and ``encoder.*`` tensors), ``"init"`` for the paper's training initialisation (E_θ
from the SD VAE encoder, T's backbone from torchvision's ImageNet VGG19), or ``"synthetic"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import registry
from ...backends.sd import StableDiffusion
from ...diffusion import Chain, DiffusionMethod, MeanCorrectionHook, NoiseHook, StartState, TimestepProvider
from ...errors import ConfigError, UnsupportedError
from ...ops.resize import bicubic_upsample
from ...samplers.ddpm import DDPMSampler
from ...types import Denoiser
from ...weights import companion, load_weights, resolve_weights
from . import DESCRIPTOR
from .hooks import EncodedStart, EstimatedTimesteps, ReusedNoise
from .modules import NUM_BINS, VGG19_CHANNELS, TimestepAwareEncoder, TimestepEstimator

__all__ = ["DMSR", "LOSS_WEIGHTS", "PROMPT"]

PROMPT = "High-quality, high-contrast, photo-realistic, clean, sharp, highly-detailed, perfect, 8k, ultra HD"  # footnote 1
LOSS_WEIGHTS = {"l1": 1.0, "lpips_latent": 2.0, "gan": 0.1, "dm": 0.5, "noise": 1.0}  # Eq. (3), (9); App. A.2
DM_TIMESTEPS = (1, 500)  # L_dm's expectation over t ∈ [1, 500] (Eq. (7))
Stage = Literal["encoder", "estimator"]
TimestepTarget = Literal["lpips", "l1", "ssim"]


class DMSR(DiffusionMethod):
    """DM-SR x4 on SD-Turbo; see the module docstring.

    ``weights``: SD-Turbo (see :class:`srkit.backends.sd.StableDiffusion`); ``"synthetic"`` also makes
    every other unspecified weight synthetic. ``backend_config`` is merged into
    ``conf/backend/sd_turbo.yaml`` (e.g. smaller ``vae``/``unet`` for tests), ``estimator_channels``
    sets T's VGG19 widths. ``sampler`` supplies the noise schedule (default: DDPM with ``renoise``, the
    reuse loop of Sec. 4.4; ``conf/sampler/renoise.yaml``); the knobs ``start_t`` (a fixed t instead of t̂,
    Table 3) and ``timesteps`` (an explicit schedule) replace the ``timesteps`` hook (default
    :class:`~.hooks.EstimatedTimesteps`); ``start_state`` (:class:`~.hooks.EncodedStart`) and ``noise``
    (:class:`~.hooks.ReusedNoise`) are DM-SR's too. ``for_training`` builds the loss networks of ``stage``: ``latent_lpips_weights``
    (InvSR's ``vgg16_sdturbo_lpips.pth``), ``discriminator`` (keyword arguments of
    :class:`srkit.losses.discriminators.ControlNetDiscriminator`), and for the estimator stage
    ``timestep_target`` scaled by ``timestep_scale`` and clamped to [0, 499] (``lpips_net`` /
    ``lpips_weights``: the pixel LPIPS backbone). A ``loss_weights`` entry of 0 drops that term.
    """

    descriptor = DESCRIPTOR
    sampler_type = DDPMSampler
    method_knobs = ("prompt",)
    compiled_networks = ("sd.unet",)  # the estimator and encoder run once per image

    def __init__(
        self,
        weights: str | None = None,
        dmsr_weights: str | None = None,
        vgg_weights: str | None = None,
        backend_config: Mapping[str, Any] | None = None,
        estimator_channels: Sequence[int] = VGG19_CHANNELS,
        prompt: str = PROMPT,
        sampler: DDPMSampler | None = None,
        stage: Stage = "encoder",
        for_training: bool = False,
        loss_weights: Mapping[str, float] | None = None,
        latent_lpips_weights: str | None = None,
        discriminator: Mapping[str, Any] | None = None,
        gan_kind: Literal["vanilla", "hinge"] = "vanilla",
        timestep_target: TimestepTarget = "lpips",
        timestep_scale: float = 500.0,
        lpips_net: Literal["alex", "vgg"] = "alex",
        lpips_weights: str | None = None,
        timesteps: TimestepProvider | None = None,
        start_state: StartState | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
    ):
        sampler = sampler if sampler is not None else DDPMSampler(renoise=True)
        super().__init__(4, sampler=sampler, timesteps=timesteps if timesteps is not None else EstimatedTimesteps(),
                         start_state=start_state if start_state is not None else EncodedStart(),
                         noise=noise if noise is not None else ReusedNoise(), mean_correction=mean_correction)
        if stage not in ("encoder", "estimator"):
            raise ConfigError(f"dmsr stage must be 'encoder' or 'estimator', got {stage!r}")
        if timestep_target not in ("lpips", "l1", "ssim"):
            raise ConfigError(f"timestep_target must be lpips, l1 or ssim (Table 5), got {timestep_target!r}")
        unknown = sorted(set(loss_weights or {}) - set(LOSS_WEIGHTS))
        if unknown:
            raise ConfigError(f"unknown dmsr loss weights {unknown}; the terms are {', '.join(LOSS_WEIGHTS)}")

        self.sd = StableDiffusion(**registry.backend_config("sd_turbo", backend_config, prompt=prompt, weights=weights))
        if self.sampler.prediction_type != "epsilon":
            raise ConfigError("DM-SR's decomposition (Eq. (2)) needs an epsilon-predicting UNet: set sampler.prediction_type=epsilon")
        init = self._init = dmsr_weights is not None and str(dmsr_weights) == "init"
        self.estimator = TimestepEstimator(estimator_channels, backbone_weights=companion(vgg_weights, weights) if init else "none")
        self.encoder = TimestepAwareEncoder(self.sd.vae.vae)
        self._load_trained(companion(dmsr_weights, weights), init)
        self.requires_grad_(False)

        self.stage, self.for_training, self.gan_kind = stage, for_training, gan_kind
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        self.timestep_target, self.timestep_scale = timestep_target, float(timestep_scale)
        self.disc: nn.Module | None = None
        if for_training:
            self._build_losses(companion(latent_lpips_weights, weights), discriminator, lpips_net, companion(lpips_weights, weights))

    # ------------------------------------------------------------------ weights

    def _trained(self) -> nn.ModuleDict:
        return nn.ModuleDict({"estimator": self.estimator, "encoder": self.encoder})

    def _load_trained(self, spec: str | None, init: bool) -> None:
        if init:
            return
        load_weights(self._trained(), resolve_weights(self.descriptor, "dmsr", spec), what="DM-SR estimator and encoder")

    def prior_loaded(self) -> None:
        """``dmsr_weights="init"``: E_θ starts as the VAE encoder now loaded (Sec. 3.2), its t̂ layers still zero."""
        if self._init:
            self.encoder.encoder.load_state_dict(self.sd.vae.vae.encoder.state_dict())
            if self.encoder.quant_conv is not None:
                self.encoder.quant_conv.load_state_dict(self.sd.vae.vae.quant_conv.state_dict())

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Write T and E_θ (``estimator.*``, ``encoder.*``) as safetensors, the file ``dmsr_weights`` reads."""
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in self._trained().state_dict().items()}, str(path))

    def _build_losses(self, latent_lpips: str | None, discriminator: Mapping[str, Any] | None, lpips_net: str,
                      lpips_weights: str | None) -> None:
        from ...losses.composer import AdversarialTerm, LossComposer
        from ...losses.discriminators import ControlNetDiscriminator
        from ...losses.lpips import LatentLPIPS, PixelLPIPS

        if self.stage == "estimator":
            if self.timestep_target == "lpips":
                self.pixel_lpips = PixelLPIPS(lpips_net, backbone_weights=lpips_weights)  # type: ignore[arg-type]
            return
        weights = {k: self.loss_weights[k] for k in ("l1", "lpips_latent") if self.loss_weights[k]}
        modules = {"lpips_latent": LatentLPIPS(self.sd.vae.latent_channels, weights=latent_lpips)} if "lpips_latent" in weights else {}
        self.image_loss = LossComposer(weights, modules) if weights else None
        self.adversarial: LossComposer | None = None
        if self.loss_weights["gan"]:  # Eq. (5), conditioned on I_LR
            self.disc = ControlNetDiscriminator(in_channels=self.sd.vae.latent_channels, **dict(discriminator or {}))
            self.adversarial = LossComposer({"gan": self.loss_weights["gan"]}, {"gan": AdversarialTerm(self.disc, self.gan_kind)})

    # ------------------------------------------------------------------ the model

    def eps(self, x_t: Tensor, t: int | Tensor, context: Tensor) -> Tensor:
        """μ_ψ(x_t, t): the frozen UNet's noise prediction, conditioned on a prompt embedding."""
        return self.sd.unet(x_t, t, encoder_hidden_states=context.expand(x_t.shape[0], -1, -1)).sample

    def upsample(self, lr: Tensor) -> Tensor:
        """I_LR: the LR image in [0, 1] bicubic-upsampled x4 (the paper's 512² from a 128² patch)."""
        return bicubic_upsample(lr, self.scale).clamp(0, 1)

    def estimate(self, i_lr: Tensor) -> Tensor:
        """t̂ (B,) as the integer the UNet takes (Eq. (10), rounded)."""
        return self.estimator(i_lr).round().long().clamp(0, NUM_BINS - 1)

    def encode(self, i_lr: Tensor, t: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """X_SR^t (E_θ), ε_SR and Z_SR (Eq. (2): the image part, the sampler's x0 of an ε prediction) of I_LR in
        [0, 1] at timesteps ``t`` (B,)."""
        x_sr = self.encoder(i_lr * 2 - 1, t)
        eps_sr = self.eps(x_sr, t, context)
        return x_sr, eps_sr, self.sampler.predict_x0(eps_sr, x_sr, t)

    def condition(self, lr: Tensor, generator: torch.Generator | None, *, prompt: str | None = None, **knobs: Any) -> Chain:
        """I_LR and the prompt embedding (footnote 1's unless ``prompt``); the chain starts from the encoder, so it
        has no prior mean. Inference is deterministic: ``seed`` has no effect."""
        return Chain(lr, None, generator, {"i_lr": self.upsample(lr), "context": self.sd.prompt_embedding(prompt)})

    def denoiser(self, chain: Chain) -> Denoiser:
        """Z = Eq. (2) of the UNet's ε; the first ε is ε_SR, kept for :class:`~.hooks.ReusedNoise`."""
        context = chain.extras["context"]

        def denoise(x_t: Tensor, t: int) -> Tensor:
            eps = self.eps(x_t, t, context)
            chain.extras.setdefault("eps_sr", eps)
            return self.sampler.predict_x0(eps, x_t, t)

        return denoise

    def decode(self, z_0: Tensor, chain: Chain) -> Tensor:
        return self.decode_latents(self.sd.vae, z_0).clamp(-1, 1) * 0.5 + 0.5

    # ------------------------------------------------------------------ training

    def learned_modules(self) -> dict[str, nn.Module]:
        return {"estimator": self.estimator} if self.stage == "estimator" else {"encoder": self.encoder}

    def trainable_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return self.learned_modules()

    def discriminator_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return {"discriminator": self.disc} if self.disc is not None else {}

    def _check_training(self) -> None:
        if not self.for_training:
            raise UnsupportedError("this dmsr model was built for inference; build it with for_training=True to train")

    def timestep_target_of(self, i_lr: Tensor, hr: Tensor) -> Tensor:
        """The ground-truth timestep (Sec. 3.1, Table 5): the I_LR-I_HR distance times ``timestep_scale``."""
        from ...metrics.fidelity import ssim

        with torch.no_grad():
            if self.timestep_target == "lpips":
                distance = self.pixel_lpips(i_lr, hr)
            elif self.timestep_target == "l1":
                distance = (i_lr - hr).abs().mean(dim=(1, 2, 3))
            else:
                distance = 1 - ssim(i_lr, hr, crop_border=0)
        return (distance.to(i_lr.dtype) * self.timestep_scale).clamp(0, NUM_BINS - 1)

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self._check_training()
        i_lr, hr = self.upsample(batch["lr"]), batch["hr"]
        if self.stage == "estimator":
            return {"timestep": F.mse_loss(self.estimator(i_lr), self.timestep_target_of(i_lr, hr))}
        context = self.sd.prompt_embedding()
        with torch.no_grad():
            t_hat = self.estimate(i_lr)
            x_hr = self.sd.vae.encode(hr * 2 - 1)  # X_HR^0
        _, eps_sr, z_sr = self.encode(i_lr, t_hat, context)
        terms = self.image_loss(z_sr, x_hr) if self.image_loss is not None else {}  # Eq. (3): L1, latent LPIPS
        if self.adversarial is not None:  # times the trainer's GAN factor (DM-SR's paper: no delayed start)
            from ...losses.gan import gan_factor

            factor = gan_factor(batch)
            if factor:
                terms.update({k: factor * v for k, v in self.adversarial(z_sr, x_hr, lr=i_lr).items()})
            else:
                terms["gan"] = z_sr.new_zeros(())

        def eps_model(x: Tensor, t: Tensor) -> Tensor:
            return self.eps(x, t, context)

        def alpha_bar(t: Tensor) -> Tensor:
            return self.sampler.alpha_bar(t, z_sr)

        from ...losses.distribution import distribution_matching_loss, noise_loss

        if self.loss_weights["dm"]:
            t = torch.randint(DM_TIMESTEPS[0], DM_TIMESTEPS[1] + 1, (z_sr.shape[0],), device=z_sr.device)
            noise = torch.randn_like(z_sr)  # shared by both latents (Eq. (6))
            terms["dm"] = self.loss_weights["dm"] * distribution_matching_loss(eps_model, alpha_bar, z_sr, x_hr, t, noise)
        if self.loss_weights["noise"]:
            terms["noise"] = self.loss_weights["noise"] * noise_loss(eps_model, alpha_bar, eps_sr, x_hr, t_hat)
        return terms

    def discriminator_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (4): D_ϕ(X_HR^0, I_LR) real, D_ϕ(Z_SR, I_LR) fake (Z_SR recomputed without gradients)."""
        from ...losses.gan import discriminator_loss

        if self.disc is None:
            raise UnsupportedError("this dmsr model has no discriminator (stage 'estimator' or loss weight gan=0)")
        i_lr = self.upsample(batch["lr"])
        with torch.no_grad():
            x_hr = self.sd.vae.encode(batch["hr"] * 2 - 1)
            z_sr = self.encode(i_lr, self.estimate(i_lr), self.sd.prompt_embedding())[2]
        return {"discriminator": discriminator_loss(self.disc(x_hr, i_lr), self.disc(z_sr, i_lr), self.gan_kind)}
