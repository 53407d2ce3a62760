"""Jetson system facts from their files and tools: Jetson Linux (L4T) release, JetPack
package version, nvpmodel power mode, and whether jetson_clocks pinned the clocks."""

from __future__ import annotations

import re
from typing import Any

_L4T = re.compile(r"#\s*R(\d+) \(release\), REVISION: (\d+(?:\.\d+)*)")
_FREQ = re.compile(r"^(\S+?):? .*?MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)")


def parse_l4t(text: str) -> str | None:
    """``/etc/nv_tegra_release`` -> ``36.4.3`` (R36, REVISION 4.3)."""
    m = _L4T.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_jetpack(dpkg_version: str) -> str | None:
    """``dpkg-query`` version of ``nvidia-jetpack`` (``6.2.1+b38``) -> ``6.2.1``."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", dpkg_version)
    return m.group(1) if m else None


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """``nvpmodel -q``: ``NV Power Mode: MAXN`` and the mode id on the next line."""
    out: dict[str, Any] = {"mode": None, "id": None}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            out["mode"] = line.split(":", 1)[1].strip()
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                out["id"] = int(lines[i + 1])
    return out


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """``jetson_clocks --show``: clocks are pinned when every listed CPU and the GPU have
    MinFreq == MaxFreq (what ``jetson_clocks`` sets)."""
    clocks: dict[str, tuple[int, int, int]] = {}
    for line in text.splitlines():
        if m := _FREQ.match(line.strip()):
            clocks[m.group(1)] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    if not clocks:
        return {"active": None, "reason": "no clock lines (jetson_clocks --show needs root)"}
    unpinned = sorted(name for name, (lo, hi, _) in clocks.items()
                      if name != "EMC" and lo != hi)
    gpu = clocks.get("GPU")
    return {
        "active": not unpinned,
        "unpinned": unpinned,
        "gpu_mhz": {"min": gpu[0] / 1e6, "max": gpu[1] / 1e6, "current": gpu[2] / 1e6}
        if gpu else None,
    }
