"""The ``wageubn`` recipe: each WAGEUBN quantizer against values computed by hand from its
formula (WAGEUBN §3; official yang-yk/wageubn Quantize.py, BatchNorm.py, imagenet_main.py), the
optimizer against an exact rational oracle, the layer wiring, and short training on digits."""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

import lowbit.nn as lnn
import lowbit.recipes as recipes
from lowbit.recipes import _integer as I
from lowbit.recipes.wageubn import BN_EPS, WAGEUBN, quantized_lr

from _integer_helpers import cnn, train

S8 = 2.0 ** -7


def test_registered():
    recipe = recipes.get("wageubn")
    assert recipe.optimizer.name == "wageubn" and recipe.optimizer.lr == 0.05
    assert "Yang" in recipe.source and "yang-yk/wageubn" in recipe.source


def test_direct_quantization_is_unbounded_half_even():
    x = torch.tensor([2.0 ** -8, 3 * 2.0 ** -8, -2.0 ** -8, 300.3, -0.3])
    assert I.direct(x, 8).tolist() == [0.0, 2 * S8, -0.0, 38438 * S8, -38 * S8]


def test_shift_quantization_values():
    e = torch.tensor([0.001, -0.3, 1.2, 0.0123])
    # max 1.2 -> S = 1; Q(., 8): 0.128 -> 0, -38.4 -> -38, 153.6 -> 154 (clamped to 1),
    # 1.5744 -> 2; the scale is put back
    expected = [0.0, -38 * S8, 1.0, 2 * S8]
    assert I.ShiftError(8)(e).tolist() == expected
    assert I.shift_quantize(e * 4, 8).tolist() == [4 * v for v in expected]


def test_flag_quantization_values():
    s = S8  # Shift(1.2) / 2^7
    d = torch.tensor([0.128, -38.4, 153.6, 1.5744, 2.5, 1.0, 0.999, -0.0039])
    got = I.FlagError(8)(d * s) / s
    # |d| >= 1: round half even, clamp +-127; |d| < 1: Q(d, 8) (0.128 -> 16/128,
    # 0.999 -> 128/128, -0.0039 -> -0.5/128 -> -0)
    assert got.tolist() == [16 * S8, -38.0, 127.0, 2.0, 2.0, 1.0, 1.0, -0.0]


def test_constant_quantization_on_integer_points_is_exact():
    g = torch.tensor([1.0, -0.5, 0.25, 0.0, 2.0 ** -7])
    for seed in (0, 1):  # 128 g = [128, -64, 32, 0, 1]: integers; 128 is clamped to 127
        got = I.constant_quantize(g, 128.0, 8, seed=seed)
        assert (got * 2**14).tolist() == [127, -64, 32, 0, 1]
    # g_scale 32: [32 -> 31, -16, 8, 0, 0.25 -> {0, 1}]; the divisor stays 128 * 2^7
    got = I.constant_quantize(g * 8, 32.0, 8, seed=0) * 2**14  # Shift(8) = 8 normalises
    assert got[:4].tolist() == [31, -16, 8, 0] and got[4].item() in (0.0, 1.0)


def test_constant_quantization_is_unbiased():
    n = 200_000
    g = torch.full((n,), 0.3)
    g[0] = 1.0
    units = I.constant_quantize(g, 128.0, 8, seed=9)[1:] * 2**14
    assert set(units.unique().tolist()) <= {38.0, 39.0}
    p = float(torch.tensor(0.3) * 128) - 38  # the fraction of 38.4 in fp32
    assert abs(units.mean().item() - 38 - p) < 6 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("lr, expected", [
    (0.05, 26 / 512), (0.1, 51 / 512), (2.0, 511 / 512), (3 * 2.0 ** -10, 2 / 512),
    (2.0 ** -10, 0.0),  # round(0.5) = 0, half to even
])
def test_learning_rate_grid(lr, expected):
    assert quantized_lr(lr, 10) == expected


def _q(x: Fraction, k: int) -> Fraction:
    """Q(x, k) in exact rationals; Python's round() is half to even, as tf.round."""
    step = 2 ** (k - 1)
    return Fraction(round(x * step), step)


def _oracle(w, g, kind, steps, *, lr=Fraction(13, 256), wd=Fraction(0), mom=Fraction(1, 4)):
    """The WAGEUBN update in exact rationals, for gradients on which ``constant_quantize``
    is deterministic (128 g / Shift(max|g|) integral)."""
    w, buf = [Fraction(v) for v in w], None
    for _ in range(steps):
        gg = [Fraction(v) + wd * wv for v, wv in zip(g, w)] if kind != "norm" else \
            [_q(Fraction(v), 15) for v in g]
        if kind == "weight":
            top = max(abs(v) for v in gg)
            shift = Fraction(2) ** round(math.log2(top))
            gg = [max(min(v / shift * 128, 127), -127) / 2**14 for v in gg]
        buf = gg if buf is None else [mom * b + v for b, v in zip(buf, gg)]
        if kind == "float":
            w = [wv - lr * b for wv, b in zip(w, buf)]
        else:
            buf = [_q(b, 13) for b in buf]
            w = [_q(wv - lr * b, 24) for wv, b in zip(w, buf)]
    return [float(v) for v in w]


@pytest.mark.parametrize("kind, w, g, wd, steps", [
    ("weight", [0.5, -0.25, 0.125, 0.0], [1.0, -0.5, 0.25, 0.0], 0, 3),
    # g + wd w = [1, 0.125]: the decay enters G (one step: later ones would round randomly)
    ("weight", [0.5, 0.25], [0.5, -0.125], 1, 1),
    ("norm", [1.0, 0.5, 0.0], [0.3, -1e-5, 0.0625], 0, 3),
    ("float", [0.3, -0.2], [0.01, 0.02], 0.25, 3),
])
def test_optimizer_matches_the_exact_oracle(kind, w, g, wd, steps):
    p = nn.Parameter(torch.tensor(w))
    I.tag(p, kind, "p", 0)
    opt = WAGEUBN([p], lr=0.05, weight_decay=float(wd))
    for step in range(1, steps + 1):
        p.grad = torch.tensor(g)
        opt.step()
        expected = _oracle(w, [float(torch.tensor(v)) for v in g], kind, step,
                           wd=Fraction(wd))
        if kind == "float":  # fp32 arithmetic, not on a grid
            assert p.tolist() == pytest.approx(expected, rel=1e-6)
        else:
            assert p.tolist() == expected


@pytest.mark.parametrize("call, err", [
    (lambda: WAGEUBN([], lr=-1.0), ValueError), (lambda: WAGEUBN([], momentum=-0.5), ValueError),
    (lambda: WAGEUBN([nn.Parameter(torch.ones(1))], bits_momentum=1), ValueError),
    (lambda: WAGEUBN([nn.Parameter(torch.ones(1))], seed=-1), TypeError),
    (lambda: I.FlagError(bits=30), ValueError), (lambda: I.tag(torch.ones(1), "odd", "x", 0),
                                                 ValueError),
])
def test_bad_arguments(call, err):
    with pytest.raises(err):
        call()


def test_prepare_places_every_quantizer():
    model = cnn(batchnorm=True)
    recipes.get("wageubn").prepare(model, seed=0)
    first, mid, last = model[0], model[3], model[8]
    assert not isinstance(first, lnn.QuantizedModule)  # first layer in float
    assert set(last.lowbit.recipe.roles()) == {"grad_input"}
    assert isinstance(last.lowbit.quantizer("grad_input"), I.ShiftError)
    assert isinstance(mid.lowbit.quantizer("grad_output"), I.FlagError)
    assert isinstance(mid.lowbit.quantizer("grad_input"), I.ShiftError)
    for bn in (model[1], model[4]):
        assert bn.eps == BN_EPS and set(bn.lowbit.recipe.roles()) == {
            "weight", "bias", "stats", "normalized"}
        assert I.tag_of(bn.weight).kind is I.ParamKind.NORM
    w = mid.weight
    assert I.tag_of(w).kind is I.ParamKind.WEIGHT
    assert I.tag_of(first.weight).kind is I.ParamKind.FLOAT
    assert torch.equal(w * 2**15, (w * 2**15).round())  # Q(., 16) initialisation
    assert w.abs().max() <= 2 / math.sqrt(16 * 9) + 2**-16  # truncated at 2 std


def test_layer_wiring_matches_the_formulas():
    """A quantized Linear between two float ones: forward Q8(a)·W8, wgrad from the
    flag-quantized output gradient, the input gradient shift-quantized."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(),
                          nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 3))
    recipes.get("wageubn").prepare(model, seed=0)
    seen = {}
    x = torch.randn(7, 4)
    a = model[2](model[1](model[0](x)))
    a.register_hook(lambda g: seen.setdefault("da", g))
    h = model[3](a)
    h.register_hook(lambda g: seen.setdefault("dh", g))
    model[6](model[5](model[4](h))).square().sum().backward()
    wq = I.direct(model[3].weight.detach(), 8).clamp(-1 + S8, 1 - S8)
    aq = I.direct(a.detach(), 8)
    assert torch.equal(h, aq @ wq.t())
    e2 = I.flag_quantize(seen["dh"], 8)
    assert torch.equal(model[3].weight.grad, e2.t() @ aq)
    assert torch.equal(seen["da"], I.shift_quantize(e2 @ wq, 8))


def test_needs_batch_norm():
    with pytest.raises(ValueError, match="_BatchNorm"):
        recipes.get("wageubn").prepare(cnn(batchnorm=False), seed=0)


def test_trains_digits_without_nan():
    model = cnn(batchnorm=True)
    losses, _ = train("wageubn", model, seed=0, epochs=1)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])  # it learns
    w = model[3].weight  # quantized: on Q(., 24)
    assert torch.equal(w * 2**23, (w * 2**23).round())


@pytest.mark.slow
def test_digits_accuracy_within_three_points_of_fp32():
    fp32 = [train("fp32", cnn(batchnorm=True), seed=s, epochs=5, lr=0.05)[1] for s in range(3)]
    ubn = [train("wageubn", cnn(batchnorm=True), seed=s, epochs=5)[1] for s in range(3)]
    assert sum(ubn) / 3 > sum(fp32) / 3 - 0.03
