"""``edgeprune report`` on reports that are not what compile wrote, and tolerances that
would disable the gate: exit 2 with one error/fix paragraph, never a pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli_here
from tests.test_bad_input import assert_input_error

REPORT: dict[str, Any] = {
    "schema_version": "1.0", "passed": True,
    "budget": {"max_drop": 1.0, "latency_ms": None, "percentile": "p50"},
    "target": {"name": "openvino-cpu", "backend": "openvino"},
    "model": {"arch": "edgeprune.zoo:fashion_cnn"},
    "baseline": {"accuracy": 91.5},
    "final": {"accuracy": 91.2, "accuracy_runtime": "openvino", "accuracy_samples": 550,
              "latency_ms": {"p50": 0.2, "p90": 0.25, "p99": None}, "size_bytes": 112240,
              "flops": 18290432, "params": 61050, "precision": "int8",
              "runtime": {"effective_precision": "i8"}},
}


@pytest.fixture
def reports(tmp_path: Path):
    """(reference, candidate) report.json paths; the candidate edited by ``edit``."""
    def make(edit=None) -> tuple[Path, Path]:
        ref, cand = tmp_path / "ref.json", tmp_path / "cand.json"
        ref.write_text(json.dumps(REPORT))
        candidate = copy.deepcopy(REPORT)
        text = None
        if callable(edit):
            edit(candidate)
        elif isinstance(edit, str):
            text = edit
        cand.write_text(text if text is not None else json.dumps(candidate))
        return ref, cand
    return make


def test_reports_that_match_pass(reports) -> None:
    result = run_cli_here("report", *reports())
    assert result.code == 0, result.stderr


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("accuracy", "high", "final.accuracy is \"high\""),
    ("latency_ms", [0.2, 0.25], "final.latency_ms"),
    ("runtime", "openvino", "final.runtime"),
    ("params", -3, "final.params"),
    ("precision", 8, "final.precision"),
], ids=["accuracy-text", "latency-list", "runtime-text", "negative-params", "precision-number"])
def test_report_with_a_wrong_typed_field(reports, field: str, value: Any, needle: str) -> None:
    ref, cand = reports(lambda r: r["final"].__setitem__(field, value))
    assert_input_error(run_cli_here("report", ref, cand), "cand.json", needle)


def test_report_with_a_nan_accuracy(reports) -> None:
    """json allows NaN; a NaN top-1 would compare as "no regression"."""
    ref, cand = reports(lambda r: r["final"].__setitem__("accuracy", float("nan")))
    assert_input_error(run_cli_here("report", ref, cand), "final.accuracy is NaN",
                       "finite number")


def test_report_with_a_wrong_typed_latency_percentile(reports) -> None:
    ref, cand = reports(lambda r: r["final"]["latency_ms"].__setitem__("p50", "fast"))
    assert_input_error(run_cli_here("report", ref, cand), "final.latency_ms.p50")


@pytest.mark.parametrize(("flag", "value"), [("--max-accuracy-drop", "nan"),
                                             ("--max-latency-increase", "-0.1"),
                                             ("--max-accuracy-drop", "inf")])
def test_tolerance_that_disables_the_gate(reports, flag: str, value: str) -> None:
    ref, cand = reports(lambda r: r["final"].__setitem__("accuracy", 10.0))  # a regression
    assert_input_error(run_cli_here("report", ref, cand, flag, value), flag, "finite number")


def test_report_that_is_not_json(reports) -> None:
    ref, cand = reports('{"schema_version": "1.0", ')
    assert_input_error(run_cli_here("report", ref, cand), "cand.json", "not readable JSON")


def test_report_folder_without_a_report(reports, tmp_path: Path) -> None:
    ref, _ = reports()
    (tmp_path / "run").mkdir()
    assert_input_error(run_cli_here("report", ref, tmp_path / "run"), "without report.json")


def test_report_of_another_schema_version(reports) -> None:
    ref, cand = reports(lambda r: r.__setitem__("schema_version", "2.0"))
    assert_input_error(run_cli_here("report", ref, cand), "schema_version 2.0")


def test_report_that_is_not_a_report(reports) -> None:
    ref, cand = reports(json.dumps({"stage": "load", "key": "abc"}))
    assert_input_error(run_cli_here("report", ref, cand), "not an edgeprune report")


def test_report_unknown_percentile(reports) -> None:
    ref, cand = reports()
    assert_input_error(run_cli_here("report", ref, cand, "--percentile", "p75"), "p75")


def test_report_markdown_into_a_missing_folder(reports, tmp_path: Path) -> None:
    ref, cand = reports()
    result = run_cli_here("report", ref, cand, "--markdown", tmp_path / "no" / "summary.md")
    assert_input_error(result, "--markdown", "summary.md")
