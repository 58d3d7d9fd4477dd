"""benchmarks/latency.py: the naive diffusers baseline computes what InvSR computes; the CLI reports rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import srkit

pytestmark = pytest.mark.usefixtures("one_thread")


def load_latency():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"
    spec = importlib.util.spec_from_file_location("srkit_latency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_naive_invsr_equals_srkit_euler_sampler():
    latency = load_latency()
    model = srkit.load("invsr", weights="synthetic", sampler={"eta": 0.0}, **latency.TINY["invsr"])
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(latency.naive_invsr(model, lr, 3, 5), model.sr(lr, steps=3, seed=5), atol=1e-5, rtol=0)


def test_main_reports_latency_memory_and_ratio(tmp_path, capsys):
    latency = load_latency()
    out = tmp_path / "rows.json"
    rows = latency.main(["--methods", "invsr", "bicubic", "--tiny", "--steps", "1", "--sizes", "16", "--device", "cpu",
                         "--warmup", "0", "--repeats", "1", "--json", str(out)])
    invsr, bicubic = rows
    assert (invsr["method"], invsr["steps"], invsr["size"], invsr["out"]) == ("invsr", 1, 16, 64)
    assert invsr["srkit_ms"] > 0 and invsr["naive_ms"] > 0
    assert invsr["ratio"] == pytest.approx(invsr["srkit_ms"] / invsr["naive_ms"])
    assert bicubic["steps"] is None and bicubic["ratio"] is None
    assert "| invsr | 1 | 16 | 64 |" in capsys.readouterr().out and out.exists()
