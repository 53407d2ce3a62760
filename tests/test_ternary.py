"""Ternary quantization (HQ / TWN): thresholds, STE, regularizer, schedule, Q/DQ export in
ONNX Runtime and OpenVINO, packed artifact. Real runtimes, no mocks; under a minute."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.quant import (
    TernaryConfig,
    TernaryConv2d,
    TernaryLinear,
    calibrate,
    hq_threshold,
    precision_table,
    prepare_ternary,
    to_deploy,
    twn_threshold,
)
from edgeprune.quant.deploy import deploy_state, ternary_tensor_names
from edgeprune.quant.pack import (
    VARIANTS,
    decode_2bit,
    decode_bitmap,
    encode_2bit,
    encode_bitmap,
    pack,
    rebuild_deployed,
    size_report,
    unpack,
)
from edgeprune.quant.ternary import cosine_to_ternary, rescale_factor, ternary_alpha
from edgeprune.zoo import fashion_cnn, mobilenetv2_cifar, resnet20


def _cos(w: np.ndarray, t: np.ndarray) -> float:
    return float(w @ t / (np.linalg.norm(w) * np.linalg.norm(t)))


# --------------------------------------------------------------------------- thresholds


def test_hq_threshold_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    all_t = np.array([t for t in itertools.product((-1, 0, 1), repeat=7) if any(t)],
                     dtype=np.float64)
    rows = [rng.standard_normal(7).astype(np.float32) for _ in range(20)]
    rows += [np.array([3.0, -1, 1, -1, 1, 0.5, 0.0], np.float32),  # ties and a zero
             np.array([2.5, 1, 1, -1, 0.2, 0.2, -0.2], np.float32),
             np.array([1.0, -1, 1, -1, 1, -1, 1], np.float32)]  # all equal: keep all
    w = torch.from_numpy(np.stack(rows))
    delta, mask = hq_threshold(w)
    for i, row in enumerate(rows):
        best = max(_cos(row.astype(np.float64), t) for t in all_t)
        t_hq = np.sign(row) * mask[i].numpy()
        assert _cos(row.astype(np.float64), t_hq) == pytest.approx(best, abs=1e-6)
        # the mask is exactly the threshold rule |w| > delta
        assert np.array_equal(mask[i].numpy(), np.abs(row) > float(delta[i]))


def test_hq_threshold_all_zero_row_is_empty() -> None:
    delta, mask = hq_threshold(torch.zeros(2, 5))
    assert not mask.any() and torch.all(delta == 0)


def test_alpha_is_least_squares_scale() -> None:
    torch.manual_seed(1)
    w = torch.randn(4, 50)
    _, mask = hq_threshold(w)
    alpha = ternary_alpha(w, mask)
    t = torch.sign(w) * mask
    for i in range(4):
        grid = torch.linspace(0.5, 1.5, 201) * alpha[i]
        err = ((w[i][None] - grid[:, None] * t[i][None]) ** 2).sum(1)
        assert grid[err.argmin()] == pytest.approx(float(alpha[i]), rel=1e-2)
        closed = float((w[i] * t[i]).sum() / (t[i] * t[i]).sum())  # <w,t>/<t,t>
        assert float(alpha[i]) == pytest.approx(closed, rel=1e-6)


def test_twn_threshold() -> None:
    w = torch.tensor([[0.1, -0.5, 1.0, -2.0], [0.0, 0.0, 0.3, -0.3]])
    delta, mask = twn_threshold(w, 0.7)
    assert delta.tolist() == pytest.approx([0.7 * 0.9, 0.7 * 0.15])
    assert mask.tolist() == [[False, False, True, True], [False, False, True, True]]
    assert ternary_alpha(w, mask).tolist() == pytest.approx([1.5, 0.3])


# --------------------------------------------------------------------------- modules


def _tconv(method: str = "hq", **kw: object) -> TernaryConv2d:
    torch.manual_seed(0)
    return TernaryConv2d.from_float(nn.Conv2d(8, 6, 3, padding=1, bias=False),
                                    TernaryConfig(method=method, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["hq", "twn"])
def test_ternary_values_are_alpha_times_sign(method: str) -> None:
    m = _tconv(method)
    wq = m.quantized_weight().detach().reshape(6, -1)
    codes, alpha = m.codes()
    assert set(torch.unique(codes).tolist()) <= {-1, 0, 1}
    assert torch.equal(wq, alpha[:, None] * codes.reshape(6, -1).float())
    for row, a in zip(wq, alpha, strict=True):
        assert set(torch.unique(row.abs()).tolist()) <= {0.0, float(a)}


def test_ste_gradient_reaches_latent_weights() -> None:
    m = _tconv("hq")
    x = torch.randn(2, 8, 5, 5)
    wq = m.quantized_weight()
    wq.retain_grad()
    out = nn.functional.conv2d(x, wq, padding=1)
    out.square().sum().backward()
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    assert torch.allclose(m.weight.grad, wq.grad)  # plain STE: identity

    r = _tconv("hq", rescaled_grad=True).train()
    wq2 = r.quantized_weight()
    wq2.retain_grad()
    nn.functional.conv2d(x, wq2, padding=1).square().sum().backward()
    delta, _, _ = r.ternary_params()
    factor = rescale_factor(r.weight.detach().reshape(6, -1), delta, 0.5,
                            torch.ones(6, 72, dtype=torch.bool))
    assert factor.mean(1) == pytest.approx(torch.ones(6), abs=1e-5)
    assert torch.allclose(r.weight.grad.reshape(6, -1), factor * wq2.grad.reshape(6, -1),
                          atol=1e-5)


def test_regularizer_reduces_cosine_distance() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.Linear(16, 4))
    state = prepare_ternary(model, TernaryConfig(reg_weight=1.0, keep_first_last_8bit=False))
    layers = [m for m in model.modules() if isinstance(m, TernaryLinear)]
    model(torch.randn(4, 64))
    before = float(state.extra_loss(model).detach())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(30):
        model(torch.randn(4, 64))
        loss = state.extra_loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(state.extra_loss(model).detach())
    assert before > 0 and after < 0.5 * before
    assert all(float(m.cosine().mean().detach()) > 0.95 for m in layers)
    twn = prepare_ternary(nn.Sequential(nn.Linear(4, 4)), TernaryConfig(method="twn"))
    assert float(twn.extra_loss(model)) == 0.0


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_reinit_schedule_reaches_target(scope: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 32, 3))
    cfg = TernaryConfig(prune_target=0.8, prune_events=3, keep_first_last_8bit=False,
                        quantize_activations=False, prune_scope=scope,  # type: ignore[arg-type]
                        max_layer_sparsity=0.9)
    state = prepare_ternary(model, cfg)
    assert state.event_steps(100) == [25, 50, 75]
    for step in range(1, 101):
        state.after_step(model, step, 100)
    assert [round(e["target_sparsity"], 3) for e in state.history] == [0.563, 0.77, 0.8]
    layers = [m for m in model.modules() if isinstance(m, TernaryConv2d)]
    pruned = [float((~m.prune_mask).float().mean()) for m in layers]
    total = sum(m.weight.numel() for m in layers)
    overall = sum(p * m.weight.numel() for p, m in zip(pruned, layers, strict=True)) / total
    assert overall == pytest.approx(0.8, abs=0.02)
    assert max(pruned) <= 0.9 + 1e-6
    if scope == "layer":
        assert all(p == pytest.approx(0.8, abs=0.03) for p in pruned)
    for m in layers:
        codes, _ = m.codes()
        assert torch.all(m.weight[~m.prune_mask] == 0)
        assert torch.all(codes[~m.prune_mask] == 0)
        assert float(m.cosine().mean().detach()) == pytest.approx(1.0, abs=1e-5)  # reinit
        assert (codes.reshape(codes.shape[0], -1) != 0).any(1).all()  # no filter killed
        radius = m.weight.detach().reshape(m.weight.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(radius, m.radius)  # still on its sphere


def test_reinit_keeps_codes_and_batchnormed_function() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3),
                          nn.BatchNorm2d(8))
    state = prepare_ternary(model, TernaryConfig(
        keep_first_last_8bit=False, quantize_activations=False, prune_events=1,
        freeze_ternary_zeros=True))
    layers = [m for m in model.modules() if isinstance(m, TernaryConv2d)]
    x = torch.randn(4, 3, 9, 9)
    with torch.no_grad():
        before = model.train()(x)
        codes = [m.codes()[0] for m in layers]
        state.after_step(model, state.event_steps(10)[0], 10)
        after = model(x)
    assert len(state.history) == 1
    assert all(torch.equal(c, m.codes()[0]) for c, m in zip(codes, layers, strict=True))
    # alpha changes by a per-channel gain only, which BatchNorm absorbs
    torch.testing.assert_close(before, after, atol=2e-3, rtol=1e-3)


def test_plan_keeps_first_last_and_depthwise_at_int8() -> None:
    model = mobilenetv2_cifar()
    state = prepare_ternary(model, TernaryConfig(exclude=("features.3.conv.3",)))
    plan = state.plan
    assert plan["features.0"] == "int8" and plan["classifier"] == "int8"
    assert plan["features.3.conv.3"] == "fp32"
    dw = [n for n, m in model.named_modules()
          if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dw and all(plan[n] == "int8" for n in dw)
    assert sum(v == "ternary" for v in plan.values()) > 30
    rows = {r["layer"]: r for r in precision_table(model)}
    assert rows["features.3.conv.3"]["precision"] == "fp32"
    assert rows["features.4.conv.0"]["precision"] == "ternary"
    with pytest.raises(ValueError, match="unknown"):
        prepare_ternary(fashion_cnn(), TernaryConfig(exclude=("nope",)))


def test_layer_sensitivity_finds_the_layer_ternarization_breaks(fashion_ckpt: Path,
                                                                fashion_dir: Path) -> None:
    """The trained example CNN on real Fashion-MNIST images, its 2nd conv replaced by its
    own ternarization (ternarizing it alone again is then exact): it must score 100%
    agreement, the trained layers less, and the float model must stay untouched."""
    from edgeprune.data.idx import read_idx
    from edgeprune.quant.sensitivity import most_damaged_layer, ternary_layer_agreement

    model = fashion_cnn()
    model.load_state_dict(torch.load(fashion_ckpt, map_location="cpu",
                                     weights_only=True)["state_dict"])
    model.eval()
    with torch.no_grad():  # the 2nd conv becomes its own HQ ternarization
        w = model.features[3].weight
        w2d = w.reshape(w.shape[0], -1)
        _, mask = hq_threshold(w2d)
        alpha = (w2d.abs() * mask).sum(1) / mask.sum(1).clamp(min=1)
        w.copy_((alpha[:, None] * torch.sign(w2d) * mask).reshape(w.shape))
    raw = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")[:400]
    images = ((raw.astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ticks: list[int] = []
    agreement = ternary_layer_agreement(model, TernaryConfig(), images, ticks.append)
    # first conv and classifier stay int8 (the default plan): only the middle convs
    assert set(agreement) == {"features.3", "features.7", "features.11"}
    assert len(ticks) == 3
    assert agreement["features.3"] == 100.0
    assert agreement["features.7"] < 100.0 and agreement["features.11"] < 100.0
    worst = most_damaged_layer(agreement)
    assert worst != "features.3" and agreement[worst] == min(agreement.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert most_damaged_layer({}) is None


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def resnet_qdq(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A ternary ResNet-20 (random init, one calibration pass) and its Q/DQ ONNX.

    The FP32 reference size is 4 bytes per parameter: a lower bound of the FP32 ONNX (the
    real file also holds BN statistics and the graph), so ratios against it are
    conservative and the test skips a second export."""
    from edgeprune.quant.qdq import export_qdq_onnx

    tmp = tmp_path_factory.mktemp("ternary")
    torch.manual_seed(0)
    model = resnet20().eval()
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    images = rng.standard_normal((96, 3, 32, 32)).astype(np.float32)
    cfg = TernaryConfig()
    prepare_ternary(model, cfg)
    calibrate(model, [images[:32], images[32:64]])
    facts = export_qdq_onnx(model, torch.from_numpy(images[:2]), tmp / "qdq.onnx")
    return {"model": model, "cfg": cfg, "images": images[64:], "facts": facts,
            "fp32_bytes": fp32_bytes, "qdq": tmp / "qdq.onnx", "tmp": tmp}


def test_qdq_onnx_holds_ternary_int8_weights(resnet_qdq: dict) -> None:
    import onnx
    from onnx import numpy_helper

    facts = resnet_qdq["facts"]
    assert facts["ternary_layers"] == 18 and facts["int8_layers"] == 2
    assert facts["activation_zero_point_types"] == {"UINT8": facts["activation_quantizers"]}
    proto = onnx.load(str(resnet_qdq["qdq"]))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    dq_scale = {n.input[0]: n.input[1] for n in proto.graph.node
                if n.op_type == "DequantizeLinear"}
    for name, entry in facts["layers"].items():
        w = inits[f"{name}.weight_int8"]
        assert w.dtype == np.int8
        if entry["kind"] == "ternary":
            assert set(np.unique(w).tolist()) <= {-1, 0, 1}
        scale = inits[dq_scale[f"{name}.weight_int8"]]
        assert scale.shape == (w.shape[0],) and np.all(scale > 0)  # per output channel


def test_qdq_runs_int8_in_openvino_and_onnxruntime(resnet_qdq: dict) -> None:
    from edgeprune.quant.qdq import verify_qdq

    result = verify_qdq(resnet_qdq["model"], resnet_qdq["qdq"], resnet_qdq["images"],
                        threads=2, fake_quant_model=resnet_qdq["model"])
    ov = result["runtimes"]["openvino"]
    assert ov["convolutions_integer"] and ov["convolution_precisions"]
    assert sum(ov["convolution_precisions"].values()) == 19
    assert ov["effective_precision"] == "i8"
    ort = result["runtimes"]["onnxruntime"]
    assert ort["optimized_op_counts"].get("QLinearConv", 0) > 0
    for entry in (ov, ort):
        assert entry["passed"] and entry["top1_agreement"] >= 0.98
        assert entry["max_abs_diff"] <= 0.05 * max(entry["logit_scale"], 1.0)


def test_compact_u2_ir_still_runs_int8(resnet_qdq: dict) -> None:
    from edgeprune.backends import get_backend
    from edgeprune.quant.ov_compact import compact_u2_ir

    out = resnet_qdq["tmp"] / "u2"
    facts = compact_u2_ir(resnet_qdq["qdq"], out)
    assert facts["u2_weight_tensors"] == 18
    backend = get_backend("openvino")
    session = backend.load(out / "model.xml", "fp32", 1, 8, {})
    info = session.runtime_info()
    assert set(info["layer_precisions"]["Convolution"]) <= {"i8", "u8"}
    ref = get_backend("onnxruntime").load(resnet_qdq["qdq"], "int8", 1, 8, {})
    x = resnet_qdq["images"][:8]
    np.testing.assert_allclose(session.run(x), ref.run(x), atol=0.05 * 10)
    int8_params = sum(t.numel() for t in deploy_state(to_deploy(resnet_qdq["model"])).values()
                      if t.dtype == torch.int8)
    assert facts["bin_bytes"] < int8_params  # ternary weights at 2 bits in the .bin


# --------------------------------------------------------------------------- pack


def test_ternary_encodings_round_trip() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5, 1001):
        codes = rng.choice([-1, 0, 1], size=n, p=[0.2, 0.6, 0.2]).astype(np.int8)
        assert np.array_equal(decode_2bit(encode_2bit(codes), n), codes)
        assert np.array_equal(decode_bitmap(encode_bitmap(codes), n), codes)


def test_pack_is_bit_exact_and_rebuilds_the_qdq_model(resnet_qdq: dict) -> None:
    import onnx

    from edgeprune.quant.qdq import export_qdq_onnx

    deployed = to_deploy(resnet_qdq["model"])
    state = deploy_state(deployed)
    names = ternary_tensor_names(deployed)
    meta = {"arch": "edgeprune.zoo:resnet20", "ternary_config": resnet_qdq["cfg"].to_dict()}
    for variant in VARIANTS:
        packed = unpack(pack(state, names, meta, variant))
        assert packed.meta == meta
        assert set(packed.tensors) == set(state)
        for k, v in state.items():
            got = packed.tensors[k]
            assert got.dtype == v.numpy().dtype and got.shape == tuple(v.shape)
            assert got.tobytes() == v.numpy().tobytes(), (variant, k)
    rebuilt = rebuild_deployed(unpack(pack(state, names, meta)), resnet20)
    path = resnet_qdq["tmp"] / "rebuilt.onnx"
    export_qdq_onnx(rebuilt, torch.zeros(2, 3, 32, 32), path)
    a = {t.name: t.SerializeToString() for t in onnx.load(str(resnet_qdq["qdq"])).graph.initializer}
    b = {t.name: t.SerializeToString() for t in onnx.load(str(path)).graph.initializer}
    assert a == b


def test_packed_resnet20_is_16x_smaller_than_fp32_onnx(resnet_qdq: dict) -> None:
    deployed = to_deploy(resnet_qdq["model"])
    report = size_report(deployed, {"arch": "resnet20"}, resnet_qdq["fp32_bytes"])
    assert report["best_ratio"] >= 16.0
    # the plain 2-bit stream itself is 16x smaller than fp32 for the ternary weights
    assert report["ternary_2bit_bytes"] * 16 == pytest.approx(
        report["ternary_weights"] * 4, abs=64)


def test_export_refuses_uncalibrated_model(tmp_path: Path) -> None:
    from edgeprune.quant.qdq import export_qdq_onnx

    model = fashion_cnn()
    prepare_ternary(model)
    with pytest.raises(RuntimeError, match="calibrate"):
        export_qdq_onnx(model, torch.zeros(2, 1, 28, 28), tmp_path / "m.onnx")


def test_cosine_helper_matches_formula() -> None:
    w = torch.tensor([[3.0, -1.0, 0.5, 0.0]])
    mask = torch.tensor([[True, True, False, False]])
    expected = (3 + 1) / (np.linalg.norm([3, 1, 0.5]) * np.sqrt(2))
    assert float(cosine_to_ternary(w, mask)[0]) == pytest.approx(expected)
