"""benchmarks/official.py: the official ResShift and LPNSR pipelines, given srkit's weights, compute what srkit
computes (same seed), so the latency benchmark times the same work. Needs a checkout of each official repository:
SRKIT_OFFICIAL_RESSHIFT=DIR (github.com/zsyOAOA/ResShift), SRKIT_OFFICIAL_LPNSR=DIR (github.com/Faze-Hsw/LPNSR),
and their requirements (timm, loralib, cv2 for LPNSR); skipped without them."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import srkit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def checkout(name: str) -> Path:
    folder = os.environ.get(f"SRKIT_OFFICIAL_{name.upper()}")
    if not folder:
        pytest.skip(f"set SRKIT_OFFICIAL_{name.upper()} to a checkout of {name}'s official repository")
    for package in ("timm", "loralib", *(("cv2",) if name == "lpnsr" else ())):
        pytest.importorskip(package)
    return Path(folder)


def load_official():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("official", BENCHMARKS / "official.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("name", ["resshift", "lpnsr"])
def test_the_official_pipeline_on_srkit_weights_computes_what_srkit_computes(name):
    folder = checkout(name)
    model = srkit.load(name, weights="synthetic").eval()
    baseline = load_official().OFFICIAL[name](model, folder)
    lr = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))  # padded to 64 (each method's own way)
    ours, theirs = model.sr(lr, steps=4, seed=7), baseline(lr, 4, 7)
    assert ours.shape == theirs.shape == (1, 3, 160, 224)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # float32 rounding through four steps
