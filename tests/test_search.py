"""`edgeprune compile --search` through the real CLI on the shipped Fashion-MNIST CNN: the
candidates are measured on the target (OpenVINO here), the fastest within budget wins, a
budget nobody meets exits 3 with the reasons, and a re-run resumes from the cache."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FASHION_ARGS, run_cli

SMALL = ["--eval-limit", "300", "--calib-size", "100", "--iterations", "100",
         "--sensitivity-samples", "100", "--recover-steps", "10", "--recover-batch", "32"]


def test_search_picks_the_fastest_candidate_within_budget(fashion_ckpt: Path,
                                                          fashion_small: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
            "--search", "--search-levels", "0.3", "--search-precisions", "fp32,int8",
            "--max-drop", "100", "--out", out, "--json"]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    search = report["search"]
    names = [t["name"] for t in search["trials"]]
    assert names[:2] == ["dense-fp32", "dense-int8"] and names[2].startswith("prune30-")
    measured = [t for t in search["trials"] if t["status"] == "ran"]
    assert all(t["latency"] > 0 and t["ran_as"] for t in measured)
    chosen = [t for t in measured if t["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == search["chosen"]
    # the winner is the fastest within budget (up to the documented tie margin), by the
    # finalists' side-by-side re-measurement when there are several
    # a pruned candidate slower than the dense one at its precision is never chosen
    dense = {t["precision"]: t["latency"] for t in measured if not t["flops_reduction"]}
    for t in measured:
        if t["flops_reduction"] and t["within_budget"] and t["latency"] > dense[t["precision"]]:
            assert "never chosen" in t["note"], t
    within = [t for t in measured if t["within_budget"] and "never chosen" not in (
        t["note"] or "")]
    fastest = min(t["latency"] for t in within)
    finalists = [t["name"] for t in within if t["latency"] <= fastest * 1.15]
    runoff = search["runoff"]
    if len(finalists) > 1:
        lat = {k: v["p50"] for k, v in runoff["latency_ms"].items()}
        assert sorted(lat) == sorted(finalists) and runoff["rounds"] == 3
        assert lat[search["chosen"]] <= min(lat.values()) * 1.03 + 1e-9
        assert "side by side" in search["why"]
    else:
        assert runoff is None and chosen[0]["latency"] <= fastest * 1.03 + 1e-9
    assert report["final"]["latency_ms"]["p50"] == chosen[0]["latency_ms"]["p50"]
    assert (out / "search" / "trials.json").is_file() and (out / "report.json").is_file()
    # resumable: the same command reuses every candidate's stages
    again = run_cli(*args)
    assert again.code == 0, again.stderr
    resumed = json.loads(again.stdout)["search"]
    # a resumed search still reports its full cost: the stages' original times
    runoffs = [(x["runoff"] or {}).get("seconds", 0.0) for x in (search, resumed)]
    assert search["compute_seconds"] > resumed["seconds"]
    assert abs(search["compute_seconds"] - resumed["compute_seconds"]) <= sum(runoffs) + 1e-6
    for t in resumed["trials"]:
        stages = json.loads((Path(t["out"]) / "report.json").read_text())["stages"]
        assert {s["status"] for s in stages} <= {"cached", "skipped"}, t["name"]


def test_search_with_an_impossible_budget_exits_3(fashion_ckpt: Path, fashion_small: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
                     "--search", "--search-levels", "0.5", "--search-precisions", "int8",
                     "--max-trials", "2", "--max-drop", "0.5", "--latency-ms", "0.00001",
                     "--out", out, "--json")
    assert result.code == 3, result.stderr
    search = json.loads(result.stdout)["search"]
    assert search["chosen"] is None and "no candidate met the budget" in search["why"]
    ran = [t for t in search["trials"] if t["status"] == "ran"]
    # a pruned level is first compensated only (no training); the trial budget ends there
    assert [t["name"] for t in ran] == ["dense-int8", "prune50-int8-compensated"]
    assert all(t["distance"]["latency_ms_over"] > 0 for t in ran)
    # the report is the closest candidate's: accuracy over budget first, then latency
    closest = min(ran, key=lambda t: (t["distance"]["accuracy_points_over"], t["latency"]))
    assert search["reported_trial"] == closest["name"] and closest["name"] in search["why"]
    # the trial budget stopped it: nothing else was started
    assert all(t["status"] == "skipped" and "--max-trials 2" in t["error"]
               for t in search["trials"] if t["status"] != "ran")
    from edgeprune.configure import search_options
    from edgeprune.options import Resolved, default

    assert search_options(Resolved({"search": True})).flops_levels == default("search_levels")
    assert search_options(Resolved({"search": True, "search_levels": "none"})).flops_levels == []
    bad = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                  "--search", "--precision", "int8", "--out", tmp_path / "bad")
    assert bad.code == 2 and "chooses the pruning level and the precision" in bad.stderr


def test_ternary_that_misses_the_budget_retries_with_its_worst_layer_at_int8(
        fashion_ckpt: Path, fashion_small: Path, tmp_path: Path) -> None:
    """--search-ternary: two QAT steps leave the ternary CNN far below a 2-point budget, so
    the search retries it once with the layer the quantize stage found most damaged by
    ternarization alone kept at int8 (the 8-bit per-layer exception); dense INT8 meets the
    budget."""
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                     "--eval-limit", "300", "--calib-size", "100", "--iterations", "50",
                     "--search", "--search-levels", "none", "--search-precisions", "int8",
                     "--search-ternary", "--quant-steps", "2", "--max-drop", "2",
                     "--recover-batch", "32", "--out", out, "--json")
    assert result.code == 0, result.stderr
    search = json.loads(result.stdout)["search"]
    rows = {t["name"]: t for t in search["trials"]}
    first = rows.pop("dense-int8-ternary")
    assert first["status"] == "ran" and first["accuracy_drop"] > 2 and not first["within_budget"]
    sensitivity = json.loads((out / "search" / "dense-int8-ternary" / "05-quantize" /
                              "metrics.json").read_text())["layer_sensitivity"]
    worst = sensitivity["most_damaged"]
    agreement = sensitivity["agreement"]
    assert agreement[worst] == min(agreement.values()) and len(agreement) == 3
    retry = rows[f"dense-int8-ternary-int8-{worst}"]
    assert retry["precision"] == "ternary" and retry["int8_layers"] == [worst]
    layers = {r["layer"]: r["precision"] for r in json.loads(
        (Path(retry["out"]) / "report.json").read_text())["quantization"]["layers"]}
    assert layers[worst] == "int8"
    assert sum(p == "ternary" for p in layers.values()) == len(agreement) - 1
    # both run INT8 kernels: dense INT8 wins the tie on accuracy, unless the retry (within
    # the budget too) measured faster beyond the tie margin
    chosen = rows.get(search["chosen"]) or {"name": "dense-int8"}
    assert search["chosen"] in ("dense-int8", retry["name"])
    assert search["chosen"] == "dense-int8" or chosen["within_budget"]


def test_int8_that_misses_the_budget_gets_its_worst_layers_back_in_fp32(
        fashion_ckpt: Path, fashion_small: Path, tmp_path: Path) -> None:
    """One channel of the example CNN scaled by 1000 before a ReLU and its consumer's
    weights divided by 1000: the float function is unchanged, but per-tensor INT8
    activations of that tensor crush every other channel. Plain INT8 must miss the budget,
    and the search's FP32 exception (NNCF accuracy control) must put the damaged layers
    back in FP32, meet the budget and win; asking for it by hand works the same."""
    import torch

    checkpoint = torch.load(fashion_ckpt, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    state["features.4.weight"][0] *= 1000.0
    state["features.4.bias"][0] *= 1000.0
    state["features.7.weight"][:, 0] /= 1000.0
    model = tmp_path / "outlier.pt"
    torch.save(checkpoint, model)
    common = ["--data", fashion_small, *FASHION_ARGS, "--eval-limit", "300", "--calib-size",
              "100", "--iterations", "50", "--max-drop", "1"]
    result = run_cli("compile", model, *common, "--search", "--search-levels", "none",
                     "--search-precisions", "int8", "--out", tmp_path / "search", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {t["name"]: t for t in report["search"]["trials"]}
    assert set(rows) == {"dense-int8", "dense-int8-keep-fp32"}
    plain, kept = rows["dense-int8"], rows["dense-int8-keep-fp32"]
    assert plain["ran_as"] == "i8" and plain["accuracy_drop"] > 10 and not plain["within_budget"]
    assert kept["accuracy_control"] and kept["within_budget"] and kept["accuracy_drop"] <= 1
    assert kept["ran_as"].startswith("mixed:") and "f32" in kept["ran_as"]
    assert report["search"]["chosen"] == "dense-int8-keep-fp32"
    control = json.loads((Path(kept["out"]) / "07-compile" / "metrics.json").read_text())[
        "details"]["accuracy_control"]
    assert control["max_drop_points"] == 1.0 and control["agreement"] >= 99.0
    by_hand = run_cli("compile", model, *common, "--precision", "int8",
                      "--int8-accuracy-control", "--out", tmp_path / "hand", "--json")
    assert by_hand.code == 0, by_hand.stderr
    assert json.loads(by_hand.stdout)["final"]["accuracy"] == kept["accuracy"]
    refused = run_cli("compile", model, *common, "--precision", "fp32",
                      "--int8-accuracy-control", "--out", tmp_path / "bad")
    assert refused.code == 2 and "needs --precision int8" in refused.stderr


def test_level_over_budget_retries_with_its_worst_group_unpruned(
        fashion_ckpt: Path, fashion_small: Path, tmp_path: Path) -> None:
    """70% of the FLOPs with two recovery steps loses far more than 0.5 points, so the
    search retries that level once with its most damaged group kept unpruned: the same
    sensitivity threshold (every other group keeps the level's ratio, the FLOPs reduction
    shrinks), and the cached sensitivity analysis answers instead of a new one."""
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
                     "--search", "--search-levels", "0.7", "--search-precisions", "int8",
                     "--recover-steps", "2", "--max-drop", "0.5", "--out", out, "--json")
    assert result.code in (0, 3), result.stderr
    rows = {t["name"]: t for t in json.loads(result.stdout)["search"]["trials"]}
    # recovered only when it can still beat the fastest candidate within budget (a
    # latency comparison): either way the level missed the accuracy budget
    level = rows.get("prune70-int8") or rows["prune70-int8-compensated"]
    assert not level["within_budget"] and level["accuracy_drop"] > 0.5
    # one retry: compensated first, recovered only when it can still win
    keep = [t for t in rows.values() if t["name"].startswith("prune70-keep-")]
    assert 1 <= len(keep) <= 2 and keep[0]["name"].endswith("-int8-compensated")
    assert len({tuple(t["keep_unpruned"]) for t in keep}) == 1
    group = keep[0]["keep_unpruned"][0]
    level_prune = json.loads((Path(level["out"]) / "03-prune" / "metrics.json").read_text())
    keep_prune = json.loads((Path(keep[0]["out"]) / "03-prune" / "metrics.json").read_text())
    assert all(t["sensitivity_threshold"] == level_prune["choice"]["threshold"] for t in keep)
    assert keep_prune["choice"]["threshold"] == level_prune["choice"]["threshold"]
    assert keep_prune["channels"][group][1] == keep_prune["channels"][group][0]  # unpruned
    assert level_prune["ratios"][group] > 0 and keep_prune["ratios"][group] == 0.0
    assert keep_prune["ratios"] == {**level_prune["ratios"], group: 0.0}
    assert keep_prune["flops_reduction"] < level_prune["flops_reduction"]
    assert keep_prune["sensitivity_cache"].startswith("reused")


def test_search_levels_in_latency_allocate_by_measured_latency(fashion_ckpt: Path,
                                                                fashion_small: Path,
                                                                tmp_path: Path) -> None:
    """--search-levels-in latency: a level is a --latency-reduction at the candidate's
    precision (tables measured by the target's runner), named latencyNN-..., and the
    candidate's prune stage reports the measured allocation; a target that builds its
    engines on the device is refused with exit 2 before any candidate runs."""
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
                     "--search", "--search-levels-in", "latency", "--search-levels", "0.2",
                     "--search-precisions", "fp32", "--max-drop", "100", "--out", out,
                     "--json")
    assert result.code == 0, result.stderr
    search = json.loads(result.stdout)["search"]
    level = [t for t in search["trials"] if t["name"].startswith("latency20-fp32")]
    assert level and not any(t["name"].startswith("prune") for t in search["trials"])
    prune = json.loads((Path(level[0]["out"]) / "03-prune" / "metrics.json").read_text())
    assert prune["allocation"] == "latency"
    latency = prune["choice"]["latency"]
    assert latency["target"] == 0.2 and latency["precision"] == "fp32"
    assert latency["attempts"] and latency["measured_ms"] > 0
    refused = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                      "--target", "jetson", "--search", "--search-levels-in", "latency",
                      "--out", tmp_path / "jetson")
    assert refused.code == 2, refused.stderr
    assert "--search-levels-in flops" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "jetson" / "search").exists()
