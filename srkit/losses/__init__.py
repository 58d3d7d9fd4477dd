"""Training losses: pixel, perceptual (pixel and latent LPIPS), GAN terms and discriminators, with a fused fast path."""

from .composer import AdversarialTerm, LossComposer
from .discriminators import ControlNetDiscriminator, PatchGANDiscriminator, UNetDiscriminator
from .fused import elementwise_losses
from .gan import adaptive_weight, adopt_weight, discriminator_loss, generator_loss
from .lpips import LatentLPIPS, PixelLPIPS

__all__ = [
    "AdversarialTerm", "ControlNetDiscriminator", "LatentLPIPS", "LossComposer", "PatchGANDiscriminator", "PixelLPIPS",
    "UNetDiscriminator", "adaptive_weight", "adopt_weight", "discriminator_loss", "elementwise_losses", "generator_loss",
]
