"""`--quant ternary` through the real CLI: QAT in the pipeline, Q/DQ export checked in ONNX
Runtime and OpenVINO, the packed artifact, the report, reload without pickled code; plus
symmetric int8 activations for TensorRT/Jetson (the pruned + ternary Jetson bundle)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from tests.conftest import FASHION_ARGS, run_cli

SMALL = ["--eval-limit", "300", "--calib-size", "100", "--iterations", "100",
         "--quant-steps", "12", "--max-drop", "100", "--recover-batch", "32"]


def test_compile_ternary_on_openvino(fashion_ckpt: Path, fashion_small: Path,
                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
                     "--quant", "ternary", "--target", "openvino-cpu", "--out", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    quant = report["quantization"]
    assert quant["method"] == "hq" and report["final"]["precision"] == "int8"
    precisions = {row["layer"]: row["precision"] for row in quant["layers"]}
    # defaults: first conv and classifier int8, the rest ternary
    assert precisions["features.0"] == "int8" and precisions["classifier"] == "int8"
    assert sorted(set(precisions.values())) == ["int8", "ternary"]
    # OpenVINO really ran the convolutions in integers (read back from the runtime model)
    assert set(quant["openvino_convolution_precisions"]) <= {"u8", "i8"}
    assert report["final"]["runtime"]["effective_precision"] == "i8"
    # the Q/DQ ONNX holds ternary layers as int8 {-1, 0, 1}
    proto = onnx.load(str(out / "06-export" / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for row in quant["layers"]:
        codes = inits[f"{row['layer']}.weight_int8"]
        assert codes.dtype == np.int8
        if row["precision"] == "ternary":
            assert set(np.unique(codes)) <= {-1, 0, 1}
    packed = quant["packed"]
    assert packed["round_trip_exact"] and packed["ratio_vs_fp32_onnx"] > 8
    assert (out / "06-export" / "model.packed").stat().st_size == packed["bytes"]
    assert quant["compact_u2_ir_bytes"] < report["final"]["size_bytes"]
    stages = [row["stage"] for row in report["accuracy_by_stage"]]
    assert stages == ["baseline", "quantize", "compile"]
    # the quantized artifact reloads from weights + recipe (no pickled code) and computes
    # what the runtime computed
    payload = torch.load(out / "05-quantize" / "model.pt", weights_only=True)
    assert payload["ternary"]["method"] == "hq"
    from edgeprune.stages.load import read_model_artifact

    model = read_model_artifact(out / "05-quantize" / "model.pt", trust_pickle=False)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        y = model(x)
    assert torch.isfinite(y).all()
    # unchanged options: every stage is reused
    again = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
                    "--quant", "ternary", "--target", "openvino-cpu", "--out", out, "--json")
    assert again.code == 0, again.stderr
    statuses = {s["name"]: s["status"] for s in json.loads(again.stdout)["stages"]}
    assert statuses["quantize"] == "cached" and statuses["export"] == "cached"


def test_pruned_ternary_jetson_bundle_has_symmetric_int8(fashion_ckpt: Path,
                                                         fashion_small: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *SMALL,
                     "--prune", "dscore", "--prune-ratio", "0.3", "--sensitivity-samples",
                     "100", "--recover-steps", "4", "--quant", "ternary", "--quant-method",
                     "twn", "--target", "jetson", "--out", out)
    assert result.code == 4, result.stderr  # built, not measured: no device given
    bundle = out / "07-compile" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    proto = onnx.load(str(bundle / "model.onnx"))
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    zero_points = [consts[n.input[2]] for n in proto.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    # TensorRT: signed, zero-point-0 activations; the ternary weights are kept
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    # TensorRT only dequantizes activation types: int32 bias DQ folded to float constants,
    # which must compute exactly what the exported graph computes
    assert not any(n.op_type == "DequantizeLinear" and n.input[0] in consts
                   and consts[n.input[0]].dtype == np.int32 for n in proto.graph.node)
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0] for p in (bundle / "model.onnx", out / "06-export" / "model.onnx")}
    a, b = run.values()
    assert np.allclose(a, b, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    quant = json.loads((out / "05-quantize" / "metrics.json").read_text())
    assert quant["ternary_config"]["activation_dtype"] == "int8"
    prune = json.loads((out / "03-prune" / "metrics.json").read_text())
    assert prune["params_after"] < prune["params_before"]


def test_quant_options_are_checked(fashion_ckpt: Path, fashion_small: Path,
                                   tmp_path: Path) -> None:
    bad = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                  "--quant", "ternary", "--precision", "fp32", "--out", tmp_path / "a")
    assert bad.code == 2 and "contradict" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                  "--quant-method", "twn", "--out", tmp_path / "b")
    assert bad.code == 2 and "only applies to --quant ternary" in bad.stderr
    bad = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                  "--quant", "binary", "--out", tmp_path / "c")
    assert bad.code == 2 and "fp32, int8, ternary" in bad.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_symmetric_int8_activation_quantizer() -> None:
    from edgeprune.quant.activations import ActQuant

    q = ActQuant(signed=True)
    q.mode = "observe"
    q(torch.tensor([-0.5, 0.0, 2.0]))
    q.compute_qparams()
    scale, zero_point, signed = q.qparams()
    assert signed and zero_point == 0 and abs(scale - 2.0 / 127) < 1e-7
    q.mode = "quant"
    y = q(torch.tensor([-3.0, -0.5, 2.0]))
    assert torch.allclose(y, torch.tensor([-128 * scale, round(-0.5 / scale) * scale, 2.0]))


def test_pruned_resnet_selection_convs_run_int8() -> None:
    """The frozen option-A selection convs pruning adds are quantized to int8 (exactly:
    weights 0/1), so the whole pruned + ternary ResNet runs integer kernels in OpenVINO."""
    from edgeprune.prune.importance import get_criterion
    from edgeprune.prune.structural import (
        PruneOptions,
        find_groups,
        make_shortcuts_explicit,
        prune_copy,
    )
    from edgeprune.quant import TernaryConfig, calibrate, prepare_ternary
    from edgeprune.quant.qdq import export_qdq_onnx, verify_qdq
    from edgeprune.zoo import resnet20

    torch.manual_seed(0)
    example = torch.zeros(2, 3, 32, 32)
    model = resnet20().eval()
    assert make_shortcuts_explicit(model, example)
    _, groups = find_groups(model, example, PruneOptions())
    model, _ = prune_copy(model, example, {g.name: 0.3 for g in groups},
                          get_criterion("l1"), PruneOptions())
    state = prepare_ternary(model, TernaryConfig(method="twn"))
    fixed = [n for n, kind in state.plan.items() if "shortcut" in n]
    assert fixed and all(state.plan[n] == "int8" for n in fixed)
    x = torch.randn(64, 3, 32, 32)
    calibrate(model, [x])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_qdq_onnx(model, x[:2], path)
        check = verify_qdq(model, path, x.numpy(), runtimes=("openvino",))
    ov = check["runtimes"]["openvino"]
    assert ov["convolutions_integer"], ov["convolution_precisions"]
    assert ov["integer_convolutions"]["ran"] >= ov["integer_convolutions"][
        "quantized_in_model"] == 21
