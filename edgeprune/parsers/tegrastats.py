"""tegrastats lines as numbers, and a run's summary (power, EMC, GPU load, temperatures,
throttling signs).

The format changed across Jetson Linux releases, so every field is optional:
``GR3D_FREQ 0%`` / ``10%@1300`` / ``0%@[305]`` / ``12%@[1300,1300]`` / ``@[1000,1000]``
(per-GPC), rails as ``VDD_IN 3140/3208`` (L4T 32), ``VDD_IN 4761mW/4778mW`` (L4T 35/36)
or ``VDD_GPU_SOC 5139mW/5139mW/5139mW`` (L4T 39: now/avg/max), temperatures as
``gpu@48.5C`` or ``cpu@52.968C/52.968C``. Sensors that report a placeholder (PMIC@100C
on L4T 32, negative values when a sensor is off) are not real readings and are dropped.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

_TIME = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\b(?:CPU|cpu) \[([^\]]*)\](?:@(\d+))?")
_EMC = re.compile(r"\b(?:EMC_FREQ|EMC) (\d+)%(?:@(\d+))?")
_GPU = re.compile(r"\b(GR3D2?)(?:_FREQ)? (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"(?<![\w%])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\dMk])")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}
_PLACEHOLDER_SENSORS = {"PMIC"}  # fixed 100C on L4T 32: a trip point, not a reading
# Module input power: one rail where the board has it, else the documented sum.
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
_AGX_ORIN_RAILS = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
THROTTLE_WARN_C = 85.0  # Orin: junction above ~87C is where firmware starts throttling


@dataclass
class Sample:
    """One tegrastats line."""

    time: str | None = None
    ram_mb: tuple[int, int] | None = None
    swap_mb: tuple[int, int] | None = None
    cpu_load: list[int | None] = field(default_factory=list)  # None = core off
    cpu_mhz: list[int | None] = field(default_factory=list)
    emc_load: int | None = None
    emc_mhz: int | None = None
    gpu_load: int | None = None
    gpu_mhz: int | None = None  # the highest GPC clock when tegrastats lists several
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, tuple[int, int]] = field(default_factory=dict)  # now, average

    def input_power_mw(self) -> tuple[int | None, str]:
        """Module input power now, and where it came from."""
        for rail in _INPUT_RAILS:
            if rail in self.rails_mw:
                return self.rails_mw[rail][0], rail
        if all(r in self.rails_mw for r in _AGX_ORIN_RAILS):
            return sum(self.rails_mw[r][0] for r in _AGX_ORIN_RAILS), "+".join(_AGX_ORIN_RAILS)
        return None, ""


def _cpus(body: str, shared_mhz: str | None) -> tuple[list[int | None], list[int | None]]:
    loads: list[int | None] = []
    mhz: list[int | None] = []
    for item in body.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)%(?:@(\d+))?", item)
        if m:
            loads.append(int(m.group(1)))
            freq = m.group(2) or shared_mhz
            mhz.append(int(freq) if freq else None)
        elif item == "off":
            loads.append(None)
            mhz.append(None)
    return loads, mhz


def parse_line(line: str) -> Sample | None:
    """One tegrastats line, or None when the line is not tegrastats output."""
    if "RAM " not in line:
        return None
    s = Sample()
    if m := _TIME.match(line):
        s.time = m.group(1)
    if m := _RAM.search(line):
        s.ram_mb = (int(m.group(1)), int(m.group(2)))
    if m := _SWAP.search(line):
        s.swap_mb = (int(m.group(1)), int(m.group(2)))
    if m := _CPU.search(line):
        s.cpu_load, s.cpu_mhz = _cpus(m.group(1), m.group(2))
    if m := _EMC.search(line):
        s.emc_load = int(m.group(1))
        s.emc_mhz = int(m.group(2)) if m.group(2) else None
    for name, load, freqs in _GPU.findall(line):
        if name == "GR3D" and (load or freqs):
            s.gpu_load = int(load) if load else None
            s.gpu_mhz = max(int(f) for f in freqs.split(",") if f) if freqs else None
    for name, value in _TEMP.findall(line):
        celsius = float(value)
        if name in _PLACEHOLDER_SENSORS or celsius <= -40:
            continue
        s.temps_c[name] = celsius
    for name, now, avg, _peak in _RAIL.findall(line):
        if name not in _NOT_RAILS:
            s.rails_mw[name] = (int(now), int(avg))
    return s


def parse_log(text: str) -> list[Sample]:
    """Every tegrastats line of a log."""
    return [s for s in (parse_line(line) for line in text.splitlines()) if s is not None]


def _stat(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 3), "min": min(values),
            "max": max(values)}


def summarize(samples: list[Sample], throttle_warn_c: float = THROTTLE_WARN_C) -> dict[str, Any]:
    """Power, memory traffic, GPU load and temperatures over a run, and throttling signs."""
    if not samples:
        return {"samples": 0, "notes": ["tegrastats produced no samples"]}
    power = [(p, src) for p, src in (s.input_power_mw() for s in samples) if p is not None]
    rails = sorted({r for s in samples for r in s.rails_mw})
    sensors = sorted({t for s in samples for t in s.temps_c})
    out: dict[str, Any] = {
        "samples": len(samples),
        "first": samples[0].time,
        "last": samples[-1].time,
        "input_power_mw": _stat([p for p, _ in power]),
        "input_power_source": power[0][1] if power else None,
        "rails_mw": {r: _stat([s.rails_mw[r][0] for s in samples if r in s.rails_mw])
                     for r in rails},
        "gpu_load_pct": _stat([s.gpu_load for s in samples if s.gpu_load is not None]),
        "gpu_mhz": _stat([s.gpu_mhz for s in samples if s.gpu_mhz is not None]),
        "emc_load_pct": _stat([s.emc_load for s in samples if s.emc_load is not None]),
        "emc_mhz": _stat([s.emc_mhz for s in samples if s.emc_mhz is not None]),
        "ram_used_mb": _stat([s.ram_mb[0] for s in samples if s.ram_mb]),
        "temps_max_c": {t: max(s.temps_c[t] for s in samples if t in s.temps_c)
                        for t in sensors},
    }
    out.update(_throttling(samples, out["temps_max_c"], throttle_warn_c))
    return out


def _throttling(samples: list[Sample], temps_max: dict[str, float],
                warn_c: float) -> dict[str, Any]:
    """Signs of throttling: a hot sensor, or the GPU clock dropping while the GPU is busy."""
    notes = []
    hot = {t: c for t, c in temps_max.items() if c >= warn_c}
    if hot:
        sensors = ", ".join(f"{t} {c:.1f}C" for t, c in sorted(hot.items()))
        notes.append(f"temperature at or above {warn_c:.0f}C: {sensors} (thermal throttling "
                     "likely)")
    busy = [s.gpu_mhz for s in samples if s.gpu_mhz and (s.gpu_load or 0) >= 50]
    if len(busy) >= 2 and min(busy) < 0.9 * max(busy):
        notes.append(f"GPU clock varied {min(busy)}-{max(busy)} MHz while the GPU was busy: "
                     "DVFS or throttling (run `sudo jetson_clocks` to lock clocks)")
    return {"throttling_suspected": bool(notes), "notes": notes,
            "max_temp_c": max(temps_max.values()) if temps_max else None}
