"""InvSR (CVPR 2025): arbitrary-step SR by inverting SD-Turbo with a learned start-noise predictor.

Inference (Alg. 1): z_LR is the SD VAE encoding (a posterior sample) of the x4 bicubic-upsampled LR;
the noise predictor f_w sees the *non-upsampled* LR and the first visited timestep; the start state
is Eq. (8), computed in the official sigma form ``z_LR + sigma_t f_w`` (diffusers' Euler
``add_noise``) and converted to the VP state ``sqrt(abar_t) (z_LR + sigma_t f_w)``, which equals
``sqrt(abar_t) z_LR + sqrt(1 - abar_t) f_w``. The reverse chain of Alg. 1 then runs on
:class:`~srkit.samplers.ddpm.DDPMSampler` with the x0 prediction of Eq. (9) from the frozen UNet.

Sampler: ``eta=1`` (the default) is Alg. 1 with a random z at every step (the DDPM posterior of the
respaced chain), as the issue asks; ``eta=0`` is the official code's Euler sampler (deterministic
after the start state). With one step both are the same.

Timesteps: the official table by step count (``STEP_TABLE``), or ``sampler.start_t`` in
{250, 200, 150, 100} (the start steps the predictor was trained for, Sec. 3.2.3) spaced down to 0, or
an explicit ``sampler.timesteps`` list; every list is in the paper's numbering and shifted by -1 as the
official ``retrieve_timesteps`` does (200 -> 199), and the predictor sees the shifted value.

Beyond the paper: ``start_t="auto"`` picks the start step per batch from DM-SR's timestep estimator
(``start_estimator``: a file written by :meth:`srkit.methods.dmsr.DMSR.save_weights`): its t̂, which
measures how far the LR is from the HR, snapped to the nearest step the predictor was trained for.

Tiling: :meth:`SRMethod.sr` (``tile=``) blends tiles with srkit's smooth window; the official code
chops 128-px LR tiles at 50 % stride with Gaussian weights (sigma ~77 HR px) — the overlaps and
window differ, so tiled outputs are close to but not equal to the official ones.

Training (Sec. 3.2.3): only f_w is trained. A start step t is drawn from S = {250, 200, 150, 100},
x_t = sqrt(abar_t) z_LR + sqrt(1 - abar_t) f_w(LR, t) (Eq. (10)), one UNet step gives x0 (Eq. (9)),
and Eq. (11) = L2 + 2.0 latent LPIPS + 0.1 hinge GAN (a UNet discriminator) against the HR latent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backends.invsr_noise_predictor import InvSRNoisePredictor
from ..backends.sd import StableDiffusion, sd_config
from ..catalog import INVSR as INVSR_DESCRIPTOR
from ..errors import ConfigError, UnsupportedError
from ..ops.color import ColorFix
from ..samplers.ddpm import DDPMSampler
from ..types import SRMethod
from ..weights import companion

__all__ = ["LOSS_WEIGHTS", "PROMPT", "START_STEPS", "STEP_TABLE", "InvSR"]

PROMPT = ("Cinematic, high-contrast, photo-realistic, 8k, ultra HD, meticulous detailing, hyper sharpness, "
          "perfect without deformations")  # the official inference prompt
STEP_TABLE = {1: (200,), 2: (200, 100), 3: (200, 100, 50), 4: (200, 150, 100, 50), 5: (250, 200, 150, 100, 50)}
START_STEPS = (250, 200, 150, 100)  # S of Sec. 3.2.3: the start steps the predictor is trained for
LOSS_WEIGHTS = {"l2": 1.0, "lpips_latent": 2.0, "gan": 0.1}  # Eq. (11)


def upsample(lr: Tensor, scale: int = 4) -> Tensor:
    """The x4 bicubic upsampling of the LR in [0, 1] (the VAE's input)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


class InvSR(SRMethod):
    """InvSR x4 on SD-Turbo; see the module docstring.

    ``steps``: the default step count of :meth:`sr` (1-5, the official timestep table).
    ``weights``: SD-Turbo (see :class:`srkit.backends.sd.StableDiffusion`); ``"synthetic"`` also makes
    an unspecified ``predictor_weights`` synthetic. ``backend_config`` is merged into
    ``conf/backend/sd_turbo.yaml``, ``predictor`` into the noise predictor's arguments (e.g. smaller
    widths for tests). ``color_fix``: none (official default) or wavelet/adain/ycbcr.
    ``for_training`` builds Eq. (11)'s loss networks: ``latent_lpips_weights`` and ``discriminator``
    (keyword arguments of :class:`srkit.losses.discriminators.UNetDiscriminator`).
    """

    descriptor = INVSR_DESCRIPTOR

    def __init__(
        self,
        steps: int = 1,
        weights: str | None = None,
        predictor_weights: str | None = None,
        backend_config: Mapping[str, Any] | None = None,
        predictor: Mapping[str, Any] | None = None,
        prompt: str = PROMPT,
        sampler: DDPMSampler | None = None,
        color_fix: ColorFix = "none",
        for_training: bool = False,
        loss_weights: Mapping[str, float] | None = None,
        latent_lpips_weights: str | None = None,
        discriminator: Mapping[str, Any] | None = None,
        start_steps: tuple[int, ...] = START_STEPS,
        start_estimator: str | None = None,
        estimator_channels: tuple[int, ...] | None = None,
    ):
        super().__init__(scale=4, color_fix=color_fix)
        self.steps = self._check_steps(steps)
        unknown = sorted(set(loss_weights or {}) - set(LOSS_WEIGHTS))
        if unknown:
            raise ConfigError(f"unknown invsr loss weights {unknown}; the terms are {', '.join(LOSS_WEIGHTS)}")

        self.sd = StableDiffusion(**sd_config("sd_turbo", backend_config, prompt=prompt, weights=weights))
        self.predictor = InvSRNoisePredictor(**{**dict(predictor or {}), "weights": companion(predictor_weights, weights)})
        self.sampler = sampler if sampler is not None else DDPMSampler()
        if self.sampler.prediction_type != "epsilon":
            raise ConfigError("SD-Turbo predicts noise (Eq. (9)): set sampler.prediction_type=epsilon")
        self.start_steps = tuple(int(t) for t in start_steps)
        self.start_estimator = None if start_estimator is None else _load_estimator(start_estimator, estimator_channels)
        self.requires_grad_(False)
        self.for_training = for_training
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        self.disc: nn.Module | None = None
        if for_training:
            self._build_losses(companion(latent_lpips_weights, weights), discriminator)

    def _build_losses(self, latent_lpips: str | None, discriminator: Mapping[str, Any] | None) -> None:
        from ..losses.composer import AdversarialTerm, LossComposer
        from ..losses.discriminators import UNetDiscriminator
        from ..losses.lpips import LatentLPIPS

        weights = {"l2": self.loss_weights["l2"], "lpips_latent": self.loss_weights["lpips_latent"]}
        modules: dict[str, nn.Module] = {}
        if weights["lpips_latent"]:
            modules["lpips_latent"] = LatentLPIPS(self.sd.vae.latent_channels, weights=latent_lpips)
        if self.loss_weights["gan"]:
            self.disc = UNetDiscriminator(in_channels=self.sd.vae.latent_channels, **dict(discriminator or {}))
            weights["gan"] = self.loss_weights["gan"]
            modules["gan"] = AdversarialTerm(self.disc, "hinge")
        self.loss = LossComposer({k: v for k, v in weights.items() if v}, modules)

    # ------------------------------------------------------------------ the model

    def _check_steps(self, steps: int | None) -> int | None:
        """``sr(steps=None)`` uses the configured ``steps`` (``method.steps``) instead of the catalog default."""
        return super()._check_steps(getattr(self, "steps", None) if steps is None else steps)

    def timesteps(self, steps: int, start_t: int | None = None, timesteps: list[int] | None = None) -> list[int]:
        """The visited timesteps in the official (shifted by -1) numbering, e.g. 3 steps -> [199, 99, 49].

        ``timesteps`` (paper numbering, e.g. a Table 1 row) wins over the sampler's list, then ``start_t``.
        """
        if timesteps is not None:
            paper = self.sampler.timesteps(timesteps=timesteps)
        elif self.sampler.fixed_timesteps is not None:
            paper = list(self.sampler.fixed_timesteps)
        elif start_t is None:
            paper = list(STEP_TABLE[steps])
        else:
            if start_t not in self.start_steps:
                raise ConfigError(f"the InvSR noise predictor is trained for start_t in {list(self.start_steps)}, got {start_t}")
            paper = self.sampler.timesteps(steps, start_t=start_t)
        if paper[-1] < 1:
            raise ConfigError(f"InvSR timesteps (paper numbering) must be >= 1, got {paper}")
        return [t - 1 for t in paper]

    def auto_start_t(self, lr: Tensor) -> int:
        """DM-SR's t̂ of the batch snapped to the nearest trained start step (``start_t="auto"``)."""
        from .dmsr import estimate_start_t

        if self.start_estimator is None:
            raise ConfigError("start_t='auto' needs DM-SR's timestep estimator: build invsr with "
                              "start_estimator=<file written by DMSR.save_weights> (or 'synthetic' for tests)")
        t_hat = estimate_start_t(self.start_estimator, lr, scale=self.scale)
        return min(self.start_steps, key=lambda t: (abs(t - t_hat), t))

    def latent_lr(self, lr: Tensor, generator: torch.Generator | None) -> Tensor:
        """z_LR: a VAE posterior sample of the upsampled LR (scaled latent)."""
        return self.sd.vae.encode(upsample(lr, self.scale) * 2 - 1, sample=True, generator=generator)

    def start_state(self, lr: Tensor, z_lr: Tensor, t: int, generator: torch.Generator | None) -> Tensor:
        """Eq. (8) in the official sigma form: sqrt(abar_t) (z_LR + sigma_t f_w(LR, t))."""
        noise = self.predictor(lr, t, generator=generator)
        return self.sampler.alpha_bar(t, z_lr).sqrt() * (z_lr + self.sampler.sigma(t) * noise)

    def x0(self, x_t: Tensor, t: int | Tensor, context: Tensor) -> Tensor:
        """Eq. (9): the frozen UNet's x0 prediction at timestep ``t`` (an int, or one per sample)."""
        eps = self.sd.unet(x_t, t, encoder_hidden_states=context.expand(x_t.shape[0], -1, -1)).sample
        return self.sampler.predict_x0(eps, x_t, t)

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        start_t, prompt = knobs.pop("start_t", self.sampler.start_t), knobs.pop("prompt", None)
        explicit = knobs.pop("timesteps", None)
        if knobs:
            raise UnsupportedError(f"invsr has no options {sorted(knobs)}; it takes steps=, start_t=, timesteps= and prompt=")
        if start_t == "auto":
            start_t = self.auto_start_t(lr)
        ts = self.timesteps(steps or 1, start_t, explicit)
        context = self.sd.prompt_embedding(prompt)
        z_lr = self.latent_lr(lr, generator)
        x_start = self.start_state(lr, z_lr, ts[0], generator)
        z = self.sampler.sample(lambda x, t: self.x0(x, t, context), z_lr, generator=generator, x_start=x_start,
                                timesteps=ts)
        return self.decode_latents(self.sd.vae, z).clamp(-1, 1) * 0.5 + 0.5

    # ------------------------------------------------------------------ training (Sec. 3.2.3)

    def trainable_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return {"predictor": self.predictor}

    def discriminator_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return {"discriminator": self.disc} if self.disc is not None else {}

    def _check_training(self) -> None:
        if not self.for_training:
            raise UnsupportedError("this invsr model was built for inference; build it with for_training=True to train")

    def _predict_hr_latent(self, lr: Tensor) -> Tensor:
        """One training sample of x0: a start step from S, Eq. (10) with f_w, one UNet step (Eq. (9))."""
        with torch.no_grad():
            z_lr = self.latent_lr(lr, None)
        index = torch.randint(len(self.start_steps), (lr.shape[0],), device=lr.device)
        t = torch.tensor(self.start_steps, device=lr.device)[index] - 1
        x_t = self.sampler.q_sample(z_lr, t, self.predictor(lr, t))  # Eq. (10)
        return self.x0(x_t, t, self.sd.prompt_embedding())

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (11) in latent space: L2 + 2.0 latent LPIPS + 0.1 hinge GAN."""
        self._check_training()
        with torch.no_grad():
            z_hr = self.sd.vae.encode(batch["hr"] * 2 - 1)
        return self.loss(self._predict_hr_latent(batch["lr"]), z_hr)

    def discriminator_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Hinge loss of the UNet discriminator: HR latent real, predicted latent fake."""
        from ..losses.gan import discriminator_loss

        if self.disc is None:
            raise UnsupportedError("this invsr model has no discriminator (loss weight gan=0)")
        with torch.no_grad():
            z_hr = self.sd.vae.encode(batch["hr"] * 2 - 1)
            fake = self._predict_hr_latent(batch["lr"])
        return {"discriminator": discriminator_loss(self.disc(z_hr), self.disc(fake), "hinge")}


def _load_estimator(spec: str, channels: tuple[int, ...] | None) -> nn.Module:
    """DM-SR's timestep estimator T from a DM-SR weights file (its ``estimator.*`` tensors) or ``"synthetic"``."""
    from ..backends.dmsr_modules import VGG19_CHANNELS, TimestepEstimator
    from ..weights import SYNTHETIC, load_state_dict, load_state_dict_strict, synthetic_state_dict
    from .dmsr import DMSR_FILE

    estimator = TimestepEstimator(tuple(channels or VGG19_CHANNELS), backbone_weights="none")
    if str(spec) == SYNTHETIC:
        estimator.load_state_dict(synthetic_state_dict(estimator))
    else:
        state = load_state_dict(spec, filename=DMSR_FILE, what="DM-SR timestep estimator")
        prefix = "estimator."
        load_state_dict_strict(estimator, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                               source=f"DM-SR timestep estimator ({spec})")
    return estimator.requires_grad_(False)
