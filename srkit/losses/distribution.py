"""DM-SR's losses through a frozen noise predictor: distribution matching (Eq. (6)-(7)) and noise (Eq. (8)).

Both are written in the paper as gradients, ``(residual) · dE/dθ``, with the denoiser μ_ψ frozen
and the residual not differentiated. They are implemented with the usual surrogate
``0.5 · mean((x - sg(x - r))²)``, whose gradient with respect to ``x`` is ``r / numel`` and whose
value is ``0.5 · mean(r²)`` (a readable magnitude for logs); ``sg`` is stop-gradient.

``eps_model(x_t, t) -> ε̂`` is the frozen noise predictor and ``alpha_bar(t) -> ᾱ_t`` (B, 1, 1, 1)
the schedule; ``t`` is a (B,) long tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["distribution_matching_loss", "noise_loss", "residual_surrogate"]

EpsModel = Callable[[Tensor, Tensor], Tensor]
AlphaBar = Callable[[Tensor], Tensor]


def residual_surrogate(x: Tensor, residual: Tensor) -> Tensor:
    """A scalar whose gradient with respect to ``x`` is ``residual / x.numel()`` (``residual`` is detached)."""
    residual = residual.detach()
    return 0.5 * (x - (x - residual).detach()).square().mean()


def distribution_matching_loss(eps_model: EpsModel, alpha_bar: AlphaBar, z_sr: Tensor, x_hr: Tensor, t: Tensor,
                               noise: Tensor) -> Tensor:
    """L_dm: Z_SR and X_HR^0 noised to t with one shared ``noise`` (Eq. (6)); the residual
    μ_ψ(Z̃_SR^t, t) - μ_ψ(X̃_HR^t, t) is pushed back into Z_SR (Eq. (7)).

    The residual is a descent direction: where Z_SR exceeds X_HR^0 by a component the denoiser
    reads as noise, the predicted noise of Z̃ exceeds that of X̃ by sqrt(ᾱ_t / (1 - ᾱ_t)) times it.
    The paper takes t over [1, 500]; the caller draws it.
    """
    abar = alpha_bar(t)
    with torch.no_grad():
        z_noisy = abar.sqrt() * z_sr + (1 - abar).sqrt() * noise  # Eq. (6)
        x_noisy = abar.sqrt() * x_hr + (1 - abar).sqrt() * noise
        residual = eps_model(z_noisy, t) - eps_model(x_noisy, t)  # Eq. (7)
    return residual_surrogate(z_sr, residual)


def noise_loss(eps_model: EpsModel, alpha_bar: AlphaBar, eps_sr: Tensor, x_hr: Tensor, t: Tensor) -> Tensor:
    """L_ε (Eq. (8)): X_HR^0 noised to t̂ with the predicted ε_SR; ε_SR is moved towards what μ_ψ
    predicts from that input, the fixed point at which denoising recovers X_HR^0 exactly.

    Eq. (8) writes the residual as μ_ψ(·) - ε_SR times dE/dθ; as a descent direction on ε_SR it is
    ε_SR - μ_ψ(·) (the gradient of 0.5·||ε_SR - sg(μ_ψ(·))||²), which is what is applied here.
    """
    abar = alpha_bar(t)
    with torch.no_grad():
        target = eps_model(abar.sqrt() * x_hr + (1 - abar).sqrt() * eps_sr, t)
    return residual_surrogate(eps_sr, eps_sr.detach() - target)
