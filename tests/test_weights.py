import math
import zlib

import pytest
import torch
from torch import nn

from srkit.errors import ConfigError, WeightsNotFoundError
from srkit.weights import load_checkpoint, synthetic_state_dict, synthetic_tensor, unwrap_state_dict


@pytest.fixture
def state():
    return {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4)}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"params_ema": s, "params": {k: v * 0 for k, v in s.items()}},  # EMA preferred
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "global_step": 7},
        lambda s: {"model": {f"module._orig_mod.{k}": v for k, v in s.items()}},
    ],
)
def test_official_wrappers_are_unwrapped(tmp_path, state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(state), path)
    loaded = load_checkpoint(path)
    assert list(loaded) == list(state)
    for key in state:
        torch.testing.assert_close(loaded[key], state[key])


def test_safetensors_and_errors(tmp_path, state):
    from safetensors.torch import save_file

    save_file(state, tmp_path / "w.safetensors")
    assert set(load_checkpoint(tmp_path / "w.safetensors")) == set(state)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "opt.pth")
    with pytest.raises(ConfigError, match="no state dict found"):
        load_checkpoint(tmp_path / "opt.pth")
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"junk\.pth is corrupt: it is not a PyTorch checkpoint; download"):
        load_checkpoint(tmp_path / "junk.pth")


class Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_code_in_pickles_is_refused(tmp_path, state, capsys):
    torch.save({"state_dict": state, "hook": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match="is not a plain state dict: it holds the Python object print") as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "never unpickles" in str(info.value) and "weights_only" not in str(info.value)
    assert "unpickled code ran" not in capsys.readouterr().out


def test_synthetic_rule_follows_the_reference_definition():
    name, shape = "input_blocks.0.0.weight", (160, 9, 3, 3)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    expected = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(9 * 3 * 3)
    torch.testing.assert_close(synthetic_tensor(name, shape), expected, rtol=0, atol=0)
    norm = synthetic_tensor("norm.weight", (5,))
    bias = synthetic_tensor("norm.bias", (5,))
    assert (norm - 1).abs().max() < 1 and bias.abs().max() < 1 and not torch.allclose(norm - 1, bias)


def test_synthetic_state_dict_keeps_buffers():
    model = nn.BatchNorm2d(3)
    model.running_mean.fill_(0.5)
    state = synthetic_state_dict(model)
    assert torch.equal(state["running_mean"], torch.full((3,), 0.5))
    torch.testing.assert_close(state["weight"], synthetic_tensor("weight", (3,), torch.float32))
    assert unwrap_state_dict(state) == state
