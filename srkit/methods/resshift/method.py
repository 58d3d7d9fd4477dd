"""ResShift (Yue et al., NeurIPS 2023 / TPAMI 2024): x4 SR by residual shifting in the VQ-f4 latent.

The pipeline is :class:`srkit.pipelines.residual_shift.ResidualShiftMethod` (which picks the released checkpoint
and its schedule by ``steps``) with no hook.

Releases: ``steps=4`` (v3, the default) or ``steps=15`` (v2); ``version="v1"`` picks the first 15-step release
(:data:`srkit.pipelines.residual_shift.RELEASES`).

Training, ``stage="denoiser"`` (journal config ``configs/realsr_swinunet_realesrgan256_journal.yaml``,
``TrainerDifIRLPIPS``; shared/facts/resshift-lpnsr.md sec. 1.3): the Swin-UNet alone, x0-prediction in the latent: t ~ U{0..T-1},
x_t ~ q(x_t | z_0, z_y) (Eq. (2)), loss = MSE(f(x_t, y_0, t), z_0) + LPIPS-VGG(decode(f), HR), weights [1.0, 1.0]
(``loss_weights``; LPIPS needs torchvision's VGG16 file, ``lpips_weights``, which cannot be downloaded here:
``lpips: 0`` trains on the latent MSE alone). The recipe's optimiser and schedule are ``conf/train/resshift.yaml``.

Training, ``stage="autoencoder"`` (the VQ-f4 first stage, LDM's ``VQModel`` with ``VQLPIPSWithDiscriminator``):
L1 + LPIPS reconstruction in [-1, 1] and the codebook loss of ``VectorQuantizer2`` (beta 0.25), the codebook set
from the first batch's latents (so that no code starts dead); LDM's discriminator is left out (it starts long
after a run of the zoo's length, conf/train/zoo-vq.yaml, would end).

Tiling differs from the official ``ImageSpliterTh`` on purpose: overlapping tiles are blended
smoothly by :func:`srkit.tiling.tiled_apply` instead of averaged uniformly; like the official code,
every tile draws its own noise (from the one seeded generator, in tile order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...diffusion import MeanCorrectionHook, NoiseHook
from ...errors import ConfigError, UnsupportedError
from ...pipelines.residual_shift import ResidualShiftMethod
from ...tiling import pad_to_multiple
from . import DESCRIPTOR

__all__ = ["LOSS_WEIGHTS", "ResShift"]

LOSS_WEIGHTS = {"mse": 1.0, "lpips": 1.0}  # TrainerDifIRLPIPS, loss_coef [1.0, 1.0]
# LDM VQLPIPSWithDiscriminator (codebook_weight 1.0, perceptual_weight 1.0) and VectorQuantizer2 (beta 0.25).
AUTOENCODER_LOSS_WEIGHTS = {"l1": 1.0, "lpips": 1.0, "codebook": 1.0}
COMMITMENT_BETA = 0.25
STAGES = ("denoiser", "autoencoder")


class ResShift(ResidualShiftMethod):
    """ResShift x4 real-world SR with the official Swin-UNet denoiser and VQ-f4 autoencoder: the residual-shift
    pipeline with no hook by default (``noise`` / ``mean_correction`` by config, e.g. PG-ResShift's guidance);
    ``sr()`` runs the checkpoint's T steps. ``for_training`` builds the losses of the module docstring for ``stage``:
    ``"denoiser"`` (the Swin-UNet) or ``"autoencoder"`` (the VQ-f4 first stage)."""

    descriptor = DESCRIPTOR

    def __init__(
        self,
        steps: int | None = None,
        weights: str | None = None,
        dtype: torch.dtype = torch.float32,
        unet_config: Mapping[str, Any] | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
        color_fix: str | None = None,
        for_training: bool = False,
        stage: str = "denoiser",
        loss_weights: Mapping[str, float] | None = None,
        lpips_weights: str | None = None,
        version: str | None = None,
    ):
        super().__init__(steps, weights, dtype, unet_config, autoencoder_config, noise=noise, mean_correction=mean_correction,
                         color_fix=color_fix, version=version)
        if stage not in STAGES:
            raise ConfigError(f"resshift stage must be one of {', '.join(STAGES)}, got {stage!r}")
        defaults = LOSS_WEIGHTS if stage == "denoiser" else AUTOENCODER_LOSS_WEIGHTS
        unknown = sorted(set(loss_weights or {}) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown resshift loss weights {unknown} for stage {stage!r}; its terms are {', '.join(defaults)}")
        self.stage, self.for_training, self.loss_weights = stage, for_training, {**defaults, **(loss_weights or {})}
        self._codebook_initialised = False
        self.lpips: nn.Module | None = None
        if for_training and self.loss_weights["lpips"]:
            from ...losses.lpips import PixelLPIPS

            self.lpips = PixelLPIPS("vgg", backbone_weights=lpips_weights)

    def _check_steps(self, steps: int | None) -> int | None:
        if steps is not None and steps != self.sampler.num_steps:
            raise UnsupportedError(
                f"this resshift model was trained for {self.sampler.num_steps} steps, got steps={steps}; "
                f"build it with srkit.load('resshift', steps={steps}) and that schedule's checkpoint"
            )
        return steps

    # ---------------------------------------------------------------------------------------- training

    def trainable_modules(self) -> dict[str, nn.Module]:
        if not self.for_training:
            raise UnsupportedError("this resshift model was built for inference; build it with for_training=True to train")
        return {"unet": self.unet} if self.stage == "denoiser" else {"autoencoder": self.autoencoder}

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """x0-prediction loss at a uniform step per sample (see the module docstring), on ``lr`` (B, 3, h, w) and
        ``hr`` (B, 3, 4h, 4w) in [0, 1]; with ``stage="autoencoder"`` the reconstruction loss of ``hr``."""
        self.trainable_modules()
        if self.stage == "autoencoder":
            return self.autoencoder_losses(batch["hr"], first_step=int(batch.get("step", 1)) == 0)
        lr, hr = batch["lr"], batch["hr"]
        chain = self.condition(self.prepare(lr), None)
        with torch.no_grad():
            z_0 = self.autoencoder.encode(pad_to_multiple(self.to_model_range(hr), self.scale * self.size_multiple))
        t = torch.randint(0, self.sampler.num_steps, (lr.shape[0],), device=lr.device)
        x_t = self.sampler.q_sample(z_0, chain.y, t, torch.randn_like(z_0))
        x0_pred = self.unet(self.sampler.scale_input(x_t, t), t, lq=chain.lr)
        terms = {"mse": self.loss_weights["mse"] * F.mse_loss(x0_pred, z_0)}
        if self.lpips is not None:
            image = self.from_model_range(self.autoencoder.decode(x0_pred))[..., : hr.shape[-2], : hr.shape[-1]]
            terms["lpips"] = self.loss_weights["lpips"] * self.lpips(image, hr).mean()
        return terms

    def autoencoder_losses(self, hr: Tensor, *, first_step: bool = False) -> dict[str, Tensor]:
        """L1 + LPIPS reconstruction and the codebook loss of ``hr`` (B, 3, H, W) in [0, 1], H and W multiples of 4
        (see the module docstring); ``first_step`` first sets the codebook from this batch's latents (once: the
        further micro-batches of an accumulated first step keep it)."""
        x = self.to_model_range(hr)
        z = self.autoencoder.encode(x)
        if first_step and not self._codebook_initialised:
            self.init_codebook(z.detach())
        codes, _ = self.autoencoder.quantize.nearest(z)
        z_q = z + (codes - z).detach()  # straight-through: the decoder's gradient reaches the encoder
        # VectorQuantizer2 (legacy): the encoder's commitment + beta x the codebook's pull towards the latents.
        codebook_loss = F.mse_loss(codes.detach(), z) + COMMITMENT_BETA * F.mse_loss(codes, z.detach())
        reconstruction = self.autoencoder.decoder(self.autoencoder.post_quant_conv(z_q))
        terms = {"l1": self.loss_weights["l1"] * F.l1_loss(reconstruction, x),  # in [-1, 1], as LDM
                 "codebook": self.loss_weights["codebook"] * codebook_loss}
        if self.lpips is not None:
            terms["lpips"] = self.loss_weights["lpips"] * self.lpips(self.from_model_range(reconstruction), hr).mean()
        return terms

    @torch.no_grad()
    def init_codebook(self, z: Tensor) -> None:
        """Set every codebook entry to a latent of ``z`` (B, C, h, w) picked at random (+1e-3 noise), so that no code
        starts dead; in a multi-process run the first process's choice is broadcast, so every replica starts alike."""
        codebook = self.autoencoder.quantize.embedding.weight
        latents = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        picks = torch.randint(0, latents.shape[0], (codebook.shape[0],), device=latents.device)
        codebook.copy_(latents[picks] + 1e-3 * torch.randn_like(codebook))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(codebook, src=0)
        self._codebook_initialised = True
