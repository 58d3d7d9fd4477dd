"""InvSR (CVPR 2025): arbitrary-step SR by inverting SD-Turbo with a learned start-noise predictor.

Inference (Alg. 1): z_LR is the SD VAE encoding (a posterior sample) of the x4 bicubic-upsampled LR;
the noise predictor f_w sees the *non-upsampled* LR and the first visited timestep; the start state
is Eq. (8), computed in the official sigma form ``z_LR + sigma_t f_w`` (diffusers' Euler
``add_noise``) and converted to the VP state ``sqrt(abar_t) (z_LR + sigma_t f_w)``, which equals
``sqrt(abar_t) z_LR + sqrt(1 - abar_t) f_w``. The reverse chain of Alg. 1 then runs on
:class:`~srkit.samplers.ddpm.DDPMSampler` with the x0 prediction of Eq. (9) from the frozen UNet.

Sampler: ``eta=0`` (the default, ``conf/sampler/ddim.yaml``) is the official code's Euler sampler (deterministic
after the start state), with which the paper's numbers were measured; ``eta=1`` is Alg. 1 with a random z at every
step (the DDPM posterior of the respaced chain). With one step both are the same.

Timesteps: the official table by step count (the ``timesteps`` hook :class:`~srkit.diffusion.StepTable` of
:data:`STEP_TABLE`), or ``start_t`` in {250, 200, 150, 100} (the start steps the predictor was trained for,
Sec. 3.2.3; a knob or ``sampler.start_t``) spaced down to 0, or an explicit ``timesteps`` list; every list is in
the paper's numbering and shifted by -1 as the official ``retrieve_timesteps`` does (200 -> 199), and the
predictor sees the shifted value.

Beyond the paper, by config alone: the ``timesteps`` hook ``srkit.methods.dmsr.hooks.EstimatedStart`` (a DM-SR
weights file) picks the start step per batch from DM-SR's timestep estimator: its t̂, which measures how far the
LR is from the HR, snapped to the nearest step the predictor was trained for.

Tiling: :meth:`SRMethod.sr` (``tile=``) blends tiles with srkit's smooth window; the official code
chops 128-px LR tiles at 50 % stride with Gaussian weights (sigma ~77 HR px) — the overlaps and
window differ, so tiled outputs are close to but not equal to the official ones.

Training (Sec. 3.2.3): only f_w is trained. A start step t is drawn from S = {250, 200, 150, 100},
x_t = sqrt(abar_t) z_LR + sqrt(1 - abar_t) f_w(LR, t) (Eq. (10)), one UNet step gives x0 (Eq. (9)),
and Eq. (11) = L2 + 2.0 latent LPIPS + 0.1 hinge GAN (a UNet discriminator) against the HR latent. As the official
``trainer.py``, the discriminator sees the (shifted) start timestep t and the prompt embedding, for the HR latent
and for x0, and x0 clamped to +-10 (:data:`LATENT_BOUND`). The GAN schedule (start of the generator's GAN term,
the discriminator's loss weight and LR) is the trainer's (``conf/train/invsr.yaml``, key ``gan``).

Training the prior itself (not in the paper, which takes SD-Turbo as given; the mini zoo trains a small one):
``stage="vae"`` trains the SD VAE on the HR images with LDM's AutoencoderKL objective
(:meth:`~srkit.backends.sd.StableDiffusion.vae_losses`: L1 + 1e-6 KL), ``stage="unet"`` the UNet on the frozen
VAE's latents of the HR images with SD's denoising objective, conditioned on the fixed prompt
(:meth:`~srkit.backends.sd.StableDiffusion.unet_losses`: eps-MSE over all 1000 steps). SD-Turbo itself was
distilled from SD 2.1 adversarially (ADD); a prior trained this way is an SD 2.1-style prior of the same
architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ... import registry
from ...backends.sd import UNET_LOSS_WEIGHTS, VAE_LOSS_WEIGHTS, StableDiffusion
from ...diffusion import Chain, DiffusionMethod, MeanCorrectionHook, NoiseHook, StartState, StepTable, TimestepProvider
from ...errors import ConfigError, UnsupportedError
from ...ops.resize import bicubic_upsample
from ...samplers.ddpm import DDPMSampler
from ...types import Denoiser, Sampler
from ...weights import companion
from . import DESCRIPTOR
from .noise_predictor import InvSRNoisePredictor

__all__ = ["LATENT_BOUND", "LOSS_WEIGHTS", "PROMPT", "STAGE_LOSS_WEIGHTS", "START_STEPS", "STEP_TABLE", "InvSR",
           "PredictedStart"]

PROMPT = ("Cinematic, high-contrast, photo-realistic, 8k, ultra HD, meticulous detailing, hyper sharpness, "
          "perfect without deformations")  # the official inference prompt
STEP_TABLE = {1: (200,), 2: (200, 100), 3: (200, 100, 50), 4: (200, 150, 100, 50), 5: (250, 200, 150, 100, 50)}
START_STEPS = (250, 200, 150, 100)  # S of Sec. 3.2.3: the start steps the predictor is trained for
LOSS_WEIGHTS = {"l2": 1.0, "lpips_latent": 2.0, "gan": 0.1}  # Eq. (11)
LATENT_BOUND = 10.0  # the official trainer clamps x0 to [-10, 10] before the discriminator (_Latent_bound)
# What each training stage learns, and its loss terms (see the module docstring).
STAGE_LOSS_WEIGHTS = {"predictor": LOSS_WEIGHTS, "vae": VAE_LOSS_WEIGHTS, "unet": UNET_LOSS_WEIGHTS}


class PredictedStart(StartState):
    """Eq. (8) in the official sigma form: sqrt(abar_t) (z_LR + sigma_t f_w(LR, t)), f_w the method's ``predictor``
    (a sample of its Gaussian, from the call's generator)."""

    def __call__(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, t: int, **knobs: Any) -> Tensor:
        predictor = getattr(method, "predictor", None)
        if not isinstance(predictor, InvSRNoisePredictor) or not isinstance(sampler, DDPMSampler) or chain.y is None:
            raise ConfigError(f"the PredictedStart hook needs InvSR's noise predictor and a DDPM-family sampler; "
                              f"{method.descriptor.name} with {type(sampler).__name__} has not")
        noise = predictor(chain.lr, t, generator=chain.generator)
        return sampler.alpha_bar(t, chain.y).sqrt() * (chain.y + sampler.sigma(t) * noise)


class InvSR(DiffusionMethod):
    """InvSR x4 on SD-Turbo; see the module docstring.

    ``weights``: SD-Turbo (see :class:`srkit.backends.sd.StableDiffusion`); ``"synthetic"`` also makes
    an unspecified ``predictor_weights`` synthetic. ``backend_config`` is merged into
    ``conf/backend/sd_turbo.yaml``, ``predictor_config`` into the noise predictor's arguments (e.g. smaller
    widths for tests). ``color_fix``: none (official default) or wavelet/adain/ycbcr.
    ``for_training`` builds the losses of ``stage``: ``"predictor"`` (the default) Eq. (11)'s loss networks,
    ``latent_lpips_weights`` and ``discriminator`` (keyword arguments of
    :class:`srkit.losses.discriminators.UNetDiscriminator`; conditioned on the prompt embedding by default,
    ``cross_attention_dim: null`` drops the prompt); ``"vae"`` or ``"unet"`` the prior's own objectives.
    Hooks (:mod:`srkit.diffusion`): ``timesteps`` (default: the official :data:`STEP_TABLE`; DM-SR's
    ``EstimatedStart`` picks the start step from the LR), ``start_state`` (default :class:`PredictedStart`),
    ``noise`` and ``mean_correction`` (none). ``sr()`` knobs: ``prompt``, the sampler's ``start_t`` (one of
    ``start_steps``) and ``timesteps`` (paper numbering).
    """

    descriptor = DESCRIPTOR
    sampler_type = DDPMSampler
    method_knobs = ("prompt",)
    compiled_networks = ("sd.unet",)  # the start-state predictor runs once per image
    timestep_offset = -1  # the official retrieve_timesteps visits 199 for the paper's 200

    def __init__(
        self,
        weights: str | None = None,
        predictor_weights: str | None = None,
        backend_config: Mapping[str, Any] | None = None,
        predictor_config: Mapping[str, Any] | None = None,
        prompt: str = PROMPT,
        sampler: DDPMSampler | None = None,
        color_fix: str = "none",
        for_training: bool = False,
        stage: str = "predictor",
        loss_weights: Mapping[str, float] | None = None,
        latent_lpips_weights: str | None = None,
        discriminator: Mapping[str, Any] | None = None,
        start_steps: tuple[int, ...] = START_STEPS,
        timesteps: TimestepProvider | None = None,
        start_state: StartState | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
    ):
        sampler = sampler if sampler is not None else DDPMSampler(eta=0.0)  # the official Euler sampler
        super().__init__(4, sampler=sampler, timesteps=timesteps if timesteps is not None else StepTable(STEP_TABLE),
                         start_state=start_state if start_state is not None else PredictedStart(), noise=noise,
                         mean_correction=mean_correction, color_fix=color_fix)
        if stage not in STAGE_LOSS_WEIGHTS:
            raise ConfigError(f"invsr stage must be one of {', '.join(STAGE_LOSS_WEIGHTS)}, got {stage!r}")
        defaults = STAGE_LOSS_WEIGHTS[stage]
        unknown = sorted(set(loss_weights or {}) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown invsr loss weights {unknown} for stage {stage!r}; its terms are {', '.join(defaults)}")
        if sampler.prediction_type != "epsilon":
            raise ConfigError("SD-Turbo predicts noise (Eq. (9)): set sampler.prediction_type=epsilon")

        self.sd = StableDiffusion(**registry.backend_config("sd_turbo", backend_config, prompt=prompt, weights=weights))
        self.predictor = InvSRNoisePredictor(**{**dict(predictor_config or {}), "weights": companion(predictor_weights, weights)})
        self.start_steps = tuple(int(t) for t in start_steps)
        self.requires_grad_(False)
        self.for_training, self.stage = for_training, stage
        self.loss_weights = {**defaults, **(loss_weights or {})}
        self.disc: nn.Module | None = None
        if for_training and stage == "predictor":
            self._build_losses(companion(latent_lpips_weights, weights), discriminator)

    def _build_losses(self, latent_lpips: str | None, discriminator: Mapping[str, Any] | None) -> None:
        from ...losses.composer import LossComposer
        from ...losses.discriminators import UNetDiscriminator
        from ...losses.lpips import LatentLPIPS

        weights = {"l2": self.loss_weights["l2"], "lpips_latent": self.loss_weights["lpips_latent"]}
        modules: dict[str, nn.Module] = {}
        if weights["lpips_latent"]:
            modules["lpips_latent"] = LatentLPIPS(self.sd.vae.latent_channels, weights=latent_lpips)
        if self.loss_weights["gan"]:  # official: conditioned on the timestep and the prompt embedding
            config = {"cross_attention_dim": self.sd.cross_attention_dim, **dict(discriminator or {})}
            self.disc = UNetDiscriminator(in_channels=self.sd.vae.latent_channels, **config)
        weights = {k: v for k, v in weights.items() if v}
        self.loss = LossComposer(weights, modules) if weights else None

    # ------------------------------------------------------------------ the model

    def schedule(self, chain: Chain, sampler: Sampler, steps: int | None, knobs: dict[str, dict[str, Any]]) -> Any:
        """The visited timesteps in the paper's numbering; a ``start_t`` must be one the predictor was trained for."""
        start_t = knobs["sampler"].get("start_t", getattr(sampler, "start_t", None))
        if start_t is not None and start_t not in self.start_steps:
            raise ConfigError(f"the InvSR noise predictor is trained for start_t in {list(self.start_steps)}, got {start_t}")
        paper = super().schedule(chain, sampler, steps, knobs)
        if min(paper) < 1:
            raise ConfigError(f"InvSR timesteps (paper numbering) must be >= 1, got {paper}")
        return paper

    def latent_lr(self, lr: Tensor, generator: torch.Generator | None) -> Tensor:
        """z_LR: a VAE posterior sample of the x4 bicubic upsampling of the LR (scaled latent)."""
        return self.sd.vae.encode(bicubic_upsample(lr, self.scale).clamp(0, 1) * 2 - 1, sample=True, generator=generator)

    def condition(self, lr: Tensor, generator: torch.Generator | None, *, prompt: str | None = None, **knobs: Any) -> Chain:
        """The chain's y is z_LR; the prompt embedding (the official prompt unless ``prompt``) is kept for the UNet."""
        return Chain(lr, self.latent_lr(lr, generator), generator, {"context": self.sd.prompt_embedding(prompt)})

    def x0(self, x_t: Tensor, t: int | Tensor, context: Tensor) -> Tensor:
        """Eq. (9): the frozen UNet's x0 prediction at timestep ``t`` (an int, or one per sample)."""
        eps = self.sd.unet(x_t, t, encoder_hidden_states=context.expand(x_t.shape[0], -1, -1)).sample
        return self.sampler.predict_x0(eps, x_t, t)

    def denoiser(self, chain: Chain) -> Denoiser:
        return lambda x_t, t: self.x0(x_t, t, chain.extras["context"])

    def decode(self, z_0: Tensor, chain: Chain) -> Tensor:
        return self.decode_latents(self.sd.vae, z_0).clamp(-1, 1) * 0.5 + 0.5

    # ------------------------------------------------------------------ training (Sec. 3.2.3)

    def learned_modules(self) -> dict[str, nn.Module]:
        return {"predictor": self.predictor}  # the frozen SD-Turbo is the prior, not learned

    def trainable_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return {"predictor": {"predictor": self.predictor}, "vae": {"vae": self.sd.vae.vae},
                "unet": {"unet": self.sd.unet}}[self.stage]

    def discriminator_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return {"discriminator": self.disc} if self.disc is not None else {}

    def _check_training(self) -> None:
        if not self.for_training:
            raise UnsupportedError("this invsr model was built for inference; build it with for_training=True to train")

    def _predict_hr_latent(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """One training sample of x0: a start step from S, Eq. (10) with f_w, one UNet step (Eq. (9)); returns x0 and
        the start timesteps t (B,) the UNet saw (the paper's minus 1, as the official trainer)."""
        with torch.no_grad():
            z_lr = self.latent_lr(lr, None)
        index = torch.randint(len(self.start_steps), (lr.shape[0],), device=lr.device)
        t = torch.tensor(self.start_steps, device=lr.device)[index] - 1
        x_t = self.sampler.q_sample(z_lr, t, self.predictor(lr, t))  # Eq. (10)
        return self.x0(x_t, t, self.sd.prompt_embedding()), t

    def discriminate(self, z: Tensor, t: Tensor, *, fake: bool) -> list[Tensor]:
        """The discriminator's logits of latent ``z`` at start timesteps ``t`` with the prompt embedding (official
        ``trainer.py``); a predicted (``fake``) latent is clamped to +-:data:`LATENT_BOUND` first."""
        if self.disc is None:
            raise UnsupportedError("this invsr model has no discriminator (loss weight gan=0)")
        if fake:
            z = z.clamp(-LATENT_BOUND, LATENT_BOUND)
        if not getattr(self.disc, "conditional", False):
            return self.disc(z, t)
        return self.disc(z, t, self.sd.prompt_embedding())

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (11) in latent space: L2 + 2.0 latent LPIPS + 0.1 hinge GAN, the GAN term times the schedule's
        ``batch["gan_factor"]`` (official: 0 for the first 10k iterations, conf/train/invsr.yaml); with ``stage``
        ``"vae"`` or ``"unet"``, the prior's objective on ``batch["hr"]``."""
        from ...losses.gan import gan_factor, generator_loss

        self._check_training()
        if self.stage == "vae":
            return self.sd.vae_losses(batch["hr"] * 2 - 1, self.loss_weights)
        if self.stage == "unet":
            with torch.no_grad():
                z_hr = self.sd.vae.encode(batch["hr"] * 2 - 1, sample=True)  # LDM trains on posterior samples
            return self.sd.unet_losses(z_hr, self.sampler, self.loss_weights)
        with torch.no_grad():
            z_hr = self.sd.vae.encode(batch["hr"] * 2 - 1)
        x0, t = self._predict_hr_latent(batch["lr"])
        terms = self.loss(x0, z_hr) if self.loss is not None else {}
        if self.disc is not None:
            factor = gan_factor(batch)
            weight = self.loss_weights["gan"] * factor
            terms["gan"] = weight * generator_loss(self.discriminate(x0, t, fake=True), "hinge") if factor else x0.new_zeros(())
        return terms

    def discriminator_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Hinge loss of the UNet discriminator: HR latent real, predicted latent fake (clamped), both at the fake's
        start timesteps with the prompt; the official halving is the GAN schedule's ``disc_loss_weight``."""
        from ...losses.gan import discriminator_loss

        if self.disc is None:
            raise UnsupportedError("this invsr model has no discriminator (loss weight gan=0)")
        with torch.no_grad():
            z_hr = self.sd.vae.encode(batch["hr"] * 2 - 1)
            fake, t = self._predict_hr_latent(batch["lr"])
        real_logits = self.discriminate(z_hr, t, fake=False)
        return {"discriminator": discriminator_loss(real_logits, self.discriminate(fake, t, fake=True), "hinge")}
