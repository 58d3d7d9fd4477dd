"""Posterior-guided ResShift: ResShift with the posterior guidance hook of :mod:`.guidance` as its default
mean correction (plug-in: nothing is trained); calibration in :mod:`.calibration`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...diffusion import MeanCorrectionHook, NoiseHook
from ...pipelines.residual_shift import ResidualShiftMethod
from . import DESCRIPTOR
from .guidance import MODES, PosteriorGuidance

__all__ = ["PosteriorGuidedResShift"]


class PosteriorGuidedResShift(ResidualShiftMethod):
    """ResShift with the posterior guidance of Prop. 3.3.1 / Remark 3.3.1 (plug-in: nothing is trained).

    ``sr(lr, guide=, guide_mask=, mode=, strength=, gradient=)`` (see
    :class:`~srkit.methods.pg_resshift.guidance.PosteriorGuidance`):

    - ``guide="lr"`` (default) or an LR-size tensor: **non-reference** mode (Algorithm 2), s = +1: the step is
      pushed up the KL gradient away from the LR, the paper's sign flip for perceptual sharpness. The guide's latent
      is exactly the chain's y: ``encode_upsampled`` of the padded guide in [-1, 1].
    - a tensor at output size (the HR): **reference** mode (Eq. (11)), s = -1: the step descends the KL to the HR
      (fidelity). The HR is already at output size, so its latent is the encoder of the padded HR, no upsampling.
    - ``guide_mask`` (LR size, 0/1): guidance on that region only (Sec. 3.4's reference / non-reference regions).
    - ``mode`` overrides the mode implied by the guide; ``strength`` multiplies the calibrated alpha_t (0: ResShift);
      ``gradient`` overrides the constructor's.

    ``scales`` / ``reference_scales``: alpha_t of the non-reference / reference mode, a file written by
    :func:`calibrate` / ``srkit calibrate`` for that mode and ``gradient``, or inline values (one, or one per step
    index t = 0..T-1); default alpha_t = 1 (the paper gives no values). ``gradient``: ``"autograd"`` (the paper's
    grad_{x_t} through the denoiser) or ``"closed-form"`` (with respect to the step mean; no extra network pass).
    Calibration: Algorithm 1 for the LR guide, Eqs. (9)-(10) for the HR guide (:mod:`.calibration`).
    """

    descriptor = DESCRIPTOR

    def __init__(
        self,
        steps: int | None = None,
        weights: str | None = None,
        dtype: torch.dtype = torch.float32,
        unet_config: Mapping[str, Any] | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
        scales: str | Path | float | Sequence[float] | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
        version: str | None = None,
        gradient: str = "autograd",
        reference_scales: str | Path | float | Sequence[float] | None = None,
    ):
        guidance = mean_correction if mean_correction is not None else PosteriorGuidance(
            scales, gradient=gradient, reference_scales=reference_scales)
        super().__init__(steps, weights, dtype, unet_config, autoencoder_config, noise=noise, mean_correction=guidance,
                         version=version)
        if isinstance(guidance, PosteriorGuidance):  # a wrong scale file fails now, not at the first image
            for mode in MODES:
                guidance.scales(self.sampler.num_steps, mode)

    @property
    def scales(self) -> Any:
        """The non-reference (LR guide) scales alpha_t of the default hook."""
        return self.mean_correction_hook.scales(self.sampler.num_steps)  # type: ignore[union-attr]
