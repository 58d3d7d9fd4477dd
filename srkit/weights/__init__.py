"""Where srkit keeps downloaded and converted weights.

For now only the cache location: ``$SRKIT_HOME`` (default ``~/.cache/srkit``). Converters such as
:mod:`srkit.weights.ncnn` write their results below it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_file", "srkit_home"]


def srkit_home() -> Path:
    """The root of srkit's cache: ``$SRKIT_HOME`` if set, else ``~/.cache/srkit``."""
    value = os.environ.get("SRKIT_HOME")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "srkit"


def cache_file(*parts: str) -> Path:
    """The path ``srkit_home()/parts...``, with its parent folders created."""
    path = srkit_home().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
