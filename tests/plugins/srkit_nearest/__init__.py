"""A third-party srkit method in one folder: nearest-neighbour upsampling.

It is srkit's seventh method for tests/test_plugin_cli.py, which installs this folder (the
entry point of ``pyproject.toml``) and checks that ``srkit.load``, ``srkit sr``, ``srkit train``
and ``srkit bench`` find it and its default config ``nearest.yaml`` with no file outside it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from srkit import MethodDescriptor, SRMethod

__all__ = ["Nearest"]


class Nearest(SRMethod):
    """Repeats every pixel ``scale`` x ``scale`` times; no weights, no knobs."""

    descriptor = MethodDescriptor(name="nearest", title="Nearest neighbour (test plugin)", paper="-", scale=2)

    def __init__(self, scale: int = 2):
        super().__init__(scale)

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        return F.interpolate(lr, scale_factor=self.scale, mode="nearest")
