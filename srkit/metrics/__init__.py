"""Metrics: fidelity (PSNR/SSIM on Y), no-reference and full-reference IQA via pyiqa, stability (G-STD, L-STD)."""
