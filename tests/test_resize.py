"""srkit.ops.resize.imresize against MATLAB's algorithm (NumPy loop reference) and Pillow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srkit.errors import ConfigError, InvalidImageError
from srkit.ops.resize import contributions, imresize

# ------------------------------------------------------------------------------------------
# An independent, deliberately naive NumPy transcription of MATLAB's imresize (bicubic).


def _cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _mirror(j: int, n: int) -> int:
    """Symmetric padding of a 1-based index: 0 -> 1, -1 -> 2, n+1 -> n, n+2 -> n-1, ..."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def _ref_axis0(a: np.ndarray, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    n = a.shape[0]
    stretch = scale < 1 and antialias
    width = 4 / scale if stretch else 4.0
    out = np.zeros((out_len, *a.shape[1:]), dtype=np.float64)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = range(left, left + math.ceil(width) + 2)
        ws = [scale * _cubic(scale * (u - j)) if stretch else _cubic(u - j) for j in taps]
        total = sum(ws)
        for j, w in zip(taps, ws):
            out[i - 1] += (w / total) * a[_mirror(j, n) - 1]
    return out


def ref_imresize(img: np.ndarray, scale=None, size=None, antialias=True) -> np.ndarray:
    """(H, W) float64 -> resized, MATLAB semantics (smaller scale first)."""
    h, w = img.shape
    if size is None:
        size = (math.ceil(h * scale), math.ceil(w * scale))
        sh = sw = scale
    elif scale is None:
        sh, sw = size[0] / h, size[1] / w
    else:
        sh = sw = scale
    out = img.astype(np.float64)
    order = [0, 1] if sh <= sw else [1, 0]
    for axis in order:
        out = _ref_axis0(out, size[0], sh, antialias) if axis == 0 else _ref_axis0(out.T, size[1], sw, antialias).T
    return out


def _smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((h, w))


# ------------------------------------------------------------------------------------------
# (a) exact agreement with the MATLAB algorithm


CASES = [
    # (H, W, scale, size)
    (24, 20, 1 / 4, None),
    (21, 18, 1 / 3, None),
    (16, 14, 1 / 2, None),
    (9, 7, 2, None),
    (8, 6, 3, None),
    (7, 5, 4, None),
    (19, 23, 0.37, None),
    (6, 9, 2.5, None),
    (20, 16, None, (7, 13)),  # down along H, slightly down along W
    (10, 12, None, (23, 9)),  # up along H, down along W (W resized first)
    (5, 8, None, (5, 17)),  # identity along H
    (24, 24, 1 / 4, (6, 6)),  # size and scale: size for the shape, scale for the kernel
    (3, 2, 1 / 2, None),  # tiny: mirroring wraps more than once
    (1, 4, 3, None),  # a single row
]


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize(("h", "w", "scale", "size"), CASES)
def test_matches_numpy_matlab_reference(h, w, scale, size, antialias):
    img = _smooth_image(h, w, seed=h * 100 + w)
    expected = ref_imresize(img, scale=scale, size=size, antialias=antialias)
    got = imresize(torch.from_numpy(img), scale=scale, size=size, antialias=antialias)
    assert got.dtype == torch.float64
    assert tuple(got.shape) == expected.shape
    assert np.abs(got.numpy() - expected).max() <= 1e-6


def test_known_bicubic_weights():
    """Interior weights follow from the kernel: x2 up samples it at 1.75, 0.75, 0.25, 1.25
    (cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625, cubic(1.25) = -0.0703125, cubic(1.75) = -0.0234375)."""
    idx, w = contributions(20, 40, 2.0, True)
    # output pixel 10 (0-based) lies at u0 = 10.5 / 2 - 0.5 = 4.75: taps 3..6
    assert idx[10].tolist() == [3, 4, 5, 6]
    np.testing.assert_allclose(w[10].numpy(), [-0.0234375, 0.2265625, 0.8671875, -0.0703125], atol=1e-15)
    # x1/2 down with antialiasing: the stretched kernel gives 8 taps, halves of the x2 weights
    idx, w = contributions(40, 20, 0.5, True)
    assert idx[10].tolist() == list(range(17, 25))
    half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375]) / 2
    np.testing.assert_allclose(w[10].numpy(), half, atol=1e-15)
    # without antialiasing, x1/2 down samples the unstretched kernel at +-0.5, +-1.5
    idx, w = contributions(40, 20, 0.5, False)
    np.testing.assert_allclose(w[10].numpy(), [-0.0625, 0.5625, 0.5625, -0.0625], atol=1e-15)


# ------------------------------------------------------------------------------------------
# (b) agreement with Pillow (same kernel and pixel-centre convention) away from the borders


def _pillow_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    Image = pytest.importorskip("PIL.Image")
    pil = Image.fromarray(img.astype(np.float32))
    assert pil.mode == "F"
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BICUBIC), dtype=np.float64)


@pytest.mark.parametrize(
    ("h", "w", "factor"),
    [(96, 80, 1 / 4), (63, 72, 1 / 3), (64, 50, 1 / 2), (20, 24, 2), (15, 18, 3), (12, 10, 4)],
)
def test_matches_pillow_in_the_interior(h, w, factor):
    img = _smooth_image(h, w, seed=7)
    size = (round(h * factor), round(w * factor))
    ours = imresize(torch.from_numpy(img), scale=factor, size=size).numpy()
    theirs = _pillow_resize(img, size)
    # kernel radius in input pixels, converted to output pixels, plus one for rounding
    radius_in = 2 / factor if factor < 1 else 2
    m = math.ceil(radius_in * factor) + 2
    interior = np.abs(ours - theirs)[m:-m, m:-m]
    assert interior.size > 0
    assert interior.max() <= 1e-6  # measured ~8e-8: Pillow's float32 output is the limit
    # the borders differ (Pillow truncates and renormalises, MATLAB mirrors): a sanity check
    # that the comparison is not vacuous
    assert np.abs(ours - theirs).max() > 1e-4


# ------------------------------------------------------------------------------------------
# (c) invariants


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.37, 2, 3, 4])
def test_constant_stays_constant(scale):
    x = torch.full((2, 3, 13, 17), 0.3125, dtype=torch.float64)
    y = imresize(x, scale)
    assert torch.allclose(y, torch.full_like(y, 0.3125), atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4, 2.5])
def test_linear_ramp_exact_in_interior_when_upscaling(scale):
    h, w = 12, 16
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = 0.3 * yy - 0.7 * xx + 1.0
    out = imresize(ramp, scale)
    oh, ow = out.shape
    # output pixel i (0-based) sits at input coordinate (i + 0.5) / scale - 0.5
    cy = (torch.arange(oh, dtype=torch.float64) + 0.5) / scale - 0.5
    cx = (torch.arange(ow, dtype=torch.float64) + 0.5) / scale - 0.5
    expected = 0.3 * cy[:, None] - 0.7 * cx[None, :] + 1.0
    m = math.ceil(3 * scale)
    assert (out - expected)[m:-m, m:-m].abs().max() < 1e-12


@pytest.mark.parametrize(("h", "w", "scale"), [(10, 7, 0.37), (9, 11, 1 / 3), (5, 6, 2.5), (7, 3, 4)])
def test_output_shape_is_ceil(h, w, scale):
    y = imresize(torch.rand(1, 1, h, w), scale)
    assert y.shape[-2:] == (math.ceil(h * scale), math.ceil(w * scale))


def test_batch_and_channel_independence_and_any_leading_shape():
    x = torch.rand(2, 3, 4, 11, 9, dtype=torch.float64)
    y = imresize(x, 0.5)
    assert y.shape == (2, 3, 4, 6, 5)
    for idx in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        torch.testing.assert_close(y[idx], imresize(x[idx], 0.5), rtol=0, atol=1e-14)
    z = imresize(x[:, :, :1], 2)
    torch.testing.assert_close(z[1, 2, 0], imresize(x[1, 2, 0], 2), rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.5e-2)]
)
def test_dtypes_preserved(dtype, atol):
    x = torch.rand(1, 3, 16, 12, dtype=torch.float64)
    for scale in (0.25, 3):
        ref = imresize(x, scale)
        y = imresize(x.to(dtype), scale)
        assert y.dtype == dtype
        assert (y.double() - ref).abs().max() <= atol


def test_gradient_flows():
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.37), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, size=(13, 4)), (x,))
    y = imresize(x.float(), 2)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_identity_scale_one_returns_copy():
    x = torch.rand(2, 3, 8, 9)
    y = imresize(x, 1)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()


def test_weights_cached():
    contributions.cache_clear()
    imresize(torch.rand(1, 17, 19), 0.5)
    imresize(torch.rand(4, 17, 19), 0.5)
    info = contributions.cache_info()
    assert info.misses == 2  # one per axis, reused by the second call


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 33, 45, dtype=torch.float64)
    for scale in (0.25, 0.37, 4):
        y = imresize(x.cuda(), scale)
        assert y.device.type == "cuda"
        torch.testing.assert_close(y.cpu(), imresize(x, scale), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {}, ConfigError),
        ((0,), {}, ConfigError),
        ((-2,), {}, ConfigError),
        ((float("nan"),), {}, ConfigError),
        ((), {"size": (0, 4)}, ConfigError),
        ((), {"size": (4,)}, ConfigError),
        ((), {"size": (4.5, 4)}, ConfigError),
        ((True,), {}, ConfigError),
    ],
)
def test_bad_arguments(args, kwargs, error):
    with pytest.raises(error):
        imresize(torch.rand(1, 3, 8, 8), *args, **kwargs)


def test_bad_inputs():
    with pytest.raises(InvalidImageError, match="empty"):
        imresize(torch.rand(0, 3, 8, 8), 2)
    with pytest.raises(InvalidImageError, match="empty"):
        imresize(torch.rand(3, 0, 8), 2)
    with pytest.raises(InvalidImageError, match="floating"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 2)
    with pytest.raises(InvalidImageError):
        imresize(torch.rand(8), 2)
    with pytest.raises(InvalidImageError):
        imresize(np.zeros((8, 8)), 2)  # type: ignore[arg-type]


def _pil_bicubic_by_the_formula(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Pillow's bicubic upsampling written out: Keys' cubic with a = -0.5, taps at the input pixel centres within
    2 pixels of (out + 0.5) / scale - 0.5, those outside the image dropped and the rest renormalised; per axis."""
    def axis_weights(n_in: int) -> torch.Tensor:
        a, weights = -0.5, torch.zeros(n_in * scale, n_in, dtype=torch.float64)
        for out in range(n_in * scale):
            centre = (out + 0.5) / scale
            for j in range(max(0, int(centre - 2.5)), min(n_in, int(centre + 2.5) + 1)):
                d = abs(j + 0.5 - centre)
                w = (a + 2) * d**3 - (a + 3) * d**2 + 1 if d < 1 else a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0
                weights[out, j] = w
            weights[out] /= weights[out].sum()
        return weights

    rows, columns = axis_weights(x.shape[-2]), axis_weights(x.shape[-1])
    return torch.einsum("oh,bchw,pw->bcop", rows, x.double(), columns)


def test_pil_bicubic_is_pillows_kernel_and_not_torchs():
    from PIL import Image

    from srkit.ops.resize import bicubic_upsample, pil_bicubic_upsample

    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 14, 11, generator=g), 3, 1, 1)
    torch.testing.assert_close(pil_bicubic_upsample(smooth, 4).double(), _pil_bicubic_by_the_formula(smooth, 4),
                               rtol=0, atol=2e-6)  # the float path: Pillow's kernel, edges renormalised
    eight_bit = (smooth * 255).round() / 255
    official = Image.fromarray((eight_bit[0].permute(1, 2, 0) * 255).round().byte().numpy(), "RGB").resize((44, 56), Image.BICUBIC)
    expected = torch.from_numpy(np.asarray(official).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(pil_bicubic_upsample(eight_bit, 4)[0], expected)  # 8-bit input: the official code's 8-bit path
    assert (pil_bicubic_upsample(smooth, 4) - bicubic_upsample(smooth, 4)).abs().mean() > 1e-3  # not torch's a = -0.75
