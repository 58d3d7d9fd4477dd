"""DM-SR's distribution-matching (Eq. (6)-(7)) and noise (Eq. (8)) losses on small tensors."""

import pytest
import torch
from torch import nn

from srkit.losses.distribution import distribution_matching_loss, noise_loss, residual_surrogate
from srkit.samplers.ddpm import DDPMSampler

ABAR = DDPMSampler().alphas_cumprod.float()


def alpha_bar(t):
    return ABAR[t].view(-1, 1, 1, 1)


def identity_eps(x, t):
    return x


@pytest.fixture
def parts():
    torch.manual_seed(0)
    encoder = nn.Conv2d(4, 4, 3, padding=1)  # stands for E_θ
    denoiser = nn.Conv2d(4, 4, 3, padding=1).requires_grad_(False)  # the frozen μ_ψ

    def eps_model(x, t):
        return denoiser(x) * (1 + t.view(-1, 1, 1, 1) / 1000)

    return encoder, denoiser, eps_model


def test_residual_surrogate_has_the_residual_as_gradient():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    residual = torch.randn(2, 4, 3, 3)
    loss = residual_surrogate(x, residual)
    loss.backward()
    torch.testing.assert_close(x.grad, residual / x.numel())
    torch.testing.assert_close(loss, 0.5 * residual.square().mean())


def test_dm_loss_gradient_is_eq7_residual_and_reaches_only_the_encoder(parts):
    encoder, denoiser, eps_model = parts
    y, x_hr = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    z_sr = encoder(y)
    z_sr.retain_grad()
    t, noise = torch.tensor([1, 500]), torch.randn(2, 4, 4, 4)
    distribution_matching_loss(eps_model, alpha_bar, z_sr, x_hr, t, noise).backward()
    abar = alpha_bar(t)
    z_noisy, x_noisy = (abar.sqrt() * v + (1 - abar).sqrt() * noise for v in (z_sr, x_hr))
    expected = eps_model(z_noisy, t) - eps_model(x_noisy, t)
    torch.testing.assert_close(z_sr.grad, expected.detach() / z_sr.numel())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(p.grad is None for p in denoiser.parameters())


def test_dm_loss_descends_towards_the_hr_latent():
    # A denoiser that reads everything as noise: the residual is sqrt(abar) (Z - X), so a step against it
    # brings Z_SR closer to X_HR^0.
    z = torch.randn(1, 4, 4, 4, requires_grad=True)
    x_hr = torch.randn(1, 4, 4, 4)
    before = (z - x_hr).norm()
    distribution_matching_loss(identity_eps, alpha_bar, z, x_hr, torch.tensor([250]), torch.randn(1, 4, 4, 4)).backward()
    torch.testing.assert_close(z.grad * z.numel(), alpha_bar(torch.tensor([250])).sqrt() * (z - x_hr).detach())
    assert (z - 10 * z.grad - x_hr).norm() < before


def test_noise_loss_moves_eps_towards_the_denoisers_fixed_point(parts):
    encoder, denoiser, eps_model = parts
    eps_sr = encoder(torch.randn(2, 4, 4, 4))
    eps_sr.retain_grad()
    x_hr, t = torch.randn(2, 4, 4, 4), torch.tensor([100, 400])
    noise_loss(eps_model, alpha_bar, eps_sr, x_hr, t).backward()
    abar = alpha_bar(t)
    target = eps_model(abar.sqrt() * x_hr + (1 - abar).sqrt() * eps_sr, t)
    torch.testing.assert_close(eps_sr.grad, (eps_sr - target).detach() / eps_sr.numel())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(p.grad is None for p in denoiser.parameters())


def test_noise_loss_vanishes_at_the_fixed_point():
    # μ_ψ(x) = x / sqrt(1 - abar) - sqrt(abar / (1 - abar)) X_HR recovers the noise exactly: zero loss.
    x_hr, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4, requires_grad=True)
    t = torch.tensor([300])
    abar = alpha_bar(t)

    def oracle(x, t):
        return (x - abar.sqrt() * x_hr) / (1 - abar).sqrt()

    loss = noise_loss(oracle, alpha_bar, eps, x_hr, t)
    loss.backward()
    assert float(loss.detach()) < 1e-10 and float(eps.grad.abs().max()) < 1e-6
