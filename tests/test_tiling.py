import itertools

import pytest
import torch
import torch.nn.functional as F

from srkit.errors import TileError
from srkit.tiling import pad_to_multiple, tile_starts, tiled_apply


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


# ------------------------------------------------------------------------------------------------
# stagewise_tiled_apply: GroupNorm networks tiled exactly


def test_tile_cuts_partition_the_axis_evenly():
    from srkit.tiling import tile_cuts

    assert tile_cuts(40, 16) == [0, 13, 27, 40]
    assert tile_cuts(32, 16) == [0, 16, 32]
    assert tile_cuts(10, 16) == [0, 10]


class CountingConv(torch.nn.Conv2d):
    """A 3x3 convolution that counts the tiles it processed."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1, dtype=torch.float64)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


class Block(torch.nn.Module):
    """GN -> conv -> GN -> conv with a residual: two GroupNorms in sequence, as in the VAE decoders."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(4, channels, dtype=torch.float64)
        self.conv1 = CountingConv(channels)
        self.norm2 = torch.nn.GroupNorm(4, channels, dtype=torch.float64)
        self.conv2 = CountingConv(channels)

    def forward(self, x):
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


def group_norm_network(seed: int = 0) -> tuple[list, list[torch.nn.Module]]:
    """Block, nearest x2 upsampling + conv, block: a decoder-like stack whose statistics differ tile to tile."""
    torch.manual_seed(seed)
    first, second = Block(), Block()
    for block in (first, second):
        for norm in (block.norm1, block.norm2):  # non-trivial affine parameters
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
            torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    upsample = CountingConv(8)
    stages = [first, lambda h: upsample(F.interpolate(h, scale_factor=2.0, mode="nearest")), second]
    return stages, [first, second]


def compose(stages, x):
    for stage in stages:
        x = stage(x)
    return x


def ramp_image(height: int, width: int) -> torch.Tensor:
    """Noise on a brightness ramp, so that every tile's statistics differ from the image's."""
    ramp = torch.linspace(-2, 2, width, dtype=torch.float64)
    return torch.randn(2, 8, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + ramp


def test_stagewise_tiling_equals_untiled_group_norm_network():
    from srkit.tiling import tiled_network_apply

    stages, modules = group_norm_network()
    x = ramp_image(40, 48)
    with torch.no_grad():
        full = compose(stages, x)
        exact = tiled_network_apply(stages, x, modules, scale=2, tile=16, overlap=8)
        local = tiled_network_apply(stages, x, modules, scale=2, tile=16, overlap=8, statistics="tile")
        kept_on_cpu = tiled_network_apply(stages, x, modules, scale=2, tile=16, overlap=8, store="cpu", progress=True)
    torch.testing.assert_close(exact, full, rtol=0, atol=1e-12)  # every pixel, the borders too
    torch.testing.assert_close(kept_on_cpu, full, rtol=0, atol=1e-12)
    assert float((local - full).abs().max()) > 0.1  # per-tile statistics are what the synchronisation fixes
    assert all("forward" not in vars(norm) for m in modules for norm in m.modules())  # patches removed


def test_stagewise_tiling_needs_the_halo():
    from srkit.tiling import stagewise_tiled_apply

    stages, modules = group_norm_network()
    x = ramp_image(32, 32)
    with torch.no_grad():
        full = compose(stages, x)
        short = stagewise_tiled_apply(stages, x, modules, tile=16, halo=1)  # a block of two 3x3 convs needs 2
    assert float((short - full).abs().max()) > 1e-3


def test_stagewise_tiling_pays_one_partial_pass_per_group_norm():
    from srkit.tiling import stagewise_tiled_apply

    stages, (first, second) = group_norm_network()
    x = torch.randn(1, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        stagewise_tiled_apply(stages, x, [first, second], tile=16)
    # 4 pieces; pass 1 stops at norm1, pass 2 at norm2 (conv1 ran), pass 3 completes: conv1 twice, conv2 once
    for block in (first, second):
        assert (block.conv1.calls, block.conv2.calls) == (8, 4)


def test_stagewise_tiling_single_tile_and_bad_arguments():
    from srkit.tiling import stagewise_tiled_apply, tiled_network_apply

    stages, modules = group_norm_network()
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(stagewise_tiled_apply(stages, x, modules, tile=16), compose(stages, x), rtol=0, atol=0)
    with pytest.raises(TileError, match="statistics must be 'image'"):
        tiled_network_apply(stages, x, modules, scale=2, tile=8, overlap=2, statistics="exact")
    with pytest.raises(TileError, match="tile must be >= 1"):
        stagewise_tiled_apply(stages, x, modules, tile=0)
    with pytest.raises(TileError, match="whole factor"):
        stagewise_tiled_apply([lambda h: h[..., ::2, ::2]], x, modules, tile=8)


def test_stagewise_tiling_rejects_stages_whose_group_norms_depend_on_the_tile():
    from srkit.tiling import stagewise_tiled_apply

    norm = torch.nn.GroupNorm(1, 2, dtype=torch.float64)

    def stage(h):  # the GroupNorm runs on the first tile only
        return norm(h) if h[..., 0, 0].sum() > 1e3 else h

    x = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    x[..., 0, 0] = 1e4
    with pytest.raises(TileError, match="different GroupNorms on different tiles"):
        stagewise_tiled_apply([stage], x, [norm], tile=8)


@pytest.mark.parametrize("height, width, multiple", [(5, 7, 8), (3, 2, 8), (64, 40, 64)])
def test_symmetric_padding_repeats_the_edge_as_opencv_border_reflect(height, width, multiple):
    """mode="symmetric" is numpy's "symmetric" (OpenCV's BORDER_REFLECT) for any pad, also one longer than the side
    (the pattern repeats with period 2 x side); "reflect" is torch's (BORDER_REFLECT_101)."""
    import numpy as np

    x = torch.rand(2, 3, height, width, dtype=torch.float64)
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    padded = pad_to_multiple(x, multiple, "symmetric")
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
    torch.testing.assert_close(padded, torch.from_numpy(expected), atol=0, rtol=0)
    if pad_h < height and pad_w < width:
        torch.testing.assert_close(pad_to_multiple(x, multiple), F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"))
    with pytest.raises(TileError, match="unknown padding mode 'wrap'"):
        pad_to_multiple(x, multiple, "wrap")  # type: ignore[arg-type]
    try:
        import cv2  # LPNSR's official inference pads with it; not a dependency of srkit
    except ImportError:
        return
    border = cv2.copyMakeBorder(x[0].permute(1, 2, 0).numpy(), 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)
    np.testing.assert_array_equal(padded[0].permute(1, 2, 0).numpy(), border)
