"""Routing of each GEMM to the simulated-accumulation primitives of lowbit.ops.accumulate,
checked with stand-in primitives that compute the exact GEMM and record their calls."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
from lowbit.ops import accumulate as acc_ops
from lowbit.ops.accumulate import Accumulate
from _nn_oracles import FP32_EVERYWHERE, assert_same, converted, q, run

NEAREST = Accumulate(acc="e6m9")
RANDOM = Accumulate(acc="e6m9", rounding="stochastic")


@pytest.fixture
def calls(monkeypatch):
    log = []

    def gemm(a, b, spec, *, seed=None):
        log.append(("gemm", tuple(a.shape), tuple(b.shape), spec, seed))
        return torch.matmul(a, b)

    def conv2d_forward(x, w, spec, *, stride, padding, dilation, groups, seed=None):
        log.append(("conv2d_forward", tuple(x.shape), tuple(w.shape), spec, seed))
        return F.conv2d(x, w, None, stride, padding, dilation, groups)

    def conv2d_input_grad(g, w, input_shape, spec, *, stride, padding, dilation, groups,
                          seed=None):
        log.append(("conv2d_input_grad", tuple(g.shape), tuple(w.shape), spec, seed))
        return torch.nn.grad.conv2d_input(input_shape, w, g, stride, padding, dilation, groups)

    def conv2d_weight_grad(x, g, weight_shape, spec, *, stride, padding, dilation, groups,
                           seed=None):
        log.append(("conv2d_weight_grad", tuple(x.shape), tuple(g.shape), spec, seed))
        return torch.nn.grad.conv2d_weight(x, weight_shape, g, stride, padding, dilation,
                                           groups)

    for fn in (gemm, conv2d_forward, conv2d_input_grad, conv2d_weight_grad):
        monkeypatch.setattr(acc_ops, fn.__name__, fn, raising=False)
    return log


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_linear_routes_each_gemm_with_its_own_spec(calls):
    torch.manual_seed(17)
    module = nn.Linear(6, 4)
    x, g = torch.randn(2, 3, 6), torch.randn(2, 3, 4)
    want = run(module, [x], g)
    recipe = FP32_EVERYWHERE.replace(accumulate={"forward": NEAREST, "dgrad": RANDOM,
                                                 "wgrad": NEAREST})
    got = run(converted(module, recipe), [x], g)
    _close(got[0], want[0])
    for a, b in zip(got[1], want[1]):
        _close(a, b)
    kinds = [(c[1], c[2], c[3]) for c in calls]
    assert kinds == [((6, 6), (6, 4), NEAREST), ((6, 4), (4, 6), RANDOM),
                     ((4, 6), (6, 6), NEAREST)]
    assert calls[0][4] is None and calls[2][4] is None and isinstance(calls[1][4], int)


def test_only_the_gemms_with_a_spec_are_routed(calls):
    module = converted(nn.Linear(5, 3), lnn.Recipe(weight="bf16", accumulate={"wgrad": NEAREST}))
    module(torch.randn(4, 5, requires_grad=True)).sum().backward()
    assert [c[1:3] for c in calls] == [((3, 4), (4, 5))]


def test_stochastic_accumulation_seeds_follow_the_step(calls):
    module = converted(nn.Linear(5, 3), lnn.Recipe(accumulate=RANDOM), seed=2)
    x = torch.randn(4, 5, requires_grad=True)
    for _ in range(2):
        module(x).sum().backward()
    seeds = [c[4] for c in calls]
    assert len(seeds) == 6 and len(set(seeds)) == 6
    calls.clear()
    module.lowbit.step = 0  # replaying step 1 draws the same seeds
    module(x).sum().backward()
    assert [c[4] for c in calls] == seeds[:3]


CONVS = {
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 9),
               ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]),
    "conv2d": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, dilation=2), (2, 4, 7, 6),
               ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]),
    "convtranspose2d": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                   output_padding=1), (2, 4, 3, 5),
                        ["conv2d_input_grad", "conv2d_forward", "conv2d_weight_grad"]),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_convolutions_route_to_the_conv2d_primitives(calls, case):
    torch.manual_seed(18)
    build, shape, expected = CONVS[case]
    module, x = build(), torch.randn(*shape)
    g = torch.randn_like(module(x))
    want = run(module, [x], g)
    got = run(converted(module, lnn.Recipe(weight="fp32", accumulate=NEAREST)), [x], g)
    _close(got[0], want[0])
    for a, b in zip(got[1], want[1]):
        _close(a, b)
    assert [c[0] for c in calls] == expected


def test_matmul_routes_through_gemm(calls):
    a, b = torch.randn(2, 3, 5), torch.randn(2, 5, 4)
    g = torch.randn(2, 3, 4)
    want = run(lnn.MatMul(), [a, b], g)
    got = run(converted(lnn.MatMul(), lnn.Recipe(accumulate=NEAREST)), [a, b], g)
    for x, y in zip([got[0]] + got[1], [want[0]] + want[1]):
        _close(x, y)
    assert [c[0] for c in calls] == ["gemm"] * 3


def test_missing_primitives_raise_a_clear_error(monkeypatch):
    monkeypatch.delattr(acc_ops, "gemm", raising=False)
    module = converted(nn.Linear(2, 2), lnn.Recipe(accumulate=NEAREST))
    with pytest.raises(NotImplementedError, match="lacks.*'gemm'"):
        module(torch.randn(1, 2))


def test_the_real_primitives_compute_each_gemm_of_a_linear():
    torch.manual_seed(28)
    spec = Accumulate(acc="bf16")
    module = nn.Linear(16, 8)
    x, g = torch.randn(4, 16), torch.randn(4, 8)
    y, (dx, dw, db) = run(converted(module, lnn.Recipe(weight="e4m3fn", accumulate=spec)),
                          [x], g)
    wq = q(module.weight.detach(), "e4m3fn")
    assert_same(y, acc_ops.gemm(x, wq.t(), spec) + module.bias.detach())
    assert_same(dx, acc_ops.gemm(g, wq, spec))
    assert_same(dw, acc_ops.gemm(g.t(), x, spec))
    assert_same(db, g.sum(0))


def test_the_real_primitives_compute_each_gemm_of_a_conv2d():
    torch.manual_seed(29)
    spec = Accumulate(acc="e6m9", chunk=8)
    module = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 6, 6)
    g = torch.randn(2, 4, 3, 3)
    y, (dx, dw) = run(converted(module, lnn.Recipe(accumulate=spec)), [x], g)
    w = module.weight.detach()
    geo = dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)
    assert_same(y, acc_ops.conv2d_forward(x, w, spec, **geo))
    assert_same(dx, acc_ops.conv2d_input_grad(g, w, x.shape, spec, **geo))
    assert_same(dw, acc_ops.conv2d_weight_grad(x, g, w.shape, spec, **geo))
