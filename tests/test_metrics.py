"""PSNR/SSIM on Y against a from-scratch NumPy reference and pyiqa; G-STD/L-STD on known answers."""

import math

import numpy as np
import pytest
import torch

from srkit.errors import InvalidImageError, SrkitError
from srkit.metrics import iqa
from srkit.metrics.fidelity import psnr, rgb_to_y, ssim
from srkit.metrics.stability import LocalStd, g_std, l_std, stability


def pairs(n=3, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, size, size + 8, generator=g)
    blur = torch.nn.functional.avg_pool2d(hr, 3, 1, 1)  # a structured, not purely random, distortion
    sr = (0.7 * blur + 0.3 * hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    return sr, hr


def np_y(img):
    """MATLAB rgb2ycbcr luma, 0..255 scale, of (H, W, 3) RGB in [0, 1]."""
    return 16 + img[..., 0] * 65.481 + img[..., 1] * 128.553 + img[..., 2] * 24.966


def np_psnr(sr, hr, crop):
    a = np_y(sr)[crop:-crop, crop:-crop] / 255
    b = np_y(hr)[crop:-crop, crop:-crop] / 255
    return 10 * np.log10(1 / (np.mean((a - b) ** 2) + 1e-8))


def np_ssim(sr, hr, crop):
    a = np.round(np_y(sr)[crop:-crop, crop:-crop])
    b = np.round(np_y(hr)[crop:-crop, crop:-crop])
    x = np.arange(11) - 5
    k = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    k /= k.sum()

    def filt(img):  # 'valid' 2-D correlation with the 11x11 window
        win = np.lib.stride_tricks.sliding_window_view(img, (11, 11))
        return np.einsum("ijkl,kl->ij", win, k)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    cs = np.maximum((2 * cov + c2) / (var_a + var_b + c2), 0)
    return np.mean((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs)


def to_np(x):
    return x.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("crop", [4, 2])
def test_psnr_ssim_equal_numpy_reference(crop):
    sr, hr = pairs()
    got_p, got_s = psnr(sr, hr, crop_border=crop), ssim(sr, hr, crop_border=crop)
    for i in range(len(sr)):
        assert got_p[i].item() == pytest.approx(np_psnr(to_np(sr[i]), to_np(hr[i]), crop), abs=1e-8)
        assert got_s[i].item() == pytest.approx(np_ssim(to_np(sr[i]), to_np(hr[i]), crop), abs=1e-8)
    assert got_s.min() > 0.2 and got_s.max() < 0.99 and 10 < got_p.min() < 40


def test_psnr_ssim_equal_pyiqa():
    pyiqa = pytest.importorskip("pyiqa", reason="pyiqa not installed (pip install 'srkit[metrics]')")
    sr, hr = pairs(n=2, size=64, seed=3)
    opts = {"test_y_channel": True, "color_space": "ycbcr", "crop_border": 4}
    ref_p = pyiqa.create_metric("psnr", device="cpu", **opts)(sr, hr).double()
    ref_s = pyiqa.create_metric("ssim", device="cpu", **opts)(sr, hr).double()
    torch.testing.assert_close(psnr(sr, hr, crop_border=4), ref_p.reshape(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(ssim(sr, hr, crop_border=4), ref_s.reshape(-1), atol=1e-4, rtol=0)


def test_psnr_ssim_equal_pyiqa_on_srkit_mini():
    pyiqa = pytest.importorskip("pyiqa", reason="pyiqa not installed (pip install 'srkit[metrics]')")
    mini = pytest.importorskip("srkit.data.mini", reason="srkit-mini not available")
    from srkit.ops.resize import imresize

    opts = {"test_y_channel": True, "color_space": "ycbcr", "crop_border": 4}
    p, s = pyiqa.create_metric("psnr", device="cpu", **opts), pyiqa.create_metric("ssim", device="cpu", **opts)
    for pair in mini.mini_pairs("bicubic", 4, 256)[:2]:
        sr = imresize(pair.lr[None], scale=4).clamp(0, 1)
        hr = pair.hr[None]
        assert psnr(sr, hr).item() == pytest.approx(p(sr, hr).item(), abs=1e-4)
        assert ssim(sr, hr).item() == pytest.approx(s(sr, hr).item(), abs=1e-4)


def test_original_ssim_equals_scikit_image_on_the_full_range_luma_and_differs_from_the_papers_y():
    """``ssim-yiq`` is Wang et al.'s SSIM on the grey image 0.299R + 0.587G + 0.114B (0..255, rounded): scikit-image's
    independent implementation with the paper's Gaussian window (sigma 1.5, population covariance) gives the same."""
    skimage_metrics = pytest.importorskip("skimage.metrics")
    mini = pytest.importorskip("srkit.data.mini", reason="srkit-mini not available")
    from srkit.ops.resize import imresize

    gaps = []
    for pair in mini.mini_pairs("bicubic", 4, 256)[:3]:
        sr, hr = imresize(pair.lr[None], scale=4).clamp(0, 1), pair.hr[None]
        grey = [np.round(to_np(x[0]) @ np.array([0.299, 0.587, 0.114]) * 255) for x in (sr, hr)]
        want = skimage_metrics.structural_similarity(*grey, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                     data_range=255)
        got = iqa.get_metric("ssim-yiq", crop_border=0)(sr, hr).item()
        assert got == pytest.approx(want, abs=1e-6)
        gaps.append(abs(got - iqa.get_metric("ssim", crop_border=0)(sr, hr).item()))
    assert max(gaps) > 1e-3  # the two definitions are not interchangeable: a table names the one it means


def test_psnr_rgb_is_over_the_three_channels():
    sr, hr = pairs(n=2)
    got = iqa.get_metric("psnr-rgb", crop_border=2)(sr, hr)
    mse = ((sr - hr)[..., 2:-2, 2:-2].double() ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(got, 10 * torch.log10(1 / (mse + 1e-8)))
    assert not torch.allclose(got, psnr(sr, hr, crop_border=2))


def test_known_values():
    hr = torch.full((1, 3, 24, 24), 0.5)
    assert ssim(hr, hr).item() == pytest.approx(1.0)
    assert psnr(hr, hr).item() == pytest.approx(80.0)  # 10 log10(1 / 1e-8): pyiqa's eps
    # Y of white and black is 235 and 16 (limited range); PSNR of black vs white on Y
    assert rgb_to_y(torch.ones(1, 3, 1, 1)).item() == pytest.approx(235.0)
    black, white = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)
    assert psnr(black, white).item() == pytest.approx(-20 * math.log10(219 / 255), abs=1e-6)


def test_bad_inputs_raise_srkit_errors():
    sr, hr = pairs(n=1, size=32)
    with pytest.raises(InvalidImageError, match="equal sizes"):
        psnr(sr, hr[..., :-1])
    with pytest.raises(InvalidImageError, match="crop_border"):
        ssim(sr, hr, crop_border=16)
    with pytest.raises(InvalidImageError, match="11x11"):
        ssim(sr[..., :16, :16], hr[..., :16, :16], crop_border=4)
    with pytest.raises(InvalidImageError, match=r"0\.\.255"):
        psnr(sr * 255, hr)


def test_g_std_known_answer():
    # 2 images x 3 runs: image 1 values 1, 2, 3 (population std sqrt(2/3)); image 2 constant (std 0)
    values = [[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]
    assert g_std(values) == pytest.approx(math.sqrt(2 / 3) / 2)
    with pytest.raises(SrkitError):
        g_std([[1.0, 2.0]])


def test_l_std_known_answer_and_streaming_equal():
    # Runs alternate a pixel between a and b: per-pixel population std |a - b| / 2
    runs = torch.zeros(4, 2, 3, 5, 5, dtype=torch.float64)
    runs[0::2, 0] = 0.2
    runs[1::2, 0] = 0.6  # image 0: std 0.2 everywhere
    runs[:, 1, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0])  # image 1: std 0.5 at one of 75 values
    expected = (0.2 + 0.5 / 75) / 2
    assert l_std(runs) == pytest.approx(expected)
    local = LocalStd()
    for j in range(2):
        for i in range(4):
            local.update(runs[i, j])
        local.image_value()
    assert local.value == pytest.approx(expected)


class NoisyIdentity:
    """A 'method' whose output is the HR plus seeded noise: G-STD and L-STD are known in distribution."""

    def __init__(self, hr, sigma):
        self.hr, self.sigma = hr, sigma

    def sr(self, lr, *, seed, steps=None):
        g = torch.Generator().manual_seed(seed)
        return self.hr[None] + self.sigma * torch.randn(self.hr[None].shape, generator=g)


def test_stability_of_a_method():
    hr = torch.full((3, 24, 24), 0.5)
    pair = (hr[:, ::4, ::4], hr)
    l1 = {"l1": lambda a, b: (a - b).abs().mean(dim=(1, 2, 3)), "max": lambda a, b: (a - b).abs().amax(dim=(1, 2, 3))}
    runs = []
    result = stability(NoisyIdentity(hr, sigma=0.01), [pair, pair], l1, seeds=range(8), crop_border=2, std_maps=1,
                       on_run=lambda: runs.append(1))
    assert result.l_std == pytest.approx(0.01 * math.sqrt(7 / 8) * 0.95, rel=0.1)  # E[population std] ~ sigma
    assert 0 < result.g_std["l1"] < 0.001 and result.mean["l1"] == pytest.approx(0.01 * math.sqrt(2 / math.pi), rel=0.05)
    assert result.mean["max"] > 3 * result.mean["l1"] and set(result.g_std) == {"l1", "max"}
    assert len(result.values["l1"]) == 8 and len(result.values["l1"][0]) == 2 and len(runs) == 16
    assert len(result.std_maps) == 1 and result.std_maps[0].shape == (3, 20, 20)
    assert float(result.std_maps[0].mean()) == pytest.approx(result.l_std, rel=0.1)  # both images draw the same noise
    deterministic = stability(NoisyIdentity(hr, 0.0), [pair], l1, seeds=[0, 1])
    assert deterministic.g_std == {"l1": 0, "max": 0} and deterministic.l_std == 0 and deterministic.std_maps == ()


def test_unknown_metric_and_missing_pyiqa(monkeypatch):
    with pytest.raises(iqa.MetricUnavailable, match="Did you mean 'musiq'"):
        iqa.get_metric("musiqq")
    monkeypatch.setitem(__import__("sys").modules, "pyiqa", None)  # import pyiqa -> ImportError
    monkeypatch.setattr(iqa, "niqe_params_path", lambda: None)
    with pytest.raises(iqa.MetricUnavailable, match="pip install 'srkit\\[metrics\\]'"):
        iqa.get_metric("lpips")


def test_pyiqa_metric_without_weights_is_unavailable(monkeypatch):
    pytest.importorskip("pyiqa", reason="pyiqa not installed")
    import pyiqa

    def no_network(*args, **kwargs):
        raise OSError("no route to the weights")

    monkeypatch.setattr(pyiqa, "create_metric", no_network)
    with pytest.raises(iqa.MetricUnavailable, match="no route to the weights"):
        iqa.get_metric("musiq")


def test_niqe_offline_from_bundled_params():
    pytest.importorskip("pyiqa", reason="pyiqa not installed")
    if iqa.niqe_params_path() is None:
        pytest.skip("no installed package ships niqe_pris_params.npz (pip install basicsr-fixed)")
    from srkit.demo import bundled_photo

    metric = iqa.get_metric("niqe")
    sharp = bundled_photo()[None][..., :256, :256]
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2)
    a, b = metric(sharp).item(), metric(blurred).item()
    assert 1 < a < 10 and b > a + 1


def test_import_srkit_does_not_import_pyiqa():
    import subprocess
    import sys

    code = "import sys, srkit, srkit.metrics.bench, srkit.metrics.iqa; print('pyiqa' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
