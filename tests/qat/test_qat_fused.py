"""Fused layers: BatchNorm folding (folded vs unfolded in eval), the training-time folded
forward, the freeze-BN schedule, and bit-identity in bypass mode."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as tF

from lowbit.qat import (
    AffineQuantizer, FusedConv2d, FusedLinear, affine_quantize, fold_bn, freeze_bn_stats,
    quant_mode, set_mode,
)

EPS32 = torch.finfo(torch.float32).eps


def _conv_bn(seed=0, cin=3, cout=6, act=nn.ReLU, bias=False, **conv_kw):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias, **conv_kw)
    bn = nn.BatchNorm2d(cout)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return conv, bn, (act() if act else None)


def _fused(conv, bn, act, bits=8, **kw):
    return FusedConv2d(copy.deepcopy(conv), copy.deepcopy(bn), copy.deepcopy(act),
                       weight_quantizer=AffineQuantizer(bits, symmetric=True, axis=0,
                                                        role="weight"), **kw)


def _reference(conv, bn, act, x):
    y = bn(conv(x))
    return act(y) if act is not None else y


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 3])
def test_fold_bn_matches_unfolded_eval(bias, groups):
    conv, bn, _ = _conv_bn(bias=bias, cin=3, cout=6, act=None, groups=groups)
    bn.eval()
    x = torch.randn(2, 3, 7, 7)
    w, b = fold_bn(conv.weight, conv.bias, bn)
    folded = tF.conv2d(x, w, b, padding=1, groups=groups)
    ref = bn(conv(x))
    # fp32 rounding bound: K products and sums plus the fold's own roundings, per output
    k = conv.weight[0].numel()
    mag = tF.conv2d(x.abs(), w.abs(), None, padding=1, groups=groups) + b.abs()[:, None, None]
    bound = (k + 8) * EPS32 * (mag + ref.abs())
    assert ((folded - ref).abs() <= bound).all()


@pytest.mark.parametrize("act", [None, nn.ReLU, nn.ReLU6, nn.SiLU])
def test_eval_folded_with_fine_quantizer_is_close_to_float(act):
    conv, bn, a = _conv_bn(act=act)
    f = _fused(conv, bn, a, bits=16).eval()
    bn.eval()
    x = torch.randn(2, 3, 8, 8)
    y, ref = f(x), _reference(conv, bn, a, x)
    w, _ = fold_bn(conv.weight, None, bn)
    step = w.abs().amax(dim=(1, 2, 3)) / 32767  # per-channel scale of the 16-bit grid
    # |Δy| <= Σ|x|·step/2 (weight rounding) + fp32 rounding (activations are 1-Lipschitz)
    quant = tF.conv2d(x.abs(), torch.ones_like(w), None, padding=1) * step[:, None, None] / 2
    fp = 40 * EPS32 * (tF.conv2d(x.abs(), w.abs(), None, padding=1) + 1)
    assert ((y - ref).abs() <= quant + fp).all()
    assert not torch.equal(y, ref)  # it did quantize


def test_training_forward_is_the_folded_formula_and_updates_stats():
    conv, bn, act = _conv_bn()
    f = _fused(conv, bn, act, bits=4).train()
    bn_ref = copy.deepcopy(bn).train()
    x = torch.randn(4, 3, 8, 8)
    y = f(x)
    std = torch.sqrt(bn.running_var + bn.eps)
    gain = bn.weight / std
    wf = conv.weight * gain[:, None, None, None]
    s = wf.abs().amax(dim=(1, 2, 3)) / 7
    wq = affine_quantize(wf, s, torch.zeros(6), -7, 7, axis=0)
    z = tF.conv2d(x, wq, None, padding=1) / gain[None, :, None, None]
    expected = torch.relu(bn_ref(z))
    assert torch.allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert torch.allclose(f.bn.running_mean, bn_ref.running_mean, rtol=1e-6, atol=1e-7)
    assert torch.allclose(f.bn.running_var, bn_ref.running_var, rtol=1e-6, atol=1e-7)
    y.sum().backward()
    assert f.bn.weight.grad is not None and f.layer.weight.grad is not None


def test_freeze_bn_schedule():
    conv, bn, act = _conv_bn()
    f = _fused(conv, bn, act, freeze_bn_after=2).train()
    x = torch.randn(4, 3, 8, 8)
    means = []
    for _ in range(4):
        f(x)
        means.append(f.bn.running_mean.clone())
    assert not torch.equal(means[0], means[1])          # live for two steps
    assert torch.equal(means[1], means[2]) and torch.equal(means[2], means[3])
    assert bool(f.bn_frozen)
    y_train = f(x)
    f.eval()
    assert torch.equal(y_train, f(x))  # frozen training == deployed folded layer


def test_freeze_bn_stats_function():
    conv, bn, act = _conv_bn()
    model = nn.Sequential(_fused(conv, bn, act)).train()
    freeze_bn_stats(model)
    before = model[0].bn.running_var.clone()
    model(torch.randn(2, 3, 8, 8))
    assert torch.equal(before, model[0].bn.running_var)
    freeze_bn_stats(model, False)
    model(torch.randn(2, 3, 8, 8))
    assert not torch.equal(before, model[0].bn.running_var)


@pytest.mark.parametrize("training", [True, False])
def test_bypass_is_bit_identical(training):
    conv, bn, act = _conv_bn(bias=True)
    f = _fused(conv, bn, act, output_quantizer=AffineQuantizer(4))
    set_mode(f, "bypass")
    ref_bn = copy.deepcopy(bn)
    f.train(training)
    ref_bn.train(training)
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(f(x), act(ref_bn(conv(x))))
    assert torch.equal(f.bn.running_mean, ref_bn.running_mean)


def test_linear_bn1d_fused():
    torch.manual_seed(1)
    lin, bn = nn.Linear(5, 4), nn.BatchNorm1d(4)
    for _ in range(3):
        bn(torch.randn(8, 4) * 2 + 1)  # running stats
    f = FusedLinear(copy.deepcopy(lin), copy.deepcopy(bn), nn.ReLU6(),
                    weight_quantizer=AffineQuantizer(16, symmetric=True, axis=0, role="weight"))
    f.eval()
    bn.eval()
    x = torch.randn(6, 5)
    ref = tF.relu6(bn(lin(x)))
    assert torch.allclose(f(x), ref, atol=1e-3)
    with quant_mode(f, "bypass"):
        assert torch.equal(f(x), ref)
    f.train()
    f(x).sum().backward()
    assert f.bn.weight.grad is not None


def test_bad_arguments():
    conv, bn, _ = _conv_bn()
    with pytest.raises(ValueError, match="num_features"):
        FusedConv2d(conv, nn.BatchNorm2d(5))
    with pytest.raises(TypeError, match="act"):
        FusedConv2d(conv, bn, nn.Tanh())
    with pytest.raises(TypeError, match="layer"):
        FusedConv2d(nn.Linear(3, 6))
    with pytest.raises(ValueError, match="freeze_bn_after"):
        FusedConv2d(conv, bn, freeze_bn_after=-1)
    with pytest.raises(TypeError, match="weight_quantizer"):
        FusedConv2d(conv, bn, weight_quantizer=nn.ReLU())
