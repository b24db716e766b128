"""GEMM layers (Linear, convolutions, MatMul): fp32 equality, per-GEMM quantization formulas,
where each role lands (trace), QAT quantizer roles."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
from _nn_oracles import FP32_EVERYWHERE, assert_same, converted, q, run

CASES = {
    "linear-2d": (lambda: nn.Linear(7, 5), lambda: [torch.randn(3, 7)]),
    "linear-3d": (lambda: nn.Linear(7, 5), lambda: [torch.randn(2, 3, 7)]),
    "linear-nobias": (lambda: nn.Linear(7, 5, bias=False), lambda: [torch.randn(2, 3, 7)]),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), lambda: [torch.randn(2, 4, 11)]),
    "conv2d-groups": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=2),
                      lambda: [torch.randn(2, 4, 11, 9)]),
    "conv2d-same-even": (lambda: nn.Conv2d(4, 6, 4, padding="same"),
                         lambda: [torch.randn(2, 4, 7, 6)]),
    "conv2d-valid": (lambda: nn.Conv2d(4, 6, 3, padding="valid"),
                     lambda: [torch.randn(2, 4, 7, 6)]),
    "conv2d-reflect": (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
                       lambda: [torch.randn(2, 4, 7, 6)]),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, padding=1), lambda: [torch.randn(2, 2, 4, 5, 3)]),
    "convtranspose2d": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                   output_padding=1, groups=2),
                        lambda: [torch.randn(2, 4, 5, 6)]),
    "matmul-3d": (lambda: lnn.MatMul(), lambda: [torch.randn(2, 3, 5), torch.randn(2, 5, 4)]),
    "matmul-broadcast": (lambda: lnn.MatMul(),
                         lambda: [torch.randn(2, 3, 4, 5), torch.randn(5, 6)]),
}


# torch's own nn.Conv2d warns that an even kernel with padding='same' pads a copy.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_formats_equal_torch_exactly(case):
    build, make = CASES[case]
    module, inputs = build(), make()
    grad = torch.randn_like(module(*inputs))
    want = run(module, inputs, grad)
    q_module = converted(module, FP32_EVERYWHERE)
    assert isinstance(q_module, lnn.QuantizedModule)
    with lnn.trace() as events:
        got = run(q_module, inputs, grad)
    assert events, "fp32 roles must still run through the quantizers"
    assert_same(got, want)


def test_conv_transpose_output_size_is_honoured():
    module = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    x = torch.randn(1, 3, 4, 4)
    want = module(x, output_size=[8, 8])
    got = converted(module, FP32_EVERYWHERE)(x, output_size=[8, 8])
    assert got.shape == (1, 2, 8, 8)
    assert_same(got.detach(), want.detach())


SCALAR = dict(input="e4m3fn", weight="e5m2", bias="bf16", output="bf16", grad_output="e5m2",
              grad_input="e4m3", grad_weight="fixed<12,8>")


@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 7)])
def test_linear_scalar_formats_follow_the_formulas(shape):
    torch.manual_seed(1)
    module = nn.Linear(7, 5)
    x, r = torch.randn(*shape), SCALAR
    g = torch.randn(*shape[:-1], 5)
    y, (dx, dw, db) = run(converted(module, lnn.Recipe(**r)), [x], g)
    w, b = module.weight.detach(), module.bias.detach()
    xq, wq = q(x, r["input"]), q(w, r["weight"])
    assert_same(y, q(F.linear(xq, wq, q(b, r["bias"])), r["output"]))
    gq = q(g, r["grad_output"]).reshape(-1, 5)
    assert_same(dx, q((gq @ wq).reshape(x.shape), r["grad_input"]))
    assert_same(dw, q(gq.t() @ xq.reshape(-1, 7), r["grad_weight"]))
    assert_same(db, q(gq.sum(0), r["grad_weight"]))


BLOCK = lnn.Recipe(input="mxfp4", weight="mxfp8_e4m3", grad_output="mxfp8_e5m2")


def test_linear_block_formats_requantize_along_each_gemms_reduction_axis():
    # K=40, N=36, M=70: every block axis has a ragged last block.
    torch.manual_seed(2)
    module = nn.Linear(40, 36)
    x, g = torch.randn(2, 35, 40), torch.randn(2, 35, 36)
    y, (dx, dw, db) = run(converted(module, BLOCK), [x], g)
    w = module.weight.detach()
    fi, fw, fg = "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2"
    assert_same(y, F.linear(q(x, fi, -1), q(w, fw, -1), module.bias.detach()))
    g2, x2 = g.reshape(-1, 36), x.reshape(-1, 40)
    assert_same(dx, (q(g2, fg, -1) @ q(w, fw, 0)).reshape(x.shape))
    assert_same(dw, q(g2, fg, 0).t() @ q(x2, fi, 0))
    assert_same(db, q(g2, fg, 0).sum(0))


def test_conv2d_block_formats_follow_the_formulas():
    torch.manual_seed(3)
    module = nn.Conv2d(40, 36, 3, stride=1, padding=1)
    x, g = torch.randn(3, 40, 4, 4), torch.randn(3, 36, 4, 4)
    y, (dx, dw, db) = run(converted(module, BLOCK), [x], g)
    w, b = module.weight.detach(), module.bias.detach()
    fi, fw, fg = "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2"
    assert_same(y, F.conv2d(q(x, fi, 1), q(w, fw, 1), b, padding=1))
    assert_same(dx, torch.nn.grad.conv2d_input(x.shape, q(w, fw, 0), q(g, fg, 1), padding=1))
    assert_same(dw, torch.nn.grad.conv2d_weight(q(x, fi, 0), w.shape, q(g, fg, 0), padding=1))
    torch.testing.assert_close(db, q(g, fg, 0).sum((0, 2, 3)), rtol=1e-6, atol=1e-6)


def test_conv_transpose2d_block_formats_follow_the_formulas():
    torch.manual_seed(4)
    module = nn.ConvTranspose2d(40, 36, 3, stride=2, padding=1, output_padding=1)
    x = torch.randn(2, 40, 3, 3)
    g = torch.randn(2, 36, 6, 6)
    y, (dx, dw, _) = run(converted(module, BLOCK), [x], g)
    w, b = module.weight.detach(), module.bias.detach()
    fi, fw, fg = "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2"
    want = F.conv_transpose2d(q(x, fi, 1), q(w, fw, 0), b, stride=2, padding=1,
                              output_padding=1)
    assert_same(y, want)
    torch.testing.assert_close(dx, F.conv2d(q(g, fg, 1), q(w, fw, 1), stride=2, padding=1),
                               rtol=1e-5, atol=1e-5)
    assert_same(dw, torch.nn.grad.conv2d_weight(q(g, fg, 0), w.shape, q(x, fi, 0), stride=2,
                                                padding=1))


def test_matmul_block_formats_follow_the_formulas_with_broadcast():
    torch.manual_seed(5)
    a, b = torch.randn(2, 20, 40), torch.randn(40, 36)
    g = torch.randn(2, 20, 36)
    recipe = lnn.Recipe(input="mxfp4", weight="mxfp8_e4m3", grad_output="mxfp8_e5m2",
                        grad_weight="bf16")
    y, (da, db) = run(converted(lnn.MatMul(), recipe), [a, b], g)
    fi, fw, fg = "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2"
    assert_same(y, q(a, fi, -1) @ q(b, fw, -2))
    assert_same(da, q(g, fg, -1) @ q(b, fw, -1).t())
    # b is 2-D, shared by every row: wgrad reduces over the folded (batch, M) axis
    a2, g2 = a.reshape(-1, 40), g.reshape(-1, 36)
    assert_same(db, q(q(a2, fi, 0).t() @ q(g2, fg, 0), "bf16"))


def test_batched_matmul_wgrad_blocks_run_along_m_per_batch():
    torch.manual_seed(5)
    a, b, g = torch.randn(2, 20, 40), torch.randn(2, 40, 36), torch.randn(2, 20, 36)
    recipe = lnn.Recipe(input="mxfp4", grad_output="mxfp8_e5m2")
    _, (da, db) = run(converted(lnn.MatMul(), recipe), [a, b], g)
    assert_same(da, q(g, "mxfp8_e5m2", -1) @ b.transpose(-2, -1))
    assert_same(db, q(a, "mxfp4", -2).transpose(-2, -1) @ q(g, "mxfp8_e5m2", -2))


def _landed(events):
    return sorted((e.role, e.gemm) for e in events)


def test_each_scalar_role_lands_once_where_the_recipe_says():
    module = converted(nn.Linear(6, 4), lnn.Recipe(**SCALAR))
    with lnn.trace() as events:
        module(torch.randn(3, 6, requires_grad=True)).sum().backward()
    assert _landed(events) == sorted([
        ("input", "forward"), ("weight", "forward"), ("bias", "forward"), ("output", "forward"),
        ("grad_output", "backward"), ("grad_input", "dgrad"), ("grad_weight", "wgrad"),
        ("grad_bias", "wgrad")])
    assert {e.format for e in events if e.role == "grad_weight"} == {"fixed<12,8>"}


def test_block_operands_are_quantized_per_gemm_along_its_axis():
    module = converted(nn.Linear(64, 32), BLOCK)
    with lnn.trace() as events:
        module(torch.randn(5, 64, requires_grad=True)).sum().backward()
    landed = {(e.role, e.gemm): e.format for e in events}
    assert landed == {
        ("input", "forward"): "mxfp4",
        ("weight", "forward"): "mxfp8_e4m3",
        ("grad_output", "dgrad"): "mxfp8_e5m2",
        ("weight", "dgrad"): "block<e4m3fn_sat,e8m0fnu,32,0,floor>",
        ("grad_output", "wgrad"): "block<e5m2_sat,e8m0fnu,32,0,floor>",
        ("input", "wgrad"): "block<e2m1fn,e8m0fnu,32,0,floor>",
    }


def test_backward_skips_the_gemms_nobody_needs():
    module = converted(nn.Linear(6, 4), lnn.Recipe(**SCALAR))
    module.weight.requires_grad_(False)
    module.bias.requires_grad_(False)
    with lnn.trace() as events:
        module(torch.randn(3, 6, requires_grad=True)).sum().backward()
    assert not any(e.gemm == "wgrad" for e in events)
    module.weight.requires_grad_(True)
    with lnn.trace() as events:
        module(torch.randn(3, 6)).sum().backward()
    assert not any(e.gemm == "dgrad" for e in events)
    assert ("grad_weight", "wgrad") in _landed(events)


class _Alpha(nn.Module):
    """A stand-in QAT quantizer: multiplies by a learned alpha."""

    def __init__(self, init=2.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        return x * self.alpha


lnn.register_quantizer("test-alpha", _Alpha)


def test_qat_quantizer_roles_run_in_the_graph_and_on_gradients():
    module = nn.Linear(5, 3)
    recipe = lnn.Recipe(input={"quantizer": "test-alpha", "init": 3.0},
                        grad_output={"quantizer": "test-alpha", "init": 0.5})
    qm = converted(module, recipe)
    x = torch.randn(4, 5, requires_grad=True)
    y = qm(x)
    alpha = qm.lowbit.input.alpha
    assert_same(y.detach(), F.linear(x.detach() * 3.0, module.weight, module.bias).detach())
    g = torch.randn(4, 3)
    y.backward(g)
    w = module.weight.detach()
    assert_same(x.grad, (g * 0.5) @ w * 3.0)  # gradient quantizer, then alpha's chain rule
    torch.testing.assert_close(alpha.grad, ((g * 0.5) @ w * x.detach()).sum())
    assert alpha in set(qm.parameters())


def test_a_qat_factory_must_build_a_module():
    lnn.register_quantizer("test-not-a-module", lambda: 3)
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        converted(nn.Linear(2, 2), lnn.Recipe(weight={"quantizer": "test-not-a-module"}))


def test_register_quantizer_rejects_a_second_factory_for_a_name():
    with pytest.raises(ValueError, match="already registered"):
        lnn.register_quantizer("test-alpha", lambda: _Alpha())
    assert "test-alpha" in lnn.quantizer_names()


def test_directly_built_quantized_layers_work_like_converted_ones():
    torch.manual_seed(6)
    layer = lnn.Linear(6, 4, recipe=lnn.Recipe(**SCALAR), name="fc")
    plain = nn.Linear(6, 4)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if "lowbit" not in k})
    x, g = torch.randn(3, 6), torch.randn(3, 4)
    assert_same(run(layer, [x], g), run(converted(plain, lnn.Recipe(**SCALAR)), [x], g))
    conv = lnn.Conv2d(2, 3, 3, recipe=lnn.Recipe(weight="e4m3fn"))
    assert conv(torch.randn(1, 2, 5, 5)).shape == (1, 3, 3, 3)


AMP_CASES = {
    "linear": (lambda: nn.Linear(7, 5), (3, 7)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5)),
}


@pytest.mark.parametrize("case", sorted(AMP_CASES))
def test_autocast_runs_the_gemms_in_its_dtype_like_torch(case):
    torch.manual_seed(27)
    build, shape = AMP_CASES[case]
    module, x = build(), torch.randn(*shape)
    q_module = converted(module, FP32_EVERYWHERE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = torch.randn_like(module(x).float()).bfloat16()
        want = run(module, [x], g)
        got = run(q_module, [x], g)
    assert got[0].dtype == torch.bfloat16 and got[1][1].dtype == torch.float32
    assert_same(got, want)


def test_quantize_point_rounds_forward_and_gradient():
    point = lnn.Quantize(forward="e4m3fn", backward="mxfp4")
    x, g = torch.randn(3, 40), torch.randn(3, 40)
    y, (dx,) = run(point, [x], g)
    assert_same([y, dx], [q(x, "e4m3fn"), q(g, "mxfp4")])
    assert "forward=Role('e4m3fn'), backward=Role('mxfp4')" in repr(point)
