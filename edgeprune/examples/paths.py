"""Where the shipped example checkpoint lives (inside the installed package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def checkpoint_path() -> Path:
    """The trained Fashion-MNIST CNN shipped with edgeprune."""
    return Path(str(resources.files("edgeprune.examples") / "fashion_cnn.pt"))
