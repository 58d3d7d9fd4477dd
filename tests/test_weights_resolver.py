import hashlib
import os

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from torch import nn

import srkit
from srkit.errors import ConfigError, WeightsNotFoundError
from srkit.weights import (
    SYNTHETIC,
    cached_safetensors,
    hub_offline,
    load_state_dict,
    load_weights,
    resolve,
    srkit_home,
    synthetic_state_dict,
)
from srkit.weights.convert import convert, convert_task


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test here may reach the network; the HF cache is a fresh folder."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "hf_cache"


def fake_hub_cache(cache, hub_id, files):
    """Lay out `files` ({relative path: bytes}) as huggingface_hub stores a downloaded snapshot."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        path = repo / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return repo / "snapshots" / commit


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)


def test_local_file_folder_and_synthetic(tmp_path):
    (tmp_path / "model" / "unet").mkdir(parents=True)
    (tmp_path / "model" / "unet" / "w.safetensors").write_bytes(b"x")
    (tmp_path / "model" / "w.pth").write_bytes(b"y")
    assert resolve(tmp_path / "model" / "w.pth") == tmp_path / "model" / "w.pth"
    assert resolve(tmp_path / "model") == tmp_path / "model"  # a folder component (diffusers folder)
    in_subfolder = tmp_path / "model" / "unet" / "w.safetensors"
    assert resolve(str(tmp_path / "model"), filename="w.safetensors", subfolder="unet") == in_subfolder
    assert resolve(tmp_path / "model", filename="w.pth", subfolder="unet") == tmp_path / "model" / "w.pth"
    assert resolve("synthetic", filename="w.pth") == SYNTHETIC


def test_default_file_is_searched_in_srkit_home_then_cwd(tmp_path):
    target = srkit_home() / "weights" / "default_a.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"a")
    assert resolve(None, filename="default_a.pth") == target
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "default_b.pth").write_bytes(b"b")
    assert resolve(None, filename="default_b.pth").resolve() == (tmp_path / "weights" / "default_b.pth").resolve()


def test_hub_id_is_read_from_the_local_cache(offline):
    snapshot = fake_hub_cache(offline, "someone/model", {"w.pth": b"hub", "unet/config.json": b"{}"})
    assert hub_offline()
    assert resolve("someone/model", filename="w.pth").read_bytes() == b"hub"
    assert resolve("someone/model") == snapshot  # a folder component: the whole snapshot
    assert resolve(None, filename="w.pth", hub_id="someone/model").read_bytes() == b"hub"
    assert resolve(None, hub_id="someone/model") == snapshot


def test_offline_never_asks_the_network(monkeypatch):
    import huggingface_hub

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["local_files_only"])
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(WeightsNotFoundError):
        resolve("someone/absent", filename="w.pth")
    assert calls == [True]


def test_missing_file_names_the_file_every_place_and_the_fix(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve(None, filename="noise_predictor_sd_turbo_v5.pth", hub_id="OAOA/InvSR", what="InvSR noise predictor")
    message = str(info.value)
    assert "InvSR noise predictor" in message and "'noise_predictor_sd_turbo_v5.pth'" in message
    assert str(srkit_home() / "weights" / "noise_predictor_sd_turbo_v5.pth") in message
    assert str(tmp_path / "weights" / "noise_predictor_sd_turbo_v5.pth") in message
    assert "hub id 'OAOA/InvSR'" in message
    assert "hf download OAOA/InvSR noise_predictor_sd_turbo_v5.pth" in message and "weights=" in message
    with pytest.raises(WeightsNotFoundError, match="no such file or folder"):
        resolve(tmp_path / "nope.pth")
    (tmp_path / "folder").mkdir()
    with pytest.raises(WeightsNotFoundError, match=r"folder/w\.pth"):
        resolve(tmp_path / "folder", filename="w.pth")
    with pytest.raises(ConfigError, match="no default file"):
        resolve(None)


def test_official_checkpoint_is_converted_once_and_reconverted_when_changed(tmp_path):
    source = tmp_path / "official.pth"
    torch.save({"state_dict": {"module.w": torch.ones(3)}, "optimizer": {}}, source)
    first = cached_safetensors(source)
    assert first.parent == srkit_home() / "converted" and first.suffix == ".safetensors"
    stamp = first.stat().st_mtime_ns
    assert cached_safetensors(source) == first and first.stat().st_mtime_ns == stamp  # cache hit
    torch.save({"state_dict": {"module.w": torch.full((3,), 2.0)}}, source)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert torch.equal(load_state_dict(source)["w"], torch.full((3,), 2.0))
    with safe_open(str(first), framework="pt") as handle:
        assert handle.metadata()["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert not list(first.parent.glob(".*.tmp"))


@pytest.mark.parametrize("wrap", ["raw-module", "state_dict", "params_ema"])
def test_official_format_checkpoints_load_strictly(tmp_path, wrap):
    reference = Tiny()
    state = synthetic_state_dict(reference)
    saved = {
        "raw-module": {f"module.{k}": v for k, v in state.items()},
        "state_dict": {"state_dict": state, "iters_start": 5},
        "params_ema": {"params_ema": {f"_orig_mod.{k}": v for k, v in state.items()}},
    }[wrap]
    torch.save(saved, tmp_path / "ckpt.pth")
    model = load_weights(Tiny(), tmp_path / "ckpt.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    state = Tiny().state_dict()
    del state["conv.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["conv.weight"] = torch.zeros(4, 3, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    expected = r"1 missing keys: conv\.bias.*1 unexpected keys: extra\.weight.*1 shape mismatches: conv\.weight"
    with pytest.raises(ConfigError, match=expected):
        load_weights(Tiny(), tmp_path / "bad.pth", what="tiny")
    with pytest.raises(ConfigError, match="is a folder"):
        load_state_dict(tmp_path)
    with pytest.raises(ConfigError, match="synthetic"):
        load_state_dict("synthetic")


def test_synthetic_weights_follow_the_rule():
    model = load_weights(Tiny(), "synthetic")
    expected = synthetic_state_dict(Tiny())
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key])


def test_convert_writes_unwrapped_safetensors_with_metadata(tmp_path):
    source = tmp_path / "net.ckpt"
    torch.save({"state_dict": {"module.a": torch.arange(4.0), "module.b": torch.eye(2)}}, source)
    out = convert(source, tmp_path / "out" / "net.safetensors", component="tiny")
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
        assert sorted(handle.keys()) == ["a", "b"]
        assert torch.equal(handle.get_tensor("a"), torch.arange(4.0))
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["srkit_version"] == srkit.__version__ and meta["component"] == "tiny" and meta["format"] == "srkit"
    assert not list(out.parent.glob(".*.tmp"))
    assert convert(source) == tmp_path / "net.safetensors"  # default: next to the source
    with pytest.raises(ConfigError, match="overwrite the source"):
        convert(out, out)


def test_convert_task_reads_the_hydra_config(tmp_path, capsys):
    from srkit.registry import config_dir

    source = tmp_path / "x.pth"
    torch.save({"w": torch.ones(2)}, source)
    cfg = OmegaConf.load(config_dir() / "convert.yaml")
    cfg.source, cfg.output, cfg.component = str(source), str(tmp_path / "y.safetensors"), "demo"
    convert_task(cfg)
    assert (tmp_path / "y.safetensors").is_file() and "srkit convert: wrote" in capsys.readouterr().out


def test_shared_tensors_are_stored(tmp_path):
    weight = torch.randn(3, 3)
    torch.save({"a.weight": weight, "b.weight": weight, "c": weight.t()}, tmp_path / "tied.pth")
    state = load_state_dict(tmp_path / "tied.pth")
    assert torch.equal(state["a.weight"], state["b.weight"]) and torch.equal(state["c"], weight.t())


def test_the_descriptor_drives_every_method_weight_file(tmp_path, monkeypatch):
    """resolve_weights reads role, file, source and sha256 from MethodDescriptor.weights: one weights path."""
    from srkit.types import MethodDescriptor, WeightFile
    from srkit.weights import resolve_weights

    monkeypatch.chdir(tmp_path)
    payload = b"weights"
    descriptor = MethodDescriptor(name="toy", title="-", paper="-", scale=2, weights=(
        WeightFile("net", "net.pth", source="https://example.org/net.pth", sha256=hashlib.sha256(payload).hexdigest()),
        WeightFile("release", "release_v1", folder=True),
    ))
    with pytest.raises(WeightsNotFoundError, match=r"(?s)toy net: cannot find 'net\.pth'.*published at https://example\.org/net\.pth"):
        resolve_weights(descriptor, "net", None)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "net.pth").write_bytes(payload)
    assert resolve_weights(descriptor, "net", None) == tmp_path / "weights" / "net.pth"
    (tmp_path / "other.pth").write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="sha256"):
        resolve_weights(descriptor, "net", tmp_path / "other.pth")
    assert resolve_weights(descriptor, "release", tmp_path) == tmp_path  # a folder entry: the folder given is it
    assert resolve_weights(descriptor, "net", "synthetic") == "synthetic"
    with pytest.raises(ConfigError, match="lists no weight file 'vae'"):
        resolve_weights(descriptor, "vae", None)
    # the built-in methods name their files only in their descriptors
    for name in srkit.list_methods():
        for entry in srkit.describe(name).weights:
            assert entry.filename and entry.source, (name, entry)
