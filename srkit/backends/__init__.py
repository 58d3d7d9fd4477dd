"""Shared latent backends: autoencoders (VQ-f4, SD VAE), denoisers (Swin-UNet, SD UNet + ControlNet), noise predictors."""
