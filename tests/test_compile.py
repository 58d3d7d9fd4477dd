"""SRMethod.compile(): torch.compile of the networks each sampler step (or tile) runs, with static shapes: the same
output as eager, one graph for every step of a chain, no recompile for another image size when tiled, and every
network a method names is one its sr() calls."""

from __future__ import annotations

import pytest
import torch
from test_methods import TINY_CONFIGS

import srkit
from srkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def graphs():
    """A torch.compile backend that runs each graph eagerly and counts the graphs it was given."""
    torch._dynamo.reset()
    seen: list[int] = []

    def counting(graph_module, example_inputs):
        seen.append(len(example_inputs))
        return graph_module.forward

    counting.seen = seen
    yield counting
    torch._dynamo.reset()


def tiny(name: str):
    return srkit.load(name, weights="synthetic", device="cpu", **TINY_CONFIGS[name])


def test_a_compiled_chain_equals_eager_and_compiles_once_for_every_step_and_image_size(graphs):
    model = tiny("resshift")
    keys = list(model.state_dict())
    small, large = (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in ((96, 96), (128, 80)))
    eager = [model.sr(lr, seed=0, tile=64, tile_overlap=16) for lr in (small, large)]
    model.compile(backend=graphs)
    assert list(model.state_dict()) == keys  # the checkpoint format does not change
    torch.testing.assert_close(model.sr(small, seed=0, tile=64, tile_overlap=16), eager[0], atol=1e-5, rtol=1e-5)
    assert len(graphs.seen) == 1  # the four steps (t a tensor) and every 64-pixel tile: one graph of the denoiser
    torch.testing.assert_close(model.sr(large, seed=0, tile=64, tile_overlap=16), eager[1], atol=1e-5, rtol=1e-5)
    assert len(graphs.seen) == 1  # another image size, the same tiles: no recompile
    model.sr(torch.rand(1, 3, 64, 64), seed=0)
    assert len(graphs.seen) == 1  # an untiled 64-pixel LR is one more 64-pixel tile


def test_an_untiled_image_of_another_size_is_one_more_graph(graphs):
    model = tiny("resshift")
    model.compile(backend=graphs)
    for side in (64, 128, 64):
        model.sr(torch.rand(1, 3, side, side), seed=0)
    assert len(graphs.seen) == 2  # static shapes: 64 and 128, each once


def test_compile_takes_torch_compile_options_by_name():
    with pytest.raises(ConfigError, match="by name"):
        tiny("resshift").compile("inductor")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(name for name in TINY_CONFIGS if name != "bicubic"))
def test_every_compiled_network_is_called_by_sr_and_gives_the_eager_output(name, graphs):
    """Each name in ``compiled_networks`` compiled alone: sr() hands it to the backend (it runs per step or tile) and
    the output is the eager one."""
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    paths = type(tiny(name)).compiled_networks
    assert paths, f"{name} names no network to compile"
    for path in paths:
        model = tiny(name)
        eager = model.sr(lr, seed=0)
        before = len(graphs.seen)
        model.compile(backend=graphs)  # every network, then all but `path` back to eager
        for other in set(paths) - {path}:
            del model.get_submodule(other).forward
        torch.testing.assert_close(model.sr(lr, seed=0), eager, atol=1e-5, rtol=1e-5)
        assert len(graphs.seen) > before, f"{name}.{path} was never called by sr()"
        torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["resshift", "lpnsr", "dmsr", "ccsr"])
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_on_cuda_with_and_without_cuda_graphs_equals_eager(name, mode):
    """Inductor on CUDA; "reduce-overhead" replays CUDA graphs, whose outputs the next replay overwrites: the chains
    that keep a network's output across steps (DM-SR's first eps, LPNSR's x0 for g_w) must still see their own."""
    torch._dynamo.reset()
    model = tiny(name).to("cuda")
    lr = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    eager = model.sr(lr, seed=0)
    model.compile(mode=mode)
    for _ in range(2):  # the second call replays what the first recorded
        torch.testing.assert_close(model.sr(lr, seed=0), eager, atol=2e-3, rtol=0)
    torch._dynamo.reset()
