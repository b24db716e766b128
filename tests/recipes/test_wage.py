"""The ``wage`` recipe: each WAGE quantizer against values computed by hand from its formula
(WAGE §3; official boluoweifenda/WAGE Quantize.py), the optimizer's update, the layer wiring,
and short training on digits."""

import math

import pytest
import torch
from torch import nn

import lowbit.recipes as recipes
from lowbit.recipes import _integer as I
from lowbit.recipes.wage import WAGE, wage_init

from _integer_helpers import cnn, train

S8 = 2.0 ** -7  # sigma(8), one step of the 8-bit grid


def test_registered():
    recipe = recipes.get("wage")
    assert recipe.optimizer.name == "wage" and recipe.optimizer.lr == 8.0
    assert "Wu, Li, Chen, Shi" in recipe.source and "boluoweifenda/WAGE" in recipe.source


@pytest.mark.parametrize("x, expected", [
    (0.70710677, 0.5),       # fp32(sqrt(1/2)) lies below sqrt(1/2): log2 rounds down
    (0.70710683, 1.0),       # the next fp32 lies above
    (1.0, 1.0), (1.4142134, 1.0), (1.4142137, 2.0), (3.0, 4.0), (5.0, 4.0), (6.0, 8.0),
    (2.0 ** -140, 2.0 ** -140),  # subnormal: exact power of two
    (0.0, 0.5),              # documented: an all-zero tensor stays zero
])
def test_shift_is_the_nearest_power_of_two_in_log2(x, expected):
    assert I.shift(torch.tensor(x, dtype=torch.float32)).item() == expected


@pytest.mark.parametrize("fan_in, alpha, limit", [
    (3, 1.0, 1.0),                     # L0 = 1 > Lmin: Shift(0.75) = 1
    (4, 1.0, math.sqrt(0.75)),         # L0 = 0.866 > Lmin = 0.75
    (9, 1.0, 0.75),                    # log2(0.75 / 0.577) = 0.38 -> 2^0
    (144, 4.0, 0.75),                  # log2(0.75 / 0.144) = 2.38 -> 2^2
    (512, 8.0, 0.75),                  # log2(9.80) = 3.29 -> 2^3
    (1152, 16.0, 0.75),                # VGG-7's 128*3*3: log2(14.7) = 3.88 -> 2^4
])
def test_layer_scale_and_init_bound(fan_in, alpha, limit):
    assert I.wage_scale(fan_in, 2) == alpha
    assert I.wage_limit(fan_in, 2) == pytest.approx(limit, rel=1e-12)


def test_weight_is_ternary_over_alpha_with_identity_gradient():
    w = torch.zeros(1, 144)  # fan_in 144: alpha = 4
    w[0, :7] = torch.tensor([0.3, -0.25, 0.2, -0.9, 0.75, 0.26, 0.25])
    w.requires_grad_()
    y = I.WageWeight(2)(w)
    # Q(C(w, 2), 2): clamp to +-0.5, round(2w)/2 half to even; then / 4
    assert y[0, :7].tolist() == [0.125, -0.0, 0.0, -0.125, 0.125, 0.125, 0.0]
    g = torch.randn(1, 144)
    y.backward(g)
    assert torch.equal(w.grad, g)


X = [-1.0, -0.3, 0.0, 0.5, 0.99, 1.0, 2.0, 2.0 ** -8, 3 * 2.0 ** -8]


def test_activation_forward_and_clip_mask():
    x = torch.tensor(X, requires_grad=True)
    y = I.WageActivation(8, error_bits=None)(x)
    top = 1 - S8
    assert y.tolist() == [-top, -38 * S8, 0.0, 0.5, top, top, top, 0.0, 2 * S8]
    g = torch.arange(1.0, 10.0)
    y.backward(g)
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 0, 0, 8, 9]  # masked where |x| > 1 - sigma


def test_activation_quantizes_the_masked_error():
    x = torch.tensor(X, requires_grad=True)
    y = I.WageActivation(8, error_bits=8)(x)
    y.backward(torch.tensor([3.0, 0.1, -0.2, 0.7, -0.35, 5.0, 5.0, 0.05, 0.0]))
    # masked: [0, .1, -.2, .7, -.35, 0, 0, .05, 0]; max .7 -> Shift = 1/2 (the masked 5.0 is
    # ignored); e / (1/2) = [.2, -.4, 1.4, -.7, .1] -> clip 1.4 to 1 - 2^-7, round to 2^-7
    assert x.grad.tolist() == [0, 26 * S8, -51 * S8, 127 * S8, -90 * S8, 0, 0, 13 * S8, 0]


def test_error_quantizer_values():
    e = torch.tensor([0.1, -0.3, 1.2, 2.0 ** -9])
    # max 1.2 -> Shift 1; clip 1.2 to 127/128; 12.8 -> 13; -38.4 -> -38; 0.25 -> 0
    assert I.WageError(8)(e).tolist() == [13 * S8, -38 * S8, 127 * S8, 0.0]
    assert I.WageError(8)(e * 16).tolist() == [13 * S8, -38 * S8, 127 * S8, 0.0]  # no scale
    assert torch.equal(I.wage_error(torch.zeros(3), 8), torch.zeros(3))


def test_grad_on_integer_points_is_exact():
    g = torch.tensor([1.0, -0.5, 0.25, 0.0])
    for seed in (0, 1):  # lr * g / Shift = [8, -4, 2, 0] are integers: no randomness
        assert I.wage_grad(g, 8.0, 8, 16, seed=seed).tolist() == [8 * S8, -4 * S8, 2 * S8, 0.0]
    # the shift normalises: 1000x the gradient gives the same update (Shift(1000) = 1024)
    assert I.wage_grad(g * 1024, 8.0, 8, 16, seed=0).tolist() == [8 * S8, -4 * S8, 2 * S8, 0.0]


def test_grad_rounds_stochastically_and_unbiased():
    n = 200_000
    g = torch.full((n,), 0.3)
    g[0] = 1.0  # max 1 -> Shift 1
    d = I.wage_grad(g, 1.0, 8, 16, seed=123)[1:] / S8
    assert set(d.unique().tolist()) <= {0.0, 1.0}
    p = round(0.3 * 2**15) / 2**15  # Q(0.3, 16): the randomizer grid
    # a Binomial mean: 6 standard deviations give a false failure rate below 1e-8
    assert abs(d.mean().item() - p) < 6 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(I.wage_grad(g, 1.0, 8, 16, seed=123)[1:] / S8, d)
    assert not torch.equal(I.wage_grad(g, 1.0, 8, 16, seed=124)[1:] / S8, d)


def test_optimizer_step_by_hand():
    w = nn.Parameter(torch.tensor([[0.75, -0.5, 0.0, 0.25]]))
    b = nn.Parameter(torch.tensor([1.0, 0.0]))
    w.grad = torch.tensor([[1.0, -0.5, 0.25, 0.0]])
    b.grad = torch.tensor([1.0, -0.25])
    WAGE([w, b], lr=8.0).step()
    # weight: C(w, 2) clips 0.75 to 0.5; dW = [8, -4, 2, 0] / 128
    assert w.tolist() == [[0.5 - 8 * S8, -0.5 + 4 * S8, -2 * S8, 0.25]]
    # bias: C(b, 8) clips 1.0 to 127/128; db = [8, -2] / 128
    assert b.tolist() == [127 * S8 - 8 * S8, 2 * S8]


@pytest.mark.parametrize("call, err", [
    (lambda: I.WageWeight(1), ValueError), (lambda: I.WageActivation(8, error_bits=1.5),
                                            TypeError),
    (lambda: I.wage_weight(torch.ones(3), 2), ValueError), (lambda: WAGE([], lr=0), ValueError),
    (lambda: WAGE([nn.Parameter(torch.ones(1))], bits_w="2"), TypeError),
    (lambda: I.wage_scale(0, 2), ValueError),
])
def test_bad_arguments(call, err):
    with pytest.raises(err):
        call()


def test_prepare_initialises_ternary_weights_and_rejects_batch_norm():
    model = cnn(batchnorm=False)
    recipes.get("wage").prepare(model, seed=3)
    for layer in (model[0], model[2], model[6]):
        assert set(layer.weight.unique().tolist()) <= {-0.5, 0.0, 0.5}
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert I.tag_of(layer.weight).kind is I.ParamKind.WEIGHT
    # L = Lmin = 1.5 sigma(2) makes the three values equally likely (fan_in 144: 4608 draws)
    zeros = (model[2].weight == 0).float().mean().item()
    assert abs(zeros - 1 / 3) < 6 * math.sqrt(2 / 9 / model[2].weight.numel())
    with pytest.raises(ValueError, match="batch norm"):
        recipes.get("wage").prepare(cnn(batchnorm=True), seed=0)


def test_init_is_seeded():
    a, b = torch.empty(8, 16), torch.empty(8, 16)
    wage_init(a, 2, generator=torch.Generator().manual_seed(5))
    wage_init(b, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_layer_wiring_matches_the_formulas():
    """One quantized Linear (first and last layer at once): forward A·W_q/α, the output
    gradient through E, the input gradient through the clip mask and E, wgrad from the
    quantized operands."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 4, bias=False))
    recipes.get("wage").prepare(model, seed=0)
    w = model[0].weight.detach().clone()
    x = (torch.rand(5, 6) * 2.4 - 1.2).requires_grad_()
    g = torch.randn(5, 4)
    y = model(x)
    y.backward(g)
    a = I.WageActivation(8, error_bits=None)(x.detach())
    wq = I.wage_weight(w, 2)
    assert torch.equal(y, a @ wq.t())
    gq = I.wage_error(g, 8)
    mask = (x.detach().abs() <= 1 - S8).float()
    assert torch.equal(x.grad, I.wage_error((gq @ wq) * mask, 8))
    assert torch.equal(model[0].weight.grad, gq.t() @ a)


def test_trains_digits_without_nan():
    model = cnn(batchnorm=False)
    losses, _ = train("wage", model, seed=0, epochs=1)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < 0.75 * sum(losses[:10])  # it learns
    for layer in (model[0], model[2], model[6]):
        # master weights on the 8-bit grid, inside C(., 2) up to one update
        assert torch.equal(layer.weight * 128, (layer.weight * 128).round())
        assert layer.weight.abs().max() <= 0.5 + 16 * S8


@pytest.mark.slow
def test_digits_accuracy_within_three_points_of_fp32():
    fp32 = [train("fp32", cnn(batchnorm=False), seed=s, epochs=10, lr=0.05)[1] for s in range(3)]
    wage = [train("wage", cnn(batchnorm=False), seed=s, epochs=10)[1] for s in range(3)]
    assert sum(wage) / 3 > sum(fp32) / 3 - 0.03
