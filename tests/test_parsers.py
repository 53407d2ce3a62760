"""trtexec, tegrastats and Jetson-facts parsers on real captured output.

Every sample under tests/data/ is quoted from public documentation, repositories or issue
threads; tests/data/SOURCES.md says where each came from and what was cut.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.parsers import jetson, tegrastats, trtexec

DATA = Path(__file__).parent / "data"


def read(*parts: str) -> str:
    return (DATA.joinpath(*parts)).read_text()


# --- trtexec -------------------------------------------------------------------------------
def test_trtexec_10_16_full_log():
    text = read("trtexec", "trt10.16_rtx6000ada_onnx.log")
    s = trtexec.parse_summary(text)
    assert s.throughput_qps == 18392.0 and s.queries == 55177 and s.passed is True
    assert s.metrics["latency"] == {"min": 0.0334473, "max": 0.882324, "mean": 0.0431899,
                                    "p50": 0.0386963, "p90": 0.0480957, "p95": 0.0548096,
                                    "p99": 0.144043}
    assert s.metrics["enqueue"]["p99"] == 0.0578613
    assert s.metrics["h2d"]["p50"] == 0.00390625
    assert s.metrics["gpu_compute"]["mean"] == 0.0334352
    assert s.metrics["d2h"]["max"] == 0.476074
    assert (s.total_host_walltime_s, s.total_gpu_compute_s) == (3.00005, 1.84486)
    assert any("coefficient of variance = 62.0202%" in w for w in s.warnings)
    assert trtexec.parse_version(text) == "10.16.0"
    assert trtexec.parse_device(text) == {"name": "NVIDIA RTX 6000 Ada Generation",
                                          "compute_capability": "8.9"}


def test_trtexec_11_0_full_log():
    text = read("trtexec", "trt11.0_b200_load_engine.log")
    s = trtexec.parse_summary(text)
    assert s.throughput_qps == 23215.0 and s.queries == 69647 and s.passed is True
    assert s.metrics["latency"]["p50"] == 0.0402832 and s.metrics["latency"]["p99"] == 0.0413513
    assert s.metrics["h2d"] == dict.fromkeys(("min", "max", "mean", "p50", "p90", "p95",
                                              "p99"), 0.0)  # --noDataTransfers
    assert trtexec.parse_version(text) == "11.0.0"
    assert trtexec.major_version(trtexec.parse_version(text)) == 11
    assert trtexec.parse_device(text)["compute_capability"] == "10.0"


@pytest.mark.parametrize(("name", "qps", "p99", "keys"), [
    ("trt10.2_summary_issue4177.log", 130.298, 12.9675,
     {"latency", "enqueue", "h2d", "gpu_compute", "d2h"}),
    ("jetson_agx_xavier_trt84_summary.log", 41087.7, 0.420288,
     {"latency", "enqueue", "h2d", "gpu_compute", "d2h"}),
    ("jetson_xavier_nx_summary_e2e.log", 27207.0, 0.587769,
     {"latency", "end_to_end", "enqueue", "h2d", "gpu_compute", "d2h"}),
])
def test_trtexec_summaries_from_issue_threads(name: str, qps: float, p99: float, keys: set):
    s = trtexec.parse_summary(read("trtexec", name))
    assert s.throughput_qps == qps and s.metrics["latency"]["p99"] == p99
    assert set(s.metrics) == keys
    assert "p90" not in s.metrics["gpu_compute"] or name.startswith("trt10")  # 99% only


def test_trtexec_versions_and_banners():
    assert trtexec.decode_banner("101600") == "10.16.0"
    assert trtexec.decode_banner("100300") == "10.3.0"
    assert trtexec.decode_banner("110000") == "11.0.0"
    assert trtexec.decode_banner("8602") == "8.6.2"
    assert trtexec.decode_banner("8400") == "8.4.0"
    assert trtexec.parse_version(read("trtexec", "jetson_orin_nx_trt10.3_header.log")) == "10.3.0"
    assert trtexec.parse_version(read("trtexec", "jetson_agx_xavier_trt84_summary.log")) == "8.4.0"


def test_trtexec_without_summary_is_an_error():
    with pytest.raises(trtexec.TrtexecParseError, match="Performance summary"):
        trtexec.parse_summary(read("trtexec", "jetson_orin_nx_trt10.3_header.log"))


def test_dla_layer_placement_and_fallback_warnings():
    placed = trtexec.parse_layer_placement(read("trtexec", "dla_orin_layers_model_bn.log"))
    assert placed["dla"][0] == "{ForeignNode[Conv_0...Relu_7]}" and len(placed["dla"]) == 2
    assert placed["gpu"] == ["REDUCE: GlobalAveragePool_8",
                             "SHUFFLE: copied_squeeze_after_(Unnamed Layer* 20) [ElementWise]"]
    moved = trtexec.parse_layer_placement(read("trtexec", "dla_fallback_warnings_issue3.log"))
    assert len(moved["moved_to_gpu"]) == 9
    assert moved["moved_to_gpu"][1] == "(Unnamed Layer* 277) [Shuffle]"


def test_export_times_documented_keys():
    """--exportTimes records as sampleReporting.cpp prints them (this file holds no captured
    times: a format sample, see SOURCES.md)."""
    times = trtexec.parse_export_times(read("trtexec", "export_times_format.json"))
    assert times["latency"] == [0.05, 0.04] and times["gpu_compute"] == [0.03, 0.03]
    assert times["enqueue"] == pytest.approx([0.02, 0.01])
    with pytest.raises(trtexec.TrtexecParseError):
        trtexec.parse_export_times("[]")


# --- tegrastats ----------------------------------------------------------------------------
def test_tegrastats_orin_nano_jetpack6_idle_vs_jetson_clocks():
    idle = tegrastats.parse_log(read("tegrastats", "orin_nano_jp6_idle.log"))
    locked = tegrastats.parse_log(read("tegrastats", "orin_nano_jp6_jetson_clocks.log"))
    assert len(idle) == len(locked) == 3
    s = idle[0]
    assert s.time == "04-27-2026 14:59:41" and s.ram_mb == (775, 7620)
    assert s.cpu_load == [1, 0, 0, 0, 0, 0] and s.cpu_mhz == [729] * 6
    assert s.gpu_load == 0 and s.gpu_mhz is None
    assert s.temps_c["tj"] == 49.156 and s.temps_c["gpu"] == 48.562
    assert s.rails_mw == {"VDD_IN": (4761, 4778), "VDD_CPU_GPU_CV": (515, 501),
                          "VDD_SOC": (1428, 1428)}
    a, b = tegrastats.summarize(idle), tegrastats.summarize(locked)
    assert a["input_power_source"] == "VDD_IN" and a["input_power_mw"]["mean"] == 4761
    assert b["input_power_mw"]["mean"] == 6626 and b["max_temp_c"] == 50.593
    assert not a["throttling_suspected"] and not b["throttling_suspected"]


def test_tegrastats_agx_orin_jetpack7_per_gpc_clocks_and_module_power():
    (s,) = tegrastats.parse_log(read("tegrastats", "agx_orin_jp72_jetson_stats_pr894.log"))
    assert s.gpu_load == 12 and s.gpu_mhz == 1300
    assert (s.emc_load, s.emc_mhz) == (3, 3199)
    assert s.temps_c == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}
    assert s.input_power_mw() == (5139 + 3268 + 5500, "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0")
    assert len(s.cpu_load) == 12


def test_tegrastats_legacy_formats():
    (tx2,) = tegrastats.parse_log(read("tegrastats", "tx2_legacy_tx_utils_issue3.log"))
    assert tx2.rails_mw["VDD_IN"] == (3140, 3208) and "PMIC" not in tx2.temps_c
    assert tx2.emc_load == 0 and tx2.emc_mhz is None and tx2.temps_c["Tdiode"] == 41.25
    tx1 = tegrastats.parse_log(read("tegrastats", "tx1_l4t28_legacy.log"))
    assert [t.gpu_load for t in tx1] == [3, 39] and tx1[1].cpu_mhz == [1734] * 4
    assert tx1[1].emc_mhz == 1600 and tx1[0].swap_mb == (873, 8192)


def test_tegrastats_throttling_signs():
    line = read("tegrastats", "orin_nano_jp6_idle.log").splitlines()[0]
    hot = tegrastats.parse_line(line.replace("tj@49.156C", "tj@91.5C"))
    summary = tegrastats.summarize([hot])
    assert summary["throttling_suspected"] and "tj 91.5C" in summary["notes"][0]
    busy = [tegrastats.parse_line(line.replace("GR3D_FREQ 0%", f"GR3D_FREQ 99%@[{mhz}]"))
            for mhz in (1020, 1020, 612)]
    assert "GPU clock varied 612-1020 MHz" in tegrastats.summarize(busy)["notes"][0]
    assert tegrastats.summarize([])["samples"] == 0


# --- Jetson system facts -------------------------------------------------------------------
def test_jetson_facts():
    assert jetson.parse_l4t(read("jetson", "nv_tegra_release_r36_4_3.txt")) == "36.4.3"
    assert jetson.parse_nvpmodel(read("jetson", "nvpmodel_q_maxn.txt")) == {"mode": "MAXN",
                                                                            "id": 0}
    assert jetson.parse_nvpmodel(read("jetson", "nvpmodel_q_5w.txt")) == {"mode": "5W", "id": 1}
    assert jetson.parse_jetpack("6.2.1+b38") == "6.2.1"
    locked = jetson.parse_jetson_clocks(read("jetson", "jetson_clocks_show_tx1_locked.txt"))
    assert locked["active"] is True and locked["gpu_mhz"]["max"] == 998.4
    free = jetson.parse_jetson_clocks(read("jetson", "jetson_clocks_show_orin_unlocked.txt"))
    assert free["active"] is False and "cpu0" in free["unpinned"]
    assert jetson.parse_jetson_clocks("")["active"] is None


def test_board_facts_from_a_facts_file():
    """facts.txt as run.sh writes it, filled with the real samples above."""
    from edgeprune.backends.jetson import board_facts

    text = "\n".join([
        "== trtexec", "/usr/src/tensorrt/bin/trtexec",
        read("trtexec", "jetson_orin_nx_trt10.3_header.log").splitlines()[0],
        "== nv_tegra_release", read("jetson", "nv_tegra_release_r36_4_3.txt"),
        "== jetpack", "6.2+b77", "== model", "NVIDIA Jetson Orin NX Engineering Reference",
        "== nvpmodel", read("jetson", "nvpmodel_q_maxn.txt"),
        "== jetson_clocks", read("jetson", "jetson_clocks_show_orin_unlocked.txt"), "== end"])
    facts = board_facts(text)
    assert facts["tensorrt"] == "10.3.0" and facts["l4t"] == "36.4.3"
    assert facts["jetpack"] == "6.2" and facts["nvpmodel"]["mode"] == "MAXN"
    assert facts["jetson_clocks"]["active"] is False
    assert facts["module"].startswith("NVIDIA Jetson Orin NX")
