"""Metrics: fidelity (PSNR/SSIM on Y), no-reference and full-reference IQA via pyiqa, stability (G-STD, L-STD).

The benchmark engine (``benchmarks/run_all.py``, ``srkit bench``) is :mod:`srkit.metrics.bench`.
pyiqa is imported only when one of its metrics is requested.
"""

from .fidelity import psnr, rgb_to_y, ssim
from .iqa import METRIC_NAMES, Metric, MetricUnavailable, get_metric
from .stability import LocalStd, Stability, g_std, l_std, stability

__all__ = [
    "METRIC_NAMES", "LocalStd", "Metric", "MetricUnavailable", "Stability", "g_std", "get_metric", "l_std", "psnr", "rgb_to_y",
    "ssim", "stability",
]
