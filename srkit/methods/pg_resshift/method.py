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
from .guidance import PosteriorGuidance

__all__ = ["PosteriorGuidedResShift"]


class PosteriorGuidedResShift(ResidualShiftMethod):
    """ResShift with the posterior guidance of Prop. 3.3.1 / Remark 3.3.1 (plug-in: nothing is trained).

    ``sr(lr, guide=, mode=, strength=)`` (see :class:`~srkit.methods.pg_resshift.guidance.PosteriorGuidance`):

    - ``guide="lr"`` (default) or an LR-size tensor: **non-reference** mode (Algorithm 2), s = +1: the step is
      pushed up the KL gradient away from the LR, the paper's sign flip for perceptual sharpness. The guide's latent
      is exactly the chain's y: ``encode_upsampled`` of the padded guide in [-1, 1].
    - a tensor at output size (the HR): **reference** mode (Eq. (11)), s = -1: the step descends the KL to the HR
      (fidelity). The HR is already at output size, so its latent is the encoder of the padded HR, no upsampling.
    - ``mode`` overrides the mode implied by the guide; ``strength`` multiplies the calibrated alpha_t (0: ResShift).

    ``scales``: a file written by :func:`calibrate` / ``srkit calibrate``, or inline alpha values (one, or one per
    step index t = 0..T-1). Default: alpha_t = 1, a documented choice (the paper gives no values): in Sigma units the
    correction is then x0_pred -> x0_pred - s (x0_pred - z_c), i.e. the reference mode lands the last step on the
    HR latent and the non-reference mode extrapolates x0_pred by its distance from the LR latent.

    Calibration (Algorithm 1 with Eqs. (9)-(10), B dropped as the paper does): along the unguided chain from each
    LR, at every step, Delta = mu_t(HR) - mu_t(SR) where mu_t(HR) is the step mean of the forward process of the HR,
    q(x_{t-1} | x_t, x0 = z_HR), and mu_t(SR) the model's; G = s Sigma_t grad D_KL(SR || guide). The scale is the least
    squares alpha = sum <Delta, G> / sum ||G||^2, per step (sums over pairs) or as one scalar (over pairs and steps).
    Alg. 1's objective line "||Delta|| - ||alpha G||" is read as this squared residual ||Delta - alpha G||^2 of Eq.
    (10). In reference mode Delta = G exactly, so alpha = 1: full correction is the exact HR posterior step.
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
    ):
        guidance = mean_correction if mean_correction is not None else PosteriorGuidance(scales)
        super().__init__(steps, weights, dtype, unet_config, autoencoder_config, noise=noise, mean_correction=guidance,
                         version=version)
        if isinstance(guidance, PosteriorGuidance):
            guidance.scales(self.sampler.num_steps)  # a wrong scale file fails now, not at the first image

    @property
    def scales(self) -> Any:
        """The guidance scales alpha_t of the default hook."""
        return self.mean_correction_hook.scales(self.sampler.num_steps)  # type: ignore[union-attr]
