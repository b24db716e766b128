"""Integer export and ONNX QDQ export, checked with onnx's checker and onnxruntime."""

import io

import numpy as np
import onnx  # the test extra installs onnx and onnxruntime
import onnxruntime as ort
import pytest
import torch
from torch import nn

from _qat_models import MobileNetV2, randomize_bn
from lowbit.qat import (
    IntLayer, QATConfig, QParams, QuantMode, export_int, export_onnx, get_mode, prepare,
    quant_mode,
)



class Net(nn.Module):
    """Conv-BN-ReLU, a residual add, a concatenation, an average pool and a linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.relu = nn.ReLU()
        self.c3 = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = self.c1(x)
        b = self.relu(self.c2(a) + a)
        y = self.c3(torch.cat([a, b], 1))
        return self.fc(torch.flatten(self.pool(y), 1))


def _calibrated(model, cfg, x):
    q = prepare(randomize_bn(model), cfg, example_inputs=x[:1]).eval()
    with quant_mode(q, "calibrate"):
        q(x)
    return q


def _ort(data: bytes, x: torch.Tensor, optimize: bool) -> torch.Tensor:
    so = ort.SessionOptions()
    if not optimize:  # the plain QDQ semantics, no integer-kernel fusion
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


def _export(q, x, **kw) -> bytes:
    f = io.BytesIO()
    export_onnx(q, f, x[:1], **kw)
    return f.getvalue()


CONFIGS = {
    "int8": QATConfig(),
    "lsq4": QATConfig(weight={"quantizer": "lsq", "bits": 4, "axis": 0},
                      activation={"quantizer": "lsq", "bits": 4}),
    "tqt8": QATConfig(weight={"quantizer": "tqt", "bits": 8},
                      activation={"quantizer": "tqt", "bits": 8}),
    "pact4": QATConfig(weight={"quantizer": "ternary"},
                       activation={"quantizer": "pact", "bits": 4}),
    "qfmt8": QATConfig(weight={"quantizer": "qformat", "wl": 8, "backend": "reference"},
                       activation={"quantizer": "qformat", "wl": 8, "backend": "reference"}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_int_reconstructs_the_fake_quantized_weights(name):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8)
    q = _calibrated(Net(), CONFIGS[name], x)
    layers = export_int(q)
    fused = {k: v for k, v in layers.items() if isinstance(v, IntLayer)}
    assert set(fused) == {"c1.0", "c2.0", "c3", "fc"}
    assert {"x_quantizer", "add_qop.input_quantizer", "add_qop.output_quantizer",
            "cat_qop.input_quantizer", "pool_quantizer"} <= set(layers)
    for k, layer in fused.items():
        m = q.get_submodule(k)
        w, b = m.folded()
        p = layer.weight_qparams
        assert not layer.weight.is_floating_point()
        assert int(layer.weight.min()) >= p.qmin and int(layer.weight.max()) <= p.qmax
        with torch.no_grad():
            assert torch.equal(layer.dequantized_weight(), m.weight_quantizer.quantize(w))
        assert layer.bias is None or torch.allclose(layer.bias, b)
        assert isinstance(layer.output_qparams, QParams)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_qdq_matches_fake_quantized_model(name):
    torch.manual_seed(1)
    x = torch.rand(16, 1, 8, 8)
    q = _calibrated(Net(), CONFIGS[name], x)
    mode_before = get_mode(q)
    data = _export(q, x)
    assert get_mode(q) is mode_before and not q.training  # restored
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") >= 4 + ops.count("QuantizeLinear")
    with quant_mode(q, "eval"), torch.no_grad():
        ref = q(x)
    step = export_int(q)["fc"].output_qparams.scale.item()
    got = _ort(data, x, optimize=False)
    assert (got - ref).abs().max().item() <= step * (1 + 1e-5)


def test_onnx_weights_are_the_exported_integers_per_channel():
    torch.manual_seed(2)
    x = torch.rand(8, 1, 8, 8)
    q = _calibrated(Net(), CONFIGS["lsq4"], x)
    model = onnx.load_from_string(_export(q, x))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
              for n in model.graph.node if n.op_type == "Constant"}
    inits.update(consts)
    weight = export_int(q)["c1.0"].weight.numpy()
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
          and n.input[0] in inits and inits[n.input[0]].shape == weight.shape]
    assert any(np.array_equal(inits[n.input[0]], weight) for n in dq)
    assert any(a.name == "axis" and a.i == 0 for n in dq for a in n.attribute)
    assert any(n.op_type == "Clip" for n in model.graph.node)  # 4-bit codes in int8 storage


def test_onnx_single_layer_with_ort_integer_kernels():
    # With graph optimizations ORT fuses DQ-Conv-Q into integer kernels with their own
    # requantization; one layer stays within one output step.  7-bit weights: ORT's u8s8
    # kernels on x86 CPUs without VNNI saturate int16 pair sums with full 8-bit weights (its
    # documented "reduce_range" caveat), which is ORT's arithmetic, not the exported graph.
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    x = torch.randn(4, 3, 10, 10)
    cfg = QATConfig(weight={"quantizer": "affine", "bits": 7, "symmetric": True, "axis": 0})
    q = _calibrated(net, cfg, x)
    data = _export(q, x)
    with quant_mode(q, "eval"), torch.no_grad():
        ref = q(x)
    step = export_int(q)["0"].output_qparams.scale.item()
    assert (_ort(data, x, optimize=True) - ref).abs().max().item() <= step * (1 + 1e-5)


def test_onnx_per_feature_activations_on_the_last_axis():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(32, 6)
    cfg = QATConfig(activation={"quantizer": "affine", "bits": 8, "axis": -1})
    q = _calibrated(net, cfg, x)
    data = _export(q, x)
    with quant_mode(q, "eval"), torch.no_grad():
        ref = q(x)
    step = export_int(q)["2"].output_qparams.scale.max().item()
    assert export_int(q)["2"].output_qparams.scale.shape == (3,)
    assert (_ort(data, x, optimize=False) - ref).abs().max().item() <= step * (1 + 1e-5)


def test_onnx_mobilenetv2_depthwise():
    torch.manual_seed(4)
    x = torch.randn(4, 3, 32, 32)
    q = _calibrated(MobileNetV2(), QATConfig(), x)
    data = _export(q, x, opset=17)
    with quant_mode(q, "eval"), torch.no_grad():
        ref = q(x)
    step = export_int(q)["classifier.1"].output_qparams.scale.item()
    assert (_ort(data, x, optimize=False) - ref).abs().max().item() <= step * (1 + 1e-5)


@pytest.mark.parametrize("cfg,match", [
    (QATConfig(weight={"quantizer": "affine", "bits": 4, "axis": 1, "group_size": 2,
                       "symmetric": True}), "per-group"),
    (QATConfig(activation={"quantizer": "affine", "bits": 12}), "8-bit codes"),
])
def test_onnx_refuses_what_opset13_cannot_express(cfg, match):
    x = torch.rand(4, 1, 8, 8)
    q = _calibrated(Net(), cfg, x)
    with pytest.raises(ValueError, match=match):
        _export(q, x)
    assert get_mode(q) is QuantMode.QAT  # restored after the failure


def test_bad_opset_and_uninitialised_quantizers():
    x = torch.rand(4, 1, 8, 8)
    q = _calibrated(Net(), QATConfig(), x)
    with pytest.raises(ValueError, match="opset"):
        _export(q, x, opset=11)
    fresh = prepare(Net(), example_inputs=x[:1])
    with pytest.raises(RuntimeError, match="no range yet"):
        export_int(fresh)
