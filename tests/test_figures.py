"""The benchmark's pictures (srkit.metrics.figures): the zoom lands on detail, the box sits where the zoom is, every
cell is captioned; each plot writes a PNG, or says why not (nothing to plot, matplotlib missing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srkit.io import read_image
from srkit.metrics import figures


def _textured(size: int = 64, corner: tuple[int, int] = (32, 16)) -> torch.Tensor:
    image = torch.full((3, size, size), 0.5)
    top, left = corner
    image[:, top : top + 16, left : left + 16] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    return image


def test_the_zoom_window_lands_on_the_detail_in_multiples_of_the_scale():
    top, left = figures.detail_window(_textured(), 16, multiple=4)
    assert (top, left) == (32, 16) and top % 4 == 0 and left % 4 == 0


def test_the_grid_boxes_the_zoom_and_captions_every_cell():
    hr = _textured()
    values = {"psnr@crop4": 23.5, "ssim@crop4": 0.61, "haarpsi": 0.7}
    panels = [figures.Panel("LR", hr[:, 32:48, 16:32]), figures.Panel("method", hr[:, 32:48, 16:32], values)]
    grid = figures.zoom_grid([(hr, (32, 16, 16), panels)])
    cell = figures.CELL
    strip = grid.shape[-2] - cell  # the caption strip above the images (one label line + one value line)
    assert grid.shape[-2] > cell and grid.shape[-1] == 3 * cell + 2 * 4
    overview = grid[:, strip:, :cell]  # the whole image scaled to CELL: the box at 3x (32, 16) .. (48, 32)
    red = (overview[0] > 0.9) & (overview[1] < 0.3) & (overview[2] < 0.3)
    rows, columns = red.nonzero(as_tuple=True)
    assert (int(rows.min()), int(columns.min())) == (96, 48) and (int(rows.max()), int(columns.max())) == (143, 95)
    for index in range(3):  # each cell's caption has ink
        caption = grid[:, :strip, index * (cell + 4) : index * (cell + 4) + cell]
        assert (caption < 0.5).any(), index
    torch.testing.assert_close(grid[:, strip:, 2 * (cell + 4) :], torch.nn.functional.interpolate(
        hr[None, :, 32:48, 16:32], size=(cell, cell), mode="nearest")[0])


def test_each_plot_writes_a_png_or_says_why_not(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    points = [("lpnsr", 1, {"psnr": 20.0, "haarpsi": 0.3}), ("lpnsr", 4, {"psnr": 19.0, "haarpsi": 0.32}),
              ("bicubic", None, {"psnr": 23.0, "haarpsi": 0.5})]
    written = {
        "steps": figures.metric_vs_steps(tmp_path / "steps.png", points, ["psnr", "haarpsi"], "t"),
        "pd": figures.perception_distortion(tmp_path / "pd.png", [("a", 20.0, 0.3), ("b", 23.0, 0.5)], distortion="psnr",
                                            perception="haarpsi", lower_is_better=False, title="t"),
        "lstd": figures.std_maps(tmp_path / "lstd.png", [("ccsr", torch.rand(32, 32))], "t"),
        "sweep": figures.sweep_plot(tmp_path / "sweep.png", "strength", {"a": [(0.0, {"psnr": 15.0}), (1.0, {"psnr": 12.0})]},
                                    ["psnr"], "t"),
    }
    for name, where in written.items():
        assert Path(where).is_file() and read_image(where).shape[0] == 3, name
    assert figures.metric_vs_steps(tmp_path / "x.png", points, ["lpips"], "t") == "n/a: none of the metrics was measured"
    assert figures.perception_distortion(tmp_path / "y.png", [], distortion="psnr", perception="lpips",
                                         lower_is_better=True, title="t").startswith("n/a: no method has both")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()

    def missing(*args, **kwargs):
        raise figures.MissingDependencyError('the plots need matplotlib; pip install "srkit[plots]"')

    monkeypatch.setattr(figures, "import_optional", missing)
    assert "srkit[plots]" in figures.std_maps(tmp_path / "z.png", [("ccsr", torch.rand(4, 4))], "t")
