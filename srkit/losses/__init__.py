"""Training losses: pixel, perceptual (pixel and latent LPIPS), GAN terms and discriminators, with a fused fast path."""
