"""The official code of ResShift and LPNSR as timing baselines, holding the srkit model's weights.

``benchmarks/latency.py --official-resshift DIR --official-lpnsr DIR`` times each method against its official
pipeline in the same process: DIR is a checkout of the official repository (github.com/zsyOAOA/ResShift,
github.com/Faze-Hsw/LPNSR), which is imported from there for the benchmark only and never becomes a dependency of
srkit. Its own requirements apply (the Swin blocks import ``timm``, LPNSR's inference ``cv2`` and ``loralib``:
``pip install timm opencv-python-headless loralib``). The official networks are built from the official configs and
given the state dicts of the srkit model being timed (srkit loads the official checkpoints unchanged, so the keys are
the same), and run without autocast, as the official scripts do on CPU (ResShift in the model's dtype; LPNSR's
``process_single_image`` casts the image to float32). Each baseline is a function ``(lr in [0, 1], steps, seed) -> image in [0, 1]``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["OFFICIAL", "official_lpnsr", "official_resshift"]

Baseline = Callable[[Tensor, int, int], Tensor]
# The packages of the official repositories (they share names, e.g. both have `models` and `ldm`).
_OFFICIAL_PACKAGES = ("models", "ldm", "utils", "basicsr", "datapipe", "inference")


@contextlib.contextmanager
def _imported_from(checkout: Path) -> Iterator[None]:
    """Import the official packages from ``checkout`` (first on sys.path, earlier imports of the same names dropped)."""
    checkout = Path(checkout).resolve()
    if not checkout.is_dir():
        raise SystemExit(f"official checkout {checkout} is not a folder; clone the official repository there")
    for name in [m for m in sys.modules if m.split(".")[0] in _OFFICIAL_PACKAGES]:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        yield
    except ModuleNotFoundError as err:
        raise SystemExit(f"the official code in {checkout} needs {err.name!r}: pip install {err.name}") from None
    finally:
        sys.path.remove(str(checkout))


def _pad(y0: Tensor, multiple: int) -> Tensor:
    """The official samplers' reflect padding (bottom, right) to ``padding_offset``."""
    pad_h, pad_w = (-y0.shape[-2]) % multiple, (-y0.shape[-1]) % multiple
    return F.pad(y0, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else y0


def official_resshift(model: Any, checkout: str | Path) -> Baseline:
    """ResShift v3's official pipeline (``sampler.py: ResShiftSampler.sample_func``: its ``UNetModelSwin``,
    ``VQModelTorch`` and ``GaussianDiffusion.p_sample_loop``) on ``model``'s weights."""
    from omegaconf import OmegaConf

    checkout = Path(checkout)
    with _imported_from(checkout):
        unet_module = importlib.import_module("models.unet")
        autoencoder_module = importlib.import_module("ldm.models.autoencoder")
        script_util = importlib.import_module("models.script_util")
    cfg = OmegaConf.to_container(OmegaConf.load(checkout / "configs" / "realsr_swinunet_realesrgan256_journal.yaml"),
                                 resolve=True)
    parameter = next(model.parameters())
    unet = unet_module.UNetModelSwin(**cfg["model"]["params"]).to(parameter.device, parameter.dtype).eval()
    unet.load_state_dict(model.unet.state_dict())
    autoencoder = autoencoder_module.VQModelTorch(**cfg["autoencoder"]["params"]).to(parameter.device, parameter.dtype).eval()
    autoencoder.load_state_dict(model.autoencoder.state_dict())
    diffusion = script_util.create_gaussian_diffusion(**cfg["diffusion"]["params"])
    offset = cfg["model"]["params"]["lq_size"]

    @torch.no_grad()
    def run(lr: Tensor, steps: int, seed: int) -> Tensor:
        if steps != diffusion.num_timesteps:
            raise SystemExit(f"the official ResShift v3 pipeline runs {diffusion.num_timesteps} steps, not {steps}")
        torch.manual_seed(seed)
        y0 = _pad(lr.to(parameter.dtype) * 2 - 1, offset)
        out = diffusion.p_sample_loop(y=y0, model=unet, first_stage_model=autoencoder, noise=None, clip_denoised=False,
                                      model_kwargs={"lq": y0}, progress=False)
        return (out.clamp(-1, 1)[..., : 4 * lr.shape[-2], : 4 * lr.shape[-1]] * 0.5 + 0.5).clamp(0, 1)

    return run


def official_lpnsr(model: Any, checkout: str | Path) -> Baseline:
    """LPNSR's official ``inference.py: NoisePredictorInference.sample_func`` (bicubic pre-upsampling, PreSet-A, and
    the wavelet colour correction, as ``process_single_image``) on ``model``'s weights, written as the official
    ``.pth`` files into a temporary folder its config names."""
    import yaml

    checkout = Path(checkout)
    with _imported_from(checkout):
        inference = importlib.import_module("inference")
    parameter = next(model.parameters())
    config = yaml.safe_load((checkout / "configs" / "inference.yaml").read_text())
    folder = Path(tempfile.mkdtemp(prefix="lpnsr-official-"))
    files = {"vae_path": model.autoencoder, "resshift_path": model.unet, "noise_predictor_path": model.noise_predictor}
    for key, module in files.items():
        torch.save(module.state_dict(), folder / f"{key}.pth")
        config["model"][key] = str(folder / f"{key}.pth")  # absolute: the official code joins it to its root
    config["noise_predictor"]["config_path"] = str(checkout / config["noise_predictor"]["config_path"])
    config["inference"].update(device=parameter.device.type, use_amp=False, use_swinir=False, num_steps=4)
    (folder / "inference.yaml").write_text(yaml.safe_dump(config))
    with _imported_from(checkout):
        engine = inference.NoisePredictorInference(str(folder / "inference.yaml"), device=parameter.device.type)

    @torch.no_grad()
    def run(lr: Tensor, steps: int, seed: int) -> Tensor:
        """``process_single_image`` itself on each image of ``lr`` from ``seed``: its padding (cv2.BORDER_REFLECT to
        64, then reflect to a power of two per side), the chain, the colour correction against the bicubic x4 of the
        padded LR, the crop (its progress messages silenced)."""
        if steps != engine.num_steps:
            raise SystemExit(f"this baseline runs the official {engine.num_steps}-step chain, not {steps}")
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):
            images = [engine.process_single_image(image.permute(1, 2, 0).cpu().float().numpy()) for image in lr]
        return torch.stack([torch.from_numpy(image) for image in images]).permute(0, 3, 1, 2).to(lr)

    return run


OFFICIAL: dict[str, Callable[[Any, str | Path], Baseline]] = {"resshift": official_resshift, "lpnsr": official_lpnsr}
