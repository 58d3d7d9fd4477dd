"""The benchmark's pictures: the labelled zoom grid (Pillow, a core dependency) and the plots (matplotlib, the
optional ``[plots]`` extra; without it each plot is skipped with the reason, and the tables are still written).

- :func:`zoom_grid`: per image, the whole HR with a box where the zoom sits, then the zoomed crop of the LR, of each
  method and of the HR, each captioned with its label and its metric values.
- :func:`metric_vs_steps`, :func:`perception_distortion`: one metric against the step count per method (methods
  that do not sample as dashed lines), and a perceptual metric against PSNR, one point per method.
- :func:`std_maps`: CCSR's L-STD (Eq. (5)) as a map, the per-pixel std over seeds of one image per method.
- :func:`sweep_plot`: metrics against a knob (PG-ResShift's guidance strength in ``benchmarks/claims.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MissingDependencyError, import_optional
from ..io import atomic_file, write_image

__all__ = ["Panel", "detail_window", "metric_vs_steps", "perception_distortion", "std_maps", "sweep_plot", "zoom_grid"]

CELL = 192  # pixels of a grid cell's image side
BOX_COLOUR = (1.0, 0.1, 0.1)
DPI = 110


@dataclass
class Panel:
    """One cell of a grid row: its caption, the image crop and its metric values (name -> value)."""

    label: str
    image: Tensor
    values: Mapping[str, float] | None = None


def detail_window(image: Tensor, size: int, multiple: int = 1) -> tuple[int, int]:
    """Top-left (top, left), multiples of ``multiple``, of the ``size`` x ``size`` window of ``image`` (3, H, W) with
    the most detail (the energy of the Laplacian of its luma): where methods differ, not a flat sky."""
    luma = (image[:1] * 0.299 + image[1:2] * 0.587 + image[2:3] * 0.114)[None].float()
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    energy = F.conv2d(luma, kernel, padding=1) ** 2
    step = max(multiple, size // 4 // multiple * multiple)
    scores = F.avg_pool2d(energy, size, stride=step)[0, 0]
    row, column = divmod(int(scores.argmax()), scores.shape[-1])
    return row * step, column * step


def _text_strip(width: int, lines: Sequence[str], size: int = 13) -> Tensor:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    height = 4 + (size + 3) * len(lines)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, 2 + i * (size + 3)), line, fill="black", font=font)
    pixels = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return pixels.permute(2, 0, 1).float() / 255


def _boxed(image: Tensor, top: int, left: int, size: int, width: int = 3) -> Tensor:
    out = image.clone()
    colour = torch.tensor(BOX_COLOUR).view(3, 1, 1)
    bottom, right = min(top + size, image.shape[-2]), min(left + size, image.shape[-1])
    for rows, columns in [((top, top + width), (left, right)), ((bottom - width, bottom), (left, right)),
                          ((top, bottom), (left, left + width)), ((top, bottom), (right - width, right))]:
        out[:, max(rows[0], 0) : rows[1], max(columns[0], 0) : columns[1]] = colour
    return out


# The metric values a grid cell shows, first of each family, in this order (at most four, two a line).
SHOWN = ("psnr@", "psnr-rgb@", "ssim@", "lpips", "haarpsi", "dists", "niqe", "musiq", "clipiqa", "maniqa")


def _value_lines(values: Mapping[str, float]) -> list[str]:
    picked: list[str] = []
    for family in SHOWN:
        key = next((k for k in sorted(values) if k == family or (family.endswith("@") and k.startswith(family))), None)
        if key is not None and len(picked) < 4:
            picked.append(f"{key.split('@')[0]} {values[key]:.4g}")
    return ["  ".join(picked[i : i + 2]) for i in range(0, len(picked), 2)]


def zoom_grid(rows: Sequence[tuple[Tensor, tuple[int, int, int], Sequence[Panel]]]) -> Tensor:
    """The grid image: per row ``(overview, (top, left, size), panels)``, the overview (the whole HR, or the upsampled
    LR) scaled to :data:`CELL` pixels high with the box ``(top, left, size)`` drawn, then each panel's crop
    zoomed to CELL x CELL (nearest), captioned with its label and up to four metric values."""
    lines = max((1 + len(_value_lines(p.values or {})) for _, _, panels in rows for p in panels), default=1)
    strips = []
    for overview, (top, left, size), panels in rows:
        boxed = _boxed(overview.float().cpu(), top, left, size, width=max(2, overview.shape[-2] // CELL * 2))
        scale = CELL / boxed.shape[-2]
        small = F.interpolate(boxed[None], size=(CELL, max(1, round(boxed.shape[-1] * scale))), mode="area")[0]
        cells = [torch.cat([_text_strip(small.shape[-1], ["whole image (box: the zoom)"] + [""] * (lines - 1)), small], 1)]
        for panel in panels:
            zoomed = F.interpolate(panel.image.float().cpu()[None], size=(CELL, CELL), mode="nearest")[0]
            text = [panel.label[:30], *_value_lines(panel.values or {})]
            cells.append(torch.cat([_text_strip(CELL, text + [""] * (lines - len(text))), zoomed], 1))
        gap = torch.ones(3, cells[0].shape[-2], 4)
        strips.append(torch.cat([c for cell in cells for c in (cell, gap)][:-1], 2))
    width = max(s.shape[-1] for s in strips)
    padded = [F.pad(s, (0, width - s.shape[-1]), value=1.0) for s in strips]
    return torch.cat([t for s in padded for t in (s, torch.ones(3, 6, width))][:-1], 1).clamp(0, 1)


def write_zoom_grid(path: Path, rows: Sequence[tuple[Tensor, tuple[int, int, int], Sequence[Panel]]]) -> Path | None:
    return write_image(path, zoom_grid(rows)) if rows else None


# ------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float) -> Any:
    figure_class = import_optional("matplotlib.figure", extra="plots", needed_for="the benchmark's plots").Figure
    return figure_class(figsize=(width, height), layout="constrained")


def _save(figure: Any, path: Path) -> Path:
    with atomic_file(path) as file:
        figure.savefig(file, format="png", dpi=DPI)
    return path


def _plot(draw: Any, path: Path, size: tuple[float, float]) -> str:
    """``draw(figure)`` saved to ``path``: the path written, or why not (matplotlib missing, nothing to plot)."""
    try:
        figure = _figure(*size)
    except MissingDependencyError as err:
        return f"n/a: {err}"
    why = draw(figure)
    return why if why else str(_save(figure, path))


Point = tuple[str, int | None, Mapping[str, float]]  # (series label, steps or None, metric -> value)


def metric_vs_steps(path: Path, points: Sequence[Point], metrics: Sequence[str], title: str) -> str:
    """One panel per metric: each series' value against its step count; series without steps as dashed lines. One
    legend for the figure, below the panels."""

    def draw(figure: Any) -> str | None:
        shown = [m for m in metrics if any(m in values for _, _, values in points)]
        if not shown:
            return "n/a: none of the metrics was measured"
        labels = list(dict.fromkeys(label for label, _, _ in points))
        for axis, metric in zip(figure.subplots(1, len(shown), squeeze=False)[0], shown):
            for index, label in enumerate(labels):
                xy = sorted((steps, values[metric]) for name, steps, values in points
                            if name == label and metric in values and steps is not None)
                flat = [values[metric] for name, steps, values in points if name == label and metric in values and steps is None]
                if xy:
                    axis.plot(*zip(*xy), marker="o", color=f"C{index}", label=label)
                for value in flat:
                    axis.axhline(value, linestyle="--", linewidth=1, color=f"C{index}", label=f"{label} (no steps)")
            axis.set(title=metric.split("@")[0], xlabel="steps")
            axis.grid(alpha=0.3)
        handles, names = figure.axes[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncols=2, fontsize="small")
        figure.suptitle(title)
        return None

    return _plot(draw, path, (4.6 * max(1, len(metrics)), 4.2))


def perception_distortion(path: Path, points: Sequence[tuple[str, float, float]], *, distortion: str, perception: str,
                          lower_is_better: bool, title: str) -> str:
    """A perceptual metric against a distortion metric (PSNR), one labelled point per method."""

    def draw(figure: Any) -> str | None:
        if not points:
            return f"n/a: no method has both {distortion} and {perception}"
        axis = figure.subplots()
        for i, (label, x, y) in enumerate(points):
            axis.scatter([x], [y], color=f"C{i}", label=label)
        better = "lower" if lower_is_better else "higher"
        axis.set(title=title, xlabel=f"{distortion.split('@')[0]} (higher: less distortion)",
                 ylabel=f"{perception} ({better} is better)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
        return None

    return _plot(draw, path, (6.0, 4.4))


def std_maps(path: Path, maps: Sequence[tuple[str, Tensor]], title: str) -> str:
    """CCSR's L-STD as images: per method, the per-pixel std over seeds of one image (mean over channels)."""

    def draw(figure: Any) -> str | None:
        if not maps:
            return "n/a: no method ran several seeds of a stability table"
        top = max(float(m.max()) for _, m in maps) or 1.0
        axes = figure.subplots(1, len(maps), squeeze=False)[0]
        for axis, (label, std) in zip(axes, maps):
            shown = axis.imshow(std.cpu().numpy(), cmap="magma", vmin=0, vmax=top)
            axis.set(title=f"{label[:28]}\nL-STD {float(std.mean()):.4f}")
            axis.axis("off")
        figure.colorbar(shown, ax=list(axes), shrink=0.8, label="std over seeds")
        figure.suptitle(title)
        return None

    return _plot(draw, path, (3.4 * max(1, len(maps)) + 1, 3.6))


def sweep_plot(path: Path, knob: str, series: Mapping[str, Sequence[tuple[float, Mapping[str, float | None]]]],
               metrics: Sequence[str], title: str) -> str:
    """One panel per metric: each series' value against ``knob`` (e.g. the guidance strength)."""

    def draw(figure: Any) -> str | None:
        for axis, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics):
            for label, xy in series.items():
                kept = [(x, v[metric]) for x, v in xy if v.get(metric) is not None]
                if kept:
                    axis.plot(*zip(*kept), marker="o", label=label)
            axis.set(title=metric, xlabel=knob)
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
        figure.suptitle(title)
        return None

    return _plot(draw, path, (4.2 * len(metrics), 3.4))
