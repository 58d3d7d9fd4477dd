"""The main job: super-resolve the bundled photograph with real, offline pretrained weights."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from .zoo import ZOO

ASSET = "astronaut.png"


def bundled_photo() -> Tensor:
    """The bundled HR photograph as a (3, H, W) float tensor in [0, 1] (see assets/SOURCES.md)."""
    from .io import read_image

    return read_image(Path(str(resources.files("srkit") / "assets" / ASSET)))


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [0, 1] over all channels (a quick figure, not the papers' Y-PSNR)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def side_by_side(panels: dict[str, Tensor]) -> Tensor:
    """Concatenate equally sized (3, H, W) images horizontally with a caption strip above each."""
    from PIL import Image, ImageDraw

    strip = 18
    columns = []
    for caption, image in panels.items():
        canvas = Image.new("RGB", (image.shape[-1], strip), "white")
        ImageDraw.Draw(canvas).text((4, 3), caption, fill="black")
        label = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
        label = label.view(strip, image.shape[-1], 3).permute(2, 0, 1).float() / 255
        columns.append(torch.cat([label, image.float().cpu()], dim=1))
    return torch.cat(columns, dim=2)


def run_demo(
    output: Path, methods: list[str], *, zoo: list[str] = (), device: str = "auto", tile: int | None = None
) -> dict[str, Path]:
    """Write LR, HR, each method's result and ``comparison.png`` into ``output``; returns the paths.

    ``zoo``: methods also run with ``weights="zoo"`` (:mod:`srkit.zoo`: small models trained here on eight photos),
    written as ``<method>-zoo.png`` and labelled as such."""
    import torch.nn.functional as F

    from . import load
    from .degradations.bicubic import BicubicDownsample
    from .io import write_image

    hr = bundled_photo()[None]
    degradation = BicubicDownsample(scale=4)
    lr = degradation(hr)
    paths = {"lr": write_image(output / "lr.png", lr[0]), "hr": write_image(output / "hr.png", hr[0])}
    panels = {"LR (nearest x4)": F.interpolate(lr, scale_factor=degradation.scale, mode="nearest")[0]}
    runs = [(name, None, name, name) for name in methods]
    runs += [(name, ZOO, f"{name}-zoo", f"{name} (zoo: small, 8 photos)") for name in zoo]
    for name, weights, key, caption in runs:
        model = load(name, weights=weights, device=device)
        sr = model.sr(lr, seed=0, tile=tile)
        paths[key] = write_image(output / f"{key}.png", sr[0])
        panels[f"{caption}  {psnr(sr, hr):.2f} dB"] = sr[0]
    panels["HR"] = hr[0]
    paths["comparison"] = write_image(output / "comparison.png", side_by_side(panels))
    return paths
