"""torch is a range in pyproject.toml (installing edgeprune must not replace a user's torch,
e.g. a CUDA build) and a pin in constraints.txt (the CPU build the install path uses)."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO


def _torch_requirement() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "torch"]
    assert len(found) == 1, project["dependencies"]
    return found[0]


def _constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", line
            pins[req.name] = specs[0].version
    return pins


def test_pyproject_torch_is_a_range() -> None:
    spec = _torch_requirement().specifier
    operators = {s.operator for s in spec}
    assert operators.isdisjoint({"==", "===", "~="}), str(spec)
    assert ">=" in operators, f"an honest lower bound is expected: {spec}"
    lower = next(Version(s.version) for s in spec if s.operator == ">=")
    assert lower < Version("2.13"), str(spec)  # older torch builds are allowed
    assert spec.contains("2.6.0") and spec.contains("2.9.1")


def test_constraints_pin_the_tested_torch_inside_the_range() -> None:
    pins = _constraint_pins()
    assert "torch" in pins, "constraints.txt must pin torch (the CPU build the install uses)"
    assert _torch_requirement().specifier.contains(pins["torch"]), pins["torch"]
