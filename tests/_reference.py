"""Where the shared golden files live: ``shared/reference`` next to the repository (read at test time)."""

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def reference(name: str) -> Path:
    """The path of a reference file; the test is skipped, with the reason, when the folder is absent."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent (it lives in the shared folder next to the repository)")
    return path
