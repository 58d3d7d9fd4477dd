import itertools

import pytest
import torch
import torch.nn.functional as F

from srkit.errors import TileError
from srkit.tiling import tile_starts, tiled_apply


def conv_stack(radius: int, scale: int = 1, seed: int = 0):
    """A translation-equivariant function (zero-padded 3x3 convs) of receptive radius ``radius``."""
    g = torch.Generator().manual_seed(seed)
    kernels = [torch.randn(3, 3, 3, 3, generator=g, dtype=torch.float64) / 9 for _ in range(radius)]

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        for k in kernels:
            x = torch.tanh(F.conv2d(x, k, padding=1))
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="nearest")
        return x

    return fn


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("shape", [(1, 3, 70, 93), (2, 3, 64, 64), (1, 3, 33, 120)])
def test_tiled_equals_untiled_for_equivariant_function(scale, shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fn = conv_stack(radius=4, scale=scale)
    tiled = tiled_apply(fn, x, scale=scale, tile=32, overlap=16, batch_size=3)
    assert tiled.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
    torch.testing.assert_close(tiled, fn(x), atol=1e-5, rtol=0)


def test_receptive_field_larger_than_quarter_overlap_is_not_exact():
    # The guarantee is tight: a function that sees past the zero-weight margin differs.
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fn = conv_stack(radius=10)
    assert (tiled_apply(fn, x, scale=1, tile=32, overlap=16) - fn(x)).abs().max() > 1e-5


def test_batching_does_not_change_the_result():
    x = torch.rand(2, 3, 50, 77, generator=torch.Generator().manual_seed(3))
    fn = conv_stack(radius=2, scale=2)
    one = tiled_apply(fn, x, scale=2, tile=24, overlap=8, batch_size=1)
    many = tiled_apply(fn, x, scale=2, tile=24, overlap=8, batch_size=7)
    torch.testing.assert_close(one, many, atol=1e-12, rtol=0)


def test_blending_is_a_partition_of_unity_without_seams():
    # Independent noise per tile (the worst case for seams): blended output of a constant
    # function is exactly constant, and the weights cross-fade rather than switch abruptly.
    x = torch.zeros(1, 1, 96, 96)
    ones = tiled_apply(lambda t: torch.ones_like(t), x, scale=1, tile=40, overlap=16)
    torch.testing.assert_close(ones, torch.ones_like(ones))
    counter = iter(range(100))
    stepped = tiled_apply(lambda t: torch.full_like(t, float(next(counter))), x, scale=1, tile=40, overlap=16)
    row = stepped[0, 0, 5]
    assert row.diff().abs().max() < 0.5  # a hard seam would jump by a whole tile index (1.0)


def test_padding_to_a_multiple_is_applied_per_tile():
    seen = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        assert t.shape[-2] % 16 == 0 and t.shape[-1] % 16 == 0
        return F.interpolate(t, scale_factor=4, mode="nearest")

    x = torch.rand(1, 3, 45, 70)
    out = tiled_apply(fn, x, scale=4, tile=30, overlap=8, multiple=16)
    assert out.shape == (1, 3, 180, 280)
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=4, mode="nearest"))
    assert seen and all(s == (32, 32) for s in seen)


def test_small_image_single_pass_with_padding():
    x = torch.rand(1, 3, 10, 13)
    out = tiled_apply(lambda t: t * 2, x, scale=1, tile=64, overlap=16, multiple=8)
    torch.testing.assert_close(out, x * 2)


def test_downscaling_function_aligned_offsets():
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64)

    def encode(t):
        return F.avg_pool2d(t, 4)

    out = tiled_apply(encode, x, scale=1 / 4, tile=32, overlap=8)
    torch.testing.assert_close(out, encode(x), atol=1e-12, rtol=0)
    with pytest.raises(TileError, match="multiples of 4"):
        tiled_apply(encode, x[..., :63, :], scale=1 / 4, tile=32, overlap=8)


def test_tile_starts_cover_the_axis():
    for length, tile, overlap in [(100, 32, 8), (32, 32, 8), (33, 32, 8), (1000, 128, 32)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(tile=8, overlap=8), "too small"),
        (dict(tile=16, overlap=-1), "overlap must be >= 0"),
        (dict(tile=16, overlap=0, multiple=32), "too small"),
    ],
)
def test_bad_tiling_arguments(kwargs, match):
    with pytest.raises(TileError, match=match):
        tiled_apply(lambda t: t, torch.rand(1, 3, 64, 64), scale=1, **kwargs)


def test_wrong_output_size_is_reported():
    with pytest.raises(TileError, match="expected"):
        tiled_apply(lambda t: t, torch.rand(1, 3, 64, 64), scale=2, tile=32, overlap=8)
