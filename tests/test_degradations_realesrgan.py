"""Real-ESRGAN second-order degradation: kernels, published parameter ranges, determinism, devices."""

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from srkit.degradations.kernels import (
    KERNEL_TYPES,
    KernelSpec,
    bivariate_kernel,
    build_kernel,
    circular_lowpass_kernel,
    filter2d,
)
from srkit.degradations.realesrgan import NoiseDraw, RealESRGANDegradation
from srkit.errors import ConfigError, InvalidImageError
from srkit.registry import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf" / "degradation"
N = 1000


def from_yaml(name: str) -> RealESRGANDegradation:
    return instantiate(OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")), where=name)


def assert_freq(count: int, n: int, p: float) -> None:
    """``count`` successes in ``n`` draws agree with probability ``p`` (5 binomial standard deviations)."""
    tol = 5 * math.sqrt(p * (1 - p) / n) + 1e-9
    assert abs(count / n - p) <= tol, f"frequency {count / n:.4f}, expected {p} +- {tol:.4f}"


def assert_covers(values: list[float], low: float, high: float) -> None:
    """All values lie in [low, high] and the draws reach both ends (uniform over 1,000 draws)."""
    assert values, "no draws"
    assert min(values) >= low - 1e-12 and max(values) <= high + 1e-12
    width = high - low
    assert min(values) < low + 0.05 * width and max(values) > high - 0.05 * width


@pytest.fixture(scope="module")
def draws():
    """1,000 single-image draws with ResShift's training values."""
    deg = from_yaml("realesrgan")
    g = torch.Generator().manual_seed(0)
    return [deg.sample(1, g) for _ in range(N)]


# ------------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_kernels_are_normalised_and_point_symmetric(kind):
    for size, sx, sy, theta, beta in [(3, 0.2, 0.2, 0.0, 0.5), (13, 2.5, 0.7, 1.1, 3.9), (21, 3.0, 1.5, -2.0, 1.0)]:
        k = bivariate_kernel(kind, size, sx, sy, theta, beta)
        assert k.shape == (size, size)
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
        assert torch.allclose(k, k.flip(0, 1), atol=1e-15)  # correlation == convolution


def test_gaussian_kernel_closed_form_and_rotation():
    size, sigma = 11, 1.7
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    ref = torch.exp(-(ax[:, None] ** 2 + ax[None] ** 2) / (2 * sigma**2))
    assert torch.allclose(bivariate_kernel("iso", size, sigma, sigma, 0.0), ref / ref.sum(), atol=1e-15)
    # sigma_x along columns; a quarter turn swaps the axes
    wide = bivariate_kernel("aniso", size, 3.0, 0.5, 0.0)
    assert torch.allclose(bivariate_kernel("aniso", size, 3.0, 0.5, math.pi / 2), wide.T, atol=1e-12)
    assert wide[size // 2].sum() > wide[:, size // 2].sum()
    # beta = 1: the generalized Gaussian is the Gaussian, the plateau is 1 / (1 + q)
    assert torch.allclose(bivariate_kernel("generalized_aniso", size, 2.0, 1.0, 0.3, 1.0),
                          bivariate_kernel("aniso", size, 2.0, 1.0, 0.3), atol=1e-15)
    q = (ax[:, None] ** 2 + ax[None] ** 2) / sigma**2
    plateau = 1 / (1 + q**2)
    assert torch.allclose(bivariate_kernel("plateau_iso", size, sigma, sigma, 0.0, 2.0), plateau / plateau.sum(), atol=1e-15)


def test_sinc_kernel_matches_bessel_formula():
    special = pytest.importorskip("scipy.special")
    size, omega = 9, 2.0
    k = circular_lowpass_kernel(omega, size)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    r = (ax[:, None] ** 2 + ax[None] ** 2).sqrt().numpy()
    with torch.no_grad():
        ref = torch.from_numpy(omega * special.j1(omega * r.clip(1e-12)) / (2 * math.pi * r.clip(1e-12)))
    ref[size // 2, size // 2] = omega**2 / (4 * math.pi)
    assert torch.allclose(k, ref / ref.sum(), atol=1e-12)


def test_build_kernel_pads_and_pulse_is_identity():
    k = build_kernel(KernelSpec("iso", 5, 1.0, 1.0), 21)
    assert k.shape == (21, 21) and float(k.sum()) == pytest.approx(1.0) and k[:8].abs().sum() == 0
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    pulse = torch.stack([build_kernel(KernelSpec("pulse", 1), 15)] * 2)
    assert torch.equal(filter2d(x, pulse), x)


def test_filter2d_uses_one_kernel_per_image():
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    k = torch.stack([build_kernel(KernelSpec("iso", 5, 0.5, 0.5), 7), build_kernel(KernelSpec("iso", 5, 2.0, 2.0), 7)])
    out = filter2d(x, k)
    for i in range(2):
        padded = torch.nn.functional.pad(x[i:i + 1], (3, 3, 3, 3), mode="reflect")
        ref = torch.nn.functional.conv2d(padded, k[i].expand(3, 1, 7, 7), groups=3)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-12)


# ------------------------------------------------------------------- published parameter ranges


def test_kernel_draws_follow_the_config(draws):
    stages = [("kernel1", range(3, 21, 2), (0.2, 3.0), 0.1), ("kernel2", range(3, 15, 2), (0.2, 1.5), 0.1)]
    for stage, sizes, sigma, sinc_prob in stages:
        specs = [getattr(d, stage)[0] for d in draws]
        assert_freq(sum(k.kind == "sinc" for k in specs), N, sinc_prob)
        size_counts = Counter(k.size for k in specs)
        assert set(size_counts) == set(sizes)
        for s in sizes:
            assert_freq(size_counts[s], N, 1 / len(sizes))
        mixed = [k for k in specs if k.kind != "sinc"]
        kinds = Counter(k.kind for k in mixed)
        for kind, p in zip(KERNEL_TYPES, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)):
            assert_freq(kinds[kind], len(mixed), p)
        assert_covers([k.sigma_x for k in mixed], *sigma)
        aniso = [k for k in mixed if k.kind.endswith("aniso")]
        assert_covers([k.sigma_y for k in aniso], *sigma)
        assert_covers([k.theta for k in aniso], -math.pi, math.pi)
        assert all(k.sigma_y == k.sigma_x and k.theta == 0 for k in mixed if k.kind.endswith("_iso") or k.kind == "iso")
        betag = [k.beta for k in mixed if k.kind.startswith("generalized")]
        assert min(betag) >= 0.5 and max(betag) <= 4.0
        assert_freq(sum(b < 1 for b in betag), len(betag), 0.5)
        betap = [k.beta for k in mixed if k.kind.startswith("plateau")]
        assert min(betap) >= 1.0 and max(betap) <= 2.0
        for k in specs:
            if k.kind == "sinc":
                assert (math.pi / 3 if k.size < 13 else math.pi / 5) <= k.cutoff <= math.pi
    final = [d.final_sinc[0] for d in draws]
    assert_freq(sum(k.kind == "sinc" for k in final), N, 0.8)
    assert_covers([k.cutoff for k in final if k.kind == "sinc"], math.pi / 3, math.pi)
    assert {k.size for k in final if k.kind == "sinc"} == set(range(3, 15, 2))


def test_resize_noise_and_jpeg_draws_follow_the_config(draws):
    for resize, probs, (low, high) in [("resize1", (0.2, 0.7, 0.1), (0.15, 1.5)), ("resize2", (0.3, 0.4, 0.3), (0.3, 1.2))]:
        rs = [getattr(d, resize) for d in draws]
        for direction, p in zip(("up", "down", "keep"), probs):
            assert_freq(sum(r.direction == direction for r in rs), N, p)
        assert_covers([r.scale for r in rs if r.direction == "up"], 1.0, high)
        assert_covers([r.scale for r in rs if r.direction == "down"], low, 1.0)
        assert all(r.scale == 1.0 for r in rs if r.direction == "keep")
        for mode in ("area", "bilinear", "bicubic"):
            assert_freq(sum(r.mode == mode for r in rs), N, 1 / 3)
    for noise, sigma, poisson in [("noise1", (1, 30), (0.05, 3.0)), ("noise2", (1, 25), (0.05, 2.5))]:
        ns = [getattr(d, noise) for d in draws]
        assert_freq(sum(n.gaussian for n in ns), N, 0.5)
        assert_covers([float(n.level[0]) for n in ns if n.gaussian], *sigma)
        assert_covers([float(n.level[0]) for n in ns if not n.gaussian], *poisson)
        assert_freq(sum(bool(n.gray[0]) for n in ns), N, 0.4)
    for jpeg in ("jpeg1", "jpeg2"):
        qualities = [float(getattr(d, jpeg)[0]) for d in draws]
        assert_covers(qualities, 30, 95)
        assert sum(qualities) / N == pytest.approx(62.5, abs=5 * 65 / math.sqrt(12 * N))
    assert_freq(sum(d.second_order for d in draws), N, 0.5)
    assert_freq(sum(d.second_blur for d in draws), N, 0.8)
    assert_freq(sum(d.resize_then_jpeg for d in draws), N, 0.5)


def test_resshift_test_config_is_first_order_and_mild():
    deg = from_yaml("resshift_test")
    g = torch.Generator().manual_seed(1)
    ds = [deg.sample(1, g) for _ in range(300)]
    assert not any(d.second_order for d in ds)
    k1 = [d.kernel1[0] for d in ds]
    assert {k.kind for k in k1} <= {"iso", "aniso", "sinc"} and {k.size for k in k1} <= set(range(3, 13, 2))
    assert max(k.sigma_x for k in k1 if k.kind != "sinc") <= 0.8
    jpeg1, jpeg2 = [float(d.jpeg1[0]) for d in ds], [float(d.jpeg2[0]) for d in ds]
    assert min(jpeg1) >= 70 and max(jpeg1) <= 95 and min(jpeg2) >= 80 and max(jpeg2) <= 100
    assert max(float(d.noise1.level[0]) for d in ds if d.noise1.gaussian) <= 15
    lr = deg(torch.rand(2, 3, 64, 64), g)
    assert lr.shape == (2, 3, 16, 16)


def test_yaml_mirrors_the_constructor_defaults():
    yaml = from_yaml("realesrgan")
    default = RealESRGANDegradation()
    assert vars(yaml) == vars(default)


# ------------------------------------------------------------------------------ applying


@pytest.fixture(scope="module")
def photo():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 16, 16, generator=g)
    return torch.nn.functional.interpolate(x, size=(64, 48), mode="bicubic").clamp(0, 1).expand(2, -1, -1, -1).contiguous()


def test_same_generator_same_lr_and_global_rng_untouched(photo):
    deg = RealESRGANDegradation()
    state = torch.get_rng_state()
    a = deg(photo, torch.Generator().manual_seed(7))
    b = deg(photo, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_lr_statistics_differ_across_seeds(photo):
    deg = RealESRGANDegradation()
    stats = {(round(float(lr.mean()), 6), round(float(lr.std()), 6))
             for lr in (deg(photo, torch.Generator().manual_seed(s)) for s in range(4))}
    assert len(stats) == 4


@pytest.mark.parametrize("scale", [2, 4])
def test_output_size_range_and_levels(photo, scale):
    deg = RealESRGANDegradation(scale=scale)
    for seed in range(3):
        lr = deg(photo, torch.Generator().manual_seed(seed))
        assert lr.shape == (2, 3, 64 // scale, 48 // scale)
        assert float(lr.min()) >= 0 and float(lr.max()) <= 1
        assert torch.equal(lr, (lr * 255).round() / 255)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(photo, dtype):
    lr = RealESRGANDegradation()(photo.to(dtype), torch.Generator().manual_seed(0))
    ref = RealESRGANDegradation()(photo, torch.Generator().manual_seed(0))
    assert lr.dtype == dtype and torch.isfinite(lr).all()
    assert (lr.float() - ref).abs().mean() < 0.02


@pytest.mark.gpu
def test_cuda_matches_cpu(photo):
    deg = RealESRGANDegradation()
    cpu = deg(photo, torch.Generator().manual_seed(5))
    cuda = deg(photo.cuda(), torch.Generator().manual_seed(5))  # CPU generator: same draws on any device
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() - cpu).abs().mean() < 2 / 255
    on_device = deg(photo.cuda(), torch.Generator("cuda").manual_seed(5))
    assert on_device.shape == cpu.shape and torch.equal(on_device, deg(photo.cuda(), torch.Generator("cuda").manual_seed(5)))


def test_gaussian_and_poisson_noise_levels():
    flat = torch.full((2, 3, 64, 64), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    color = RealESRGANDegradation._add_noise(flat, NoiseDraw(True, torch.tensor([10.0, 20.0]), torch.tensor([False, True])), g)
    assert float((color[0] - 0.5).std()) == pytest.approx(10 / 255, rel=0.05)
    assert float((color[1] - 0.5).std()) == pytest.approx(20 / 255, rel=0.05)
    assert torch.equal(color[1, 0], color[1, 2]) and not torch.equal(color[0, 0], color[0, 2])
    # one 8-bit level -> 1 photon per unit: noise = scale * (Poisson(0.5) - 0.5)
    poisson = RealESRGANDegradation._add_noise(flat, NoiseDraw(False, torch.tensor([0.05, 0.05]), torch.tensor([False, False])), g)
    assert float((poisson - 0.5).mean()) == pytest.approx(0.0, abs=0.003)
    assert float((poisson - 0.5).std()) == pytest.approx(0.05 * math.sqrt(0.5), rel=0.05)


def test_bad_config_and_inputs():
    with pytest.raises(ConfigError, match="sinc_prob"):
        RealESRGANDegradation(sinc_prob=1.5)
    with pytest.raises(ConfigError, match="blur_kernel_size"):
        RealESRGANDegradation(blur_kernel_size=20)
    with pytest.raises(ConfigError, match="kernel_prob"):
        RealESRGANDegradation(kernel_prob=[1.0, 0.0])
    with pytest.raises(ConfigError, match="jpeg_range"):
        RealESRGANDegradation(jpeg_range=[95, 30])
    with pytest.raises(ConfigError, match="kernel_list"):
        RealESRGANDegradation(kernel_list=["box"], kernel_prob=[1.0])
    deg = RealESRGANDegradation()
    with pytest.raises(InvalidImageError, match="divisible by scale 4"):
        deg(torch.rand(1, 3, 30, 32), torch.Generator().manual_seed(0))
    with pytest.raises(InvalidImageError, match=r"\(B, 3, H, W\)"):
        deg(torch.rand(3, 32, 32), torch.Generator().manual_seed(0))
