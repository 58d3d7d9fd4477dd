"""Where the shared golden files live: ``shared/reference`` next to the repository (read at test time)."""

from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def reference(name: str) -> Path:
    """The path of a reference file; the test is skipped, with the reason, when the folder is absent."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent (it lives in the shared folder next to the repository)")
    return path


# The official code computes the timestep sinusoid in float32 even in a float64 model, and float32 sin/cos
# differ in their last bits between CPU instruction sets (AVX2 vs AVX-512): downstream of it a golden made
# on one machine is up to ~7e-7 relative off on another (reference README). 1e-6 holds on any x86-64 CPU
# and still fails a 1e-5 relative change of one weight.
SINUSOID_RTOL = 1e-6


def assert_matches_golden(actual: torch.Tensor, golden: torch.Tensor, *, rtol: float = SINUSOID_RTOL, name: str = "") -> None:
    """Max abs error <= ``rtol`` x the golden's max abs value, for outputs downstream of the float32 sinusoid."""
    assert actual.shape == golden.shape, f"{name}: shape {tuple(actual.shape)} != golden {tuple(golden.shape)}"
    error = float((actual.double() - golden.double()).abs().max() / golden.double().abs().max())
    assert error <= rtol, f"{name}: relative error {error:.3g} > {rtol:g}"


def assert_uint8_matches_golden(actual: torch.Tensor, golden: torch.Tensor, reference_float: torch.Tensor, *, boundary: float) -> None:
    """Quantised images equal, except where the golden's float value lies within the sinusoid tolerance of a
    quantisation ``boundary`` (0.5 for rounding, 0 for truncation), where either side is correct."""
    scaled = reference_float.double().clamp(0, 1) * 255.0
    distance = ((scaled - boundary) - (scaled - boundary).round()).abs()
    ambiguous = distance <= SINUSOID_RTOL * 255.0
    differs = actual != golden
    assert not (differs & ~ambiguous).any(), f"{int((differs & ~ambiguous).sum())} unambiguous pixels differ"
