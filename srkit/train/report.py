"""What a training run shows besides its checkpoints: validation metrics and image grid, and the loss-curve PNG.

* :class:`Validator` -- the method's public ``sr()`` on fixed validation pairs with a fixed seed: PSNR (Y channel,
  border = scale, :func:`srkit.metrics.psnr`) and a perceptual metric (:func:`perceptual_metric`), and a grid
  ``validation.png`` of LR (bicubic) | SR | HR rows. It leaves the training untouched: every RNG state and every
  module's train/eval mode are as they were, so a run with validation resumes bit for bit.
* :func:`write_loss_curve` -- ``loss.png`` from the run's ``log.jsonl`` (matplotlib, an optional package).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..errors import ConfigError, MissingDependencyError, UnsupportedError, WeightsNotFoundError, import_optional
from ..io import atomic_file, write_image
from . import checkpoint

__all__ = ["GRID_FILE", "LOSS_CURVE_FILE", "Validator", "perceptual_metric", "write_loss_curve"]

log = logging.getLogger(__name__)

GRID_FILE, LOSS_CURVE_FILE = "validation.png", "loss.png"
GRID_GAP = 4  # white pixels between the tiles of the validation grid
MIN_SIDE = 32  # HR pixels the perceptual metrics need (AlexNet-LPIPS's strides and pools: 32; HaarPSI: 16)
PANEL_INCHES, DPI = (5.0, 3.6), 100

Metric = Callable[[Tensor, Tensor], Tensor]


def perceptual_metric() -> tuple[str, Metric] | None:
    """The perceptual metric of validation: ``(name, fn(sr, hr) -> (B,))`` on images in [0, 1].

    LPIPS v0.1 (AlexNet, as ``srkit bench`` reports it, else VGG) where torchvision's backbone file is in the torch
    hub cache (:class:`srkit.losses.lpips.PixelLPIPS` never downloads it); otherwise HaarPSI (Reisenhofer et al.
    2018), which needs no weights, from ``piq``; ``None``, with a warning, where neither can run.
    """
    from ..losses.lpips import PixelLPIPS, backbone_file

    reasons = []
    for net, name in (("alex", "lpips"), ("vgg", "lpips-vgg")):
        if not backbone_file(net).is_file():  # checked first: building the network to find out costs seconds
            reasons.append(f"no {backbone_file(net)}")
            continue
        try:
            model = PixelLPIPS(net)
        except (WeightsNotFoundError, ConfigError, ImportError, UnsupportedError) as err:
            reasons.append(str(err))
            continue
        log.info("validation metrics: PSNR and LPIPS (%s)", net)
        return name, model
    why = "; ".join(reasons)
    try:
        piq = import_optional("piq", extra="train", needed_for="the HaarPSI validation metric")
    except MissingDependencyError as err:
        log.warning("validation metrics: PSNR only (LPIPS cannot run: %s; %s)", why, err)
        return None
    log.info("validation metrics: PSNR and HaarPSI (LPIPS cannot run: %s)", why)
    return "haarpsi", lambda sr, hr: piq.haarpsi(sr, hr, reduction="none", data_range=1.0)


@contextmanager
def _rng_kept() -> Iterator[None]:
    """Restore every RNG state the checkpoints carry: building LPIPS (its random init before the weights are copied in),
    a method's ``sr()`` and the metrics may draw from the global generators, and training must not see those draws."""
    state = checkpoint.rng_state()
    try:
        yield
    finally:
        checkpoint.read_rng(state)


class Validator:
    """Score ``method.sr()`` on ``pairs`` (a dataset of ``{"name", "hr", "lr"}``) and write the grid in ``output_dir``."""

    def __init__(self, pairs: Dataset, output_dir: Path, *, seed: int = 0):
        with _rng_kept():  # so may a degradation that makes the LR
            self.pairs = [pairs[i] for i in range(len(pairs))]  # type: ignore[arg-type]
            self.perceptual = perceptual_metric()
        if not self.pairs:
            raise ConfigError("the validation set is empty; give validation images (data.val_images, data.val_hr) "
                              "or set train.val_every=0")
        small = [p["name"] for p in self.pairs if min(p["hr"].shape[-2:]) < MIN_SIDE]
        if small:
            raise ConfigError(f"validation images {', '.join(map(str, small[:3]))} are smaller than {MIN_SIDE}x{MIN_SIDE} HR "
                              "pixels, too small for the perceptual metric; raise data.val_crop or use larger images")
        self.output_dir, self.seed = output_dir, seed

    def __call__(self, method: nn.Module) -> dict[str, float]:
        """The mean PSNR (and perceptual metric) of ``method.sr()`` on the pairs; writes ``validation.png``."""
        from ..metrics.fidelity import psnr
        from ..ops.resize import bicubic_upsample

        training = {module: module.training for module in method.modules()}
        method.eval()
        try:
            with _rng_kept():
                rows, scores = [], {"psnr": [], **({self.perceptual[0]: []} if self.perceptual else {})}
                for pair in self.pairs:
                    lr, hr = pair["lr"][None].float(), pair["hr"][None].float()
                    sr = method.sr(lr, seed=self.seed).float().cpu()
                    scores["psnr"].append(float(psnr(sr, hr, crop_border=method.scale)[0]))
                    if self.perceptual:
                        with torch.no_grad():
                            scores[self.perceptual[0]].append(float(self.perceptual[1](sr, hr)[0]))
                    rows.append([bicubic_upsample(lr, method.scale).clamp(0, 1)[0], sr[0], hr[0]])
        finally:
            for module, mode in training.items():  # exactly as before, whatever train() overrides would do
                module.training = mode
        write_image(self.output_dir / GRID_FILE, image_grid(rows))
        return {name: sum(values) / len(values) for name, values in scores.items()}


def image_grid(rows: list[list[Tensor]], gap: int = GRID_GAP) -> Tensor:
    """Tiles (3, h, w) in rows and columns on a white background, each in a cell of the largest tile's size."""
    height = max(tile.shape[-2] for row in rows for tile in row)
    width = max(tile.shape[-1] for row in rows for tile in row)
    columns = max(len(row) for row in rows)
    grid = torch.ones(3, len(rows) * (height + gap) - gap, columns * (width + gap) - gap)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = r * (height + gap), c * (width + gap)
            grid[:, top:top + tile.shape[-2], left:left + tile.shape[-1]] = tile
    return grid


@cache
def _figure_class() -> Any:
    """matplotlib's ``Figure`` (no pyplot: no GUI backend, no global figure state), or ``None`` with one warning."""
    try:
        return import_optional("matplotlib.figure", extra="train", needed_for="the loss-curve PNG").Figure
    except MissingDependencyError as err:
        log.warning("%s; training goes on without %s", err, LOSS_CURVE_FILE)
        return None


def read_log(log_file: Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.jsonl`` by step, the last written winning (a resumed run logs its steps after the
    checkpoint again); a line cut short by a killed process is skipped."""
    rows: dict[int, dict[str, float]] = {}
    for line in log_file.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[int(row["step"])] = row
    return [rows[step] for step in sorted(rows)]


def write_loss_curve(log_file: Path, output: Path) -> Path | None:
    """Plot the losses of ``log_file`` (generator terms; discriminator terms; each validation metric in a panel of its
    own) into the PNG ``output``, atomically; ``None`` without matplotlib or log rows."""
    figure_class = _figure_class()
    if figure_class is None or not log_file.is_file():
        return None
    rows = read_log(log_file)
    keys = sorted({key for row in rows for key in row} - {"step", "lr"})
    panels = [("generator losses", [k for k in keys if "/" not in k]),
              ("discriminator losses", [k for k in keys if k.startswith("disc/")]),
              *((f"validation {k[4:]}", [k]) for k in keys if k.startswith("val/"))]
    panels = [(title, names) for title, names in panels if names]
    if not panels:
        return None
    figure = figure_class(figsize=(PANEL_INCHES[0] * len(panels), PANEL_INCHES[1]), layout="constrained")
    for axis, (title, names) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for name in names:
            points = [(row["step"], row[name]) for row in rows if name in row]
            total = name in ("loss", "disc/loss")
            axis.plot(*zip(*points), label=name, linewidth=1.8 if total else 0.9, marker="o" if len(points) < 30 else None)
        if all(row[name] > 0 for row in rows for name in names if name in row) and title.endswith("losses"):
            axis.set_yscale("log")
        axis.set(title=title, xlabel="step")
        axis.grid(alpha=0.3)
        if len(names) > 1:
            axis.legend(fontsize="small")
    with atomic_file(output) as file:
        figure.savefig(file, format="png", dpi=DPI)
    return output
