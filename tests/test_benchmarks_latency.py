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
                         "--warmup", "0", "--repeats", "1", "--batch", "2", "--json", str(out)])
    invsr, bicubic = rows
    assert (invsr["method"], invsr["steps"], invsr["size"], invsr["out"]) == ("invsr", 1, 16, 64)
    assert invsr["srkit_ms"] > 0 and invsr["naive_ms"] > 0 and invsr["batch_ips"] > 0
    assert invsr["ratio"] == pytest.approx(invsr["srkit_ms"] / invsr["naive_ms"])
    assert invsr["gflop"] > 0 and invsr["floor_ratio"] > 1  # no run beats the matmul peak it is measured against
    assert bicubic["steps"] is None and bicubic["ratio"] is None
    assert bicubic["gflop"] == 0 and bicubic["floor_ratio"] is None  # interpolation is not a FLOP the counter counts
    printed = capsys.readouterr().out
    assert "| invsr | 1 | 16 | 64 |" in printed and "matmul peak float32" in printed and out.exists()


def test_gflop_counts_a_matmul_and_the_peak_is_a_rate():
    latency = load_latency()
    a = torch.ones(64, 32)
    assert latency.gflop(lambda: a @ a.T) == pytest.approx(2 * 64 * 64 * 32 / 1e9)
    assert 1e-3 < latency.matmul_peak(torch.device("cpu"), torch.float32) < 1e3  # TFLOP/s


def test_a_compiled_copy_is_timed_beside_the_eager_model_and_gives_its_output():
    latency = load_latency()
    torch._dynamo.reset()
    (row,) = latency.run(["invsr"], [1], [16], device=torch.device("cpu"), dtype=torch.float32, tiny=True, warmup=0,
                         repeats=1, compile_options={"backend": "eager"})  # dynamo's tracing without inductor's codegen
    torch._dynamo.reset()
    assert row["compiled_first_s"] > 0 and row["compiled_ms"] > 0
    assert row["compiled_ratio"] == pytest.approx(row["compiled_ms"] / row["naive_ms"])
    assert row["compiled_psnr"] > 90  # float32 eager graphs: the eager output to rounding
