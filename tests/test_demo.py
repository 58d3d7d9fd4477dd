import pytest
import torch
from PIL import Image

from srkit.demo import bundled_photo, psnr, run_demo, side_by_side


def test_bundled_photo_is_a_real_rgb_photograph():
    hr = bundled_photo()
    assert hr.shape == (3, 384, 384)
    assert 0.2 < hr.std().item() * 4 < 2  # textured, not a flat or synthetic test card


def test_demo_writes_results_and_comparison(tmp_path):
    paths = run_demo(tmp_path, ["bicubic"], device="cpu")
    assert set(paths) == {"lr", "hr", "bicubic", "comparison"}
    with Image.open(paths["lr"]) as lr, Image.open(paths["bicubic"]) as sr, Image.open(paths["comparison"]) as grid:
        assert lr.size == (96, 96) and sr.size == (384, 384)
        assert grid.size == (3 * 384, 384 + 18)


def test_demo_shows_the_zoo_models_labelled_as_such(tmp_path):
    paths = run_demo(tmp_path, ["bicubic"], zoo=["resshift"], device="cpu")
    assert set(paths) == {"lr", "hr", "bicubic", "resshift-zoo", "comparison"}
    with Image.open(paths["resshift-zoo"]) as sr, Image.open(paths["comparison"]) as grid:
        assert sr.size == (384, 384) and grid.size == (4 * 384, 384 + 18)


@pytest.mark.slow
def test_demo_with_real_weights_writes_all(tmp_path):
    paths = run_demo(tmp_path, ["bicubic", "realesrgan"], device="cpu")
    assert paths["realesrgan"].exists() and paths["comparison"].exists()


def test_psnr_and_panels():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a) == float("inf")
    assert abs(psnr(a, a + 0.1) - 20.0) < 1e-9
    grid = side_by_side({"a": torch.zeros(3, 10, 12), "b": torch.ones(3, 10, 12)})
    assert grid.shape == (3, 28, 24) and grid[:, 18:, 12:].min() == 1
