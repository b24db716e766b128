"""Scaling policies: per-tensor, per-channel, per-row and delayed amax scaling, power-of-two
scales, against plain-torch formulas."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
from lowbit.nn.scaling import Granularity, group_amax, scale_from_amax
from _nn_oracles import assert_same, converted, q, run


def test_group_amax_reduces_the_right_axes():
    x = torch.randn(3, 4, 5)
    assert_same(group_amax(x, Granularity.TENSOR, 0), x.abs().max().reshape(1, 1, 1))
    assert_same(group_amax(x, Granularity.CHANNEL, 1),
                x.abs().amax(dim=(0, 2), keepdim=True))
    assert_same(group_amax(x, Granularity.ROW, -1), x.abs().amax(dim=-1, keepdim=True))


def test_scale_maps_amax_to_the_format_max_and_pow2_rounds_up():
    amax = torch.tensor([0.0, 1.0, 448.0, 1000.0, float("inf"), float("nan")])
    s = scale_from_amax(amax, 448.0, pow2=False)
    assert_same(s, torch.tensor([1.0, 1 / 448, 1.0, 1000 / 448, 1.0, 1.0]))
    p = scale_from_amax(amax, 448.0, pow2=True)
    assert_same(p, torch.tensor([1.0, 2.0**-8, 1.0, 4.0, 1.0, 1.0]))
    assert bool((amax[1:4] / p[1:4] <= 448).all())


def _point(role):
    return lnn.Quantize(forward=role)


def test_tensor_scaling_onto_int8_uses_the_whole_grid():
    x = torch.randn(50) * 3
    y = _point(lnn.Role("int8", scaling="tensor"))(x)
    s = x.abs().max() / 127.0
    assert_same(y, torch.round(x / s).clamp(-128, 127) * s)
    assert_same(y.abs().max(), 127 * s)  # the largest magnitude lands on the grid top


@pytest.mark.parametrize("pow2", [False, True])
def test_channel_scaling_of_a_weight_uses_output_channels(pow2):
    torch.manual_seed(10)
    module = nn.Linear(6, 4)
    with torch.no_grad():
        module.weight.mul_(torch.tensor([1.0, 10.0, 100.0, 1000.0]).reshape(4, 1))
    role = lnn.Role("e4m3fn", scaling=lnn.Scaling("channel", pow2=pow2))
    x = torch.randn(3, 6)
    y = converted(module, lnn.Recipe(weight=role))(x)
    w = module.weight.detach()
    s = w.abs().amax(dim=1, keepdim=True) / 448.0
    if pow2:
        s = torch.exp2(torch.ceil(torch.log2(s)))
    assert_same(y.detach(), F.linear(x, q(w / s, "e4m3fn") * s, module.bias.detach()))


def test_row_scaling_follows_each_gemms_reduction_axis():
    torch.manual_seed(11)
    module = nn.Linear(6, 4)
    role = lnn.Role("e5m2", scaling="row")
    x, g = torch.randn(5, 6) * torch.arange(1.0, 6.0).reshape(5, 1), torch.randn(5, 4)
    y, (dx, dw, db) = run(converted(module, lnn.Recipe(input=role)), [x], g)
    row = x.abs().amax(dim=1, keepdim=True) / 57344.0
    col = x.abs().amax(dim=0, keepdim=True) / 57344.0
    assert_same(y, F.linear(q(x / row, "e5m2") * row, module.weight.detach(),
                            module.bias.detach()))
    assert_same(dw, g.t() @ (q(x / col, "e5m2") * col))


def test_delayed_scaling_uses_the_previous_n_amaxes():
    point = _point(lnn.Role("e4m3fn", scaling=lnn.Scaling(history=2)))
    amaxes = [2.0, 8.0, 1.0, 0.5, 0.25]
    # call 1 has no history (uses its own amax); then the max of the previous two
    used = [2.0, 2.0, 8.0, 8.0, 1.0]
    for amax, expect in zip(amaxes, used):
        x = torch.linspace(-amax, amax, 9)
        s = torch.tensor(expect) / 448.0
        y = point(x)
        # call 2's amax (8) exceeds the delayed one (2): the scaled cast saturates
        assert_same(y, q((x / s).clamp(-448, 448), "e4m3fn") * s)
        assert not y.isnan().any() and y.abs().max() <= amax
    assert_same(point.lowbit.output.amax_history, torch.tensor([[0.25], [0.5]]))
    assert "lowbit.output.amax_history" in point.state_dict()


def test_delayed_channel_scaling_keeps_one_history_per_channel():
    module = converted(nn.Linear(3, 2), lnn.Recipe(
        weight=lnn.Role("e4m3fn", scaling=lnn.Scaling("channel", history=4))))
    module(torch.randn(1, 3))
    hist = module.lowbit.weight.amax_history
    assert hist.shape == (4, 2)
    assert_same(hist[0], module.weight.detach().abs().amax(dim=1))


def test_scaling_errors_are_raised_before_training():
    with pytest.raises(ValueError, match="dynamic only"):
        lnn.Scaling("row", history=3)
    with pytest.raises(ValueError, match="block format"):
        lnn.Role("mxfp4", scaling="tensor")
    with pytest.raises(ValueError, match="granularity"):
        lnn.Scaling("block")
    with pytest.raises(TypeError, match="history"):
        lnn.Scaling(history=1.5)
    with pytest.raises(ValueError, match="channel count"):
        _point(lnn.Role("e4m3fn", scaling=lnn.Scaling("channel", history=2)))
