"""Metrics by name: PSNR/SSIM (built in), NIQE offline, and pyiqa's IQA models as an optional extra.

pyiqa (PolyForm-Noncommercial) is imported only inside :func:`get_metric`, never by ``import srkit``.
Its models download weights on first use; where that is impossible (offline, no cache) the metric
is *unavailable*: :class:`MetricUnavailable` carries the reason, and the benchmark reports ``n/a``
with it -- never a made-up value.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import UnsupportedError
from .fidelity import psnr, ssim

Mode = Literal["FR", "NR", "dataset"]

# srkit name -> (pyiqa name, pinned options). Options are pyiqa's defaults, written out so that
# they are printed with every benchmark and cannot drift with pyiqa releases.
PYIQA_METRICS: dict[str, tuple[str, dict[str, Any]]] = {
    "lpips": ("lpips", {"net": "alex", "version": "0.1"}),
    "lpips-vgg": ("lpips-vgg", {"net": "vgg", "version": "0.1"}),
    "dists": ("dists", {}),
    "niqe": ("niqe", {"test_y_channel": True, "color_space": "yiq", "crop_border": 0}),
    "pi": ("pi", {"crop_border": 4, "color_space": "ycbcr"}),
    "musiq": ("musiq", {"pretrained": "koniq10k"}),
    "clipiqa": ("clipiqa", {}),
    "maniqa": ("maniqa", {}),
    "liqe": ("liqe", {}),
    "topiq_nr": ("topiq_nr", {}),
    "topiq_fr": ("topiq_fr", {}),
    "nima": ("nima", {}),
    "brisque": ("brisque", {}),
    "fid": ("fid", {"mode": "clean"}),
}
BUILTIN = ("psnr", "psnr-rgb", "ssim", "ssim-yiq", "sharpness")
# Weight-free full-reference metrics of piq (Apache-2.0; the [train] extra): perception measured offline, where
# LPIPS and DISTS cannot download their ImageNet backbones. (piq name, lower is better)
PIQ_METRICS: dict[str, tuple[str, bool]] = {"haarpsi": ("haarpsi", False), "gmsd": ("gmsd", True)}
METRIC_NAMES = (*BUILTIN, *PIQ_METRICS, *PYIQA_METRICS)


class MetricUnavailable(UnsupportedError):
    """A metric cannot be computed here (extra not installed, weights not downloadable); says why."""


@dataclass
class Metric:
    """A metric ready to call: ``metric(sr)`` (NR) or ``metric(sr, hr)`` (FR) -> per-image values (B,).

    Dataset-level metrics (FID) take two folders instead: ``metric(sr_dir, hr_dir) -> float``.
    """

    name: str
    mode: Mode
    lower_better: bool
    options: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False)
    source: str = "srkit"

    def __call__(self, sr: Any, hr: Any = None) -> Any:
        if self.mode == "NR":
            return self.fn(sr)
        return self.fn(sr, hr)


def get_metric(name: str, *, crop_border: int = 4, device: str | torch.device = "cpu") -> Metric:
    """Build the metric ``name`` (one of :data:`METRIC_NAMES`); raise :class:`MetricUnavailable` if it cannot run.

    ``crop_border`` applies to PSNR and SSIM (the papers' crop = scale convention).
    """
    if name == "sharpness":
        measure = "variance of the Laplacian of BT.601 limited-range Y (16..235) (Pech-Pacheco et al., 2000)"
        return Metric(name, "NR", False, {"measure": measure}, laplacian_sharpness)
    if name in PIQ_METRICS:
        return _piq_metric(name)
    if name in ("psnr", "psnr-rgb"):
        on_y = name == "psnr"
        options = {"y_channel": on_y, "color_space": "ycbcr (BT.601, MATLAB rgb2ycbcr)" if on_y else "rgb", "crop_border": crop_border}
        return Metric(name, "FR", False, options, partial(psnr, crop_border=crop_border, y_channel=on_y))
    if name in ("ssim", "ssim-yiq"):
        color = "ycbcr" if name == "ssim" else "yiq"
        options = {"color_space": {"ycbcr": "ycbcr (BT.601 limited-range Y, MATLAB rgb2ycbcr; the SR papers')",
                                   "yiq": "yiq (full-range luma 0.299R+0.587G+0.114B; Wang et al., pyiqa's default)"}[color],
                   "crop_border": crop_border, "window": "gaussian 11x11 sigma 1.5", "downsample": False, "y_rounded": True}
        options["contrast_clamped"] = color == "ycbcr"  # pyiqa clamps; Wang et al.'s definition does not
        return Metric(name, "FR", False, options, partial(ssim, crop_border=crop_border, color=color,
                                                          clamp_contrast=color == "ycbcr"))
    if name not in PYIQA_METRICS:
        import difflib

        close = difflib.get_close_matches(name, METRIC_NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise MetricUnavailable(f"unknown metric {name!r}.{hint} Known metrics: {', '.join(METRIC_NAMES)}")
    if name == "niqe" and (params := niqe_params_path()) is not None:
        return _offline_niqe(params)
    return _pyiqa_metric(name, device)


def laplacian_sharpness(sr: Tensor) -> Tensor:
    """A weight-free no-reference sharpness measure per image: the variance of the 3x3 Laplacian of Y (BT.601
    limited-range luma, 16..235 as MATLAB's rgb2ycbcr, the Y that PSNR/SSIM use) over the valid interior. It rises
    with edges and fine texture, and with noise too: read it next to PSNR."""
    from .fidelity import rgb_to_y

    y = rgb_to_y(sr.double().clamp(0, 1))  # (B, 1, H, W) in [16, 235]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=y.dtype, device=y.device)
    return torch.nn.functional.conv2d(y, kernel.view(1, 1, 3, 3)).flatten(1).var(dim=1).cpu()


def _piq_metric(name: str) -> Metric:
    from ..errors import MissingDependencyError, import_optional

    try:
        piq = import_optional("piq", extra="train", needed_for=f"the {name} metric")
    except MissingDependencyError as err:
        raise MetricUnavailable(str(err)) from None
    function_name, lower_better = PIQ_METRICS[name]
    function = getattr(piq, function_name)

    def fn(sr: Tensor, hr: Tensor) -> Tensor:
        with torch.no_grad():
            return function(sr.float().clamp(0, 1), hr.float().clamp(0, 1), reduction="none", data_range=1.0).double().cpu()

    return Metric(name, "FR", lower_better, {"piq": function_name, "data_range": 1.0, "color": "RGB"}, fn,
                  source=f"piq {getattr(piq, '__version__', '')}".strip())


def _import_pyiqa() -> Any:
    try:
        import pyiqa
    except ImportError as err:
        raise MetricUnavailable(
            f"pyiqa is not installed ({err}); pip install 'srkit[metrics]' (pyiqa is PolyForm-Noncommercial)"
        ) from None
    return pyiqa


def _pyiqa_metric(name: str, device: str | torch.device) -> Metric:
    pyiqa = _import_pyiqa()
    pyiqa_name, options = PYIQA_METRICS[name]
    kwargs = {k: v for k, v in options.items() if k != "mode"}
    try:
        with _offline_hub_if_unreachable():
            model = pyiqa.create_metric(pyiqa_name, device=torch.device(device), **kwargs)
    except ImportError as err:
        raise MetricUnavailable(f"pyiqa's {pyiqa_name!r} needs a module that is missing: {err}") from None
    except Exception as err:  # pyiqa raises URLError, OSError, RuntimeError... when weights cannot be fetched
        raise MetricUnavailable(
            f"pyiqa could not build {pyiqa_name!r}: {type(err).__name__}: {str(err).splitlines()[0][:200]} "
            "(its weights download on first use; pre-place them in $TORCH_HOME/hub/pyiqa when offline)"
        ) from None
    mode: Mode = "dataset" if name == "fid" else model.metric_mode
    if mode == "dataset":
        def fn(sr_dir: Any, hr_dir: Any) -> float:
            return float(model(str(sr_dir), str(hr_dir), mode=options["mode"]))
    else:
        def fn(*images: Tensor) -> Tensor:
            with torch.no_grad():
                return model(*(x.to(torch.device(device), torch.float32) for x in images)).reshape(-1).double().cpu()
    return Metric(name, mode, bool(model.lower_better), {"pyiqa": pyiqa_name, **options}, fn, source=f"pyiqa {pyiqa.__version__}")


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers, probed once per process."""
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def _offline_hub_if_unreachable() -> Iterator[None]:
    """Cache-only hub look-ups while the hub is unreachable.

    Otherwise timm's backbone downloads inside pyiqa retry for about a minute per file before failing.
    """
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline or not hub_reachable()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline


def niqe_params_path() -> Path | None:
    """BasicSR's NIQE natural-scene parameters (``niqe_pris_params.npz``) if an installed package ships them.

    ``basicsr`` and ``basicsr-fixed`` wheels carry the file; the package is located without importing it.
    """
    spec = importlib.util.find_spec("basicsr")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "metrics" / "niqe_pris_params.npz"
        if path.is_file():
            return path
    return None


def _offline_niqe(params: Path) -> Metric:
    """NIQE (Mittal et al. 2013) from BasicSR's bundled parameters, with pyiqa's NIQE features; no download.

    The parameters are the MATLAB release's ``modelparameters.mat`` (mu and covariance of the
    pristine model), the same numbers pyiqa downloads as ``niqe_modelparameters.mat``.
    """
    import numpy as np

    _import_pyiqa()
    from pyiqa.archs.niqe_arch import calculate_niqe

    data = np.load(params)
    mu = torch.from_numpy(np.ravel(data["mu_pris_param"]))
    cov = torch.from_numpy(data["cov_pris_param"])
    _, options = PYIQA_METRICS["niqe"]

    def fn(sr: Tensor) -> Tensor:
        with torch.no_grad():
            score = calculate_niqe(
                sr.double().cpu(), options["crop_border"], options["test_y_channel"], options["color_space"], mu, cov
            )
        return score.reshape(-1).double()

    return Metric("niqe", "NR", True, {**options, "params": str(params)}, fn, source="pyiqa NIQE + BasicSR params (offline)")
