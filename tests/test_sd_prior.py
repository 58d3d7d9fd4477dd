"""Training the SD prior (InvSR ``stage="vae"`` / ``"unet"``): LDM's AutoencoderKL objective and SD's denoising
objective, each recomputed here from its equations; each stage trains exactly its module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_invsr import TINY

import srkit
from srkit.errors import ConfigError
from srkit.samplers.ddpm import DDPMSampler

pytestmark = pytest.mark.usefixtures("one_thread")

HR = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def prior(stage: str, **overrides):
    return srkit.load("invsr", weights="synthetic", for_training=True, stage=stage, **{**TINY, **overrides})


def test_vae_stage_is_ldm_autoencoder_kl_objective():
    model = prior("vae")
    assert model.trainable_modules() == {"vae": model.sd.vae.vae} and model.disc is None
    vae, x = model.sd.vae.vae.requires_grad_(True), HR * 2 - 1  # as the trainer does for the trained modules
    torch.manual_seed(0)
    terms = model.losses({"hr": HR, "lr": HR[..., ::4, ::4]})
    # From scratch: moments = quant_conv(encoder(x)); z = mean + exp(logvar / 2) n; KL to N(0, I) summed per image.
    torch.manual_seed(0)
    mean, logvar = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape)
    reconstruction = vae.decode(z).sample
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    values = 3 * 32 * 32
    torch.testing.assert_close(terms["l1"], (reconstruction - x).abs().sum() / 2 / values)  # LDM: sum / batch
    torch.testing.assert_close(terms["kl"], 1e-6 * kl.mean() / values)
    assert set(terms) == {"l1", "kl"}
    terms["l1"].backward()
    assert vae.decoder.conv_out.weight.grad is not None and vae.quant_conv.weight.grad is not None


def test_unet_stage_is_sd_denoising_objective_on_vae_latents():
    model = prior("unet")
    assert model.trainable_modules() == {"unet": model.sd.unet}
    torch.manual_seed(0)
    loss = model.losses({"hr": HR, "lr": HR[..., ::4, ::4]})["mse"]
    torch.manual_seed(0)
    latents = model.sd.vae.encode(HR * 2 - 1, sample=True)  # a posterior sample, scaled by 0.18215's config value
    t = torch.randint(0, 1000, (2,))
    noise = torch.randn_like(latents)
    abar = model.sampler.alphas_cumprod[t].float().view(2, 1, 1, 1)
    x_t = abar.sqrt() * latents + (1 - abar).sqrt() * noise
    context = model.sd.prompt_embedding().expand(2, -1, -1)
    expected = F.mse_loss(model.sd.unet(x_t, t, encoder_hidden_states=context).sample, noise)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_the_target_follows_the_prediction_type(prediction):
    """SD 2.1 (768) predicts v = sqrt(abar) eps - sqrt(1 - abar) z: a UNet that outputs exactly its sampler's target
    has zero loss."""
    sd = prior("unet").sd
    sampler = DDPMSampler(prediction_type=prediction)
    latents = torch.randn(2, 4, 4, 4)
    torch.manual_seed(0)
    t, noise = torch.randint(0, 1000, (2,)), torch.randn_like(latents)
    abar = sampler.alpha_bar(t, latents)
    target = abar.sqrt() * noise - (1 - abar).sqrt() * latents if prediction == "v_prediction" else latents

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # the prompt embedding follows the UNet's device and dtype

        def forward(self, x_t, t, encoder_hidden_states):
            return type("Output", (), {"sample": target})

    sd.prompt_embedding()  # cached before the UNet (whose config gives its width) is replaced
    sd.unet = Oracle()
    torch.manual_seed(0)
    assert float(sd.unet_losses(latents, sampler)["mse"]) == 0.0


def test_stage_and_loss_weight_errors_name_the_choices():
    with pytest.raises(ConfigError, match="stage must be one of predictor, vae, unet"):
        prior("decoder")
    with pytest.raises(ConfigError, match=r"unknown invsr loss weights \['l2'\] for stage 'vae'; its terms are l1, kl"):
        prior("vae", loss_weights={"l2": 1.0})
    assert prior("vae", loss_weights={"kl": 1e-3}).loss_weights == {"l1": 1.0, "kl": 1e-3}


def test_latent_scaling_factor_is_ldm_scale_by_std_and_gives_unit_variance_latents():
    from srkit.backends.sd import latent_scaling_factor

    model = prior("vae")
    vae, images = model.sd.vae.vae, list(HR * 2 - 1)
    factor = latent_scaling_factor(vae, images, seed=5)
    # From scratch: posterior samples z = mean + std n, n from one seeded generator image by image, pooled.
    generator, samples = torch.Generator().manual_seed(5), []
    with torch.no_grad():
        for image in images:
            mean, logvar = vae.quant_conv(vae.encoder(image[None])).chunk(2, dim=1)
            samples.append(mean + (0.5 * logvar.clamp(-30, 20)).exp() * torch.randn(mean.shape, generator=generator))
    assert factor == pytest.approx(1 / float(torch.cat([z.flatten() for z in samples]).std()), rel=1e-5)
    assert factor == latent_scaling_factor(vae, images, seed=5)  # seeded
    scaled = prior("vae", backend_config={**TINY["backend_config"], "vae": {**TINY["backend_config"]["vae"],
                                                                              "scaling_factor": factor}})
    scaled.sd.vae.vae.load_state_dict(vae.state_dict())
    with torch.no_grad():
        latents = torch.cat([scaled.sd.vae.encode(image[None], sample=True, generator=torch.Generator().manual_seed(5))
                             for image in images[:1]] + [z * factor for z in samples[1:]])
    assert float(latents.std()) == pytest.approx(1.0, rel=1e-4)
