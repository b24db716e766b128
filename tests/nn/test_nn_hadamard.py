"""Recipe.wgrad_transform and Recipe.quantize_wgrad: the wgrad GEMM's operands transformed by
the random Hadamard transform or left in high precision; serialisation."""

import pytest
import torch
from torch import nn

import lowbit.nn as lnn
from lowbit import quantize
from lowbit.nn import Recipe, Role, WgradTransform
from lowbit.nn.rng import derive_seed, stable_key
from lowbit.ops.hadamard import hadamard, random_signs

FP32 = dict(input="fp32", weight="fp32", grad_output="fp32")


def _signs(seed):
    return random_signs(derive_seed(seed, stable_key("", "hadamard", "wgrad"), 0), 16)


def _pad16(t):
    extra = -t.shape[0] % 16
    return torch.cat([t, t.new_zeros(extra, *t.shape[1:])]) if extra else t


def _linear_grads(recipe, x, g, seed=5):
    torch.manual_seed(1)
    m = nn.Linear(x.shape[-1], g.shape[-1])
    if recipe is not None:
        lnn.convert(m, recipe, seed=seed)
    xr = x.clone().requires_grad_()
    m(xr).backward(g)
    return xr.grad, m.weight.grad, m.bias.grad


@pytest.mark.parametrize("rows", [32, 20])  # 20: zero-padded to 32
def test_linear_wgrad_with_transform_equals_plain_wgrad(rows):
    x, g = torch.randn(rows, 24), torch.randn(rows, 8)
    dx0, dw0, db0 = _linear_grads(None, x, g)
    dx, dw, db = _linear_grads(Recipe(**FP32, wgrad_transform="hadamard"), x, g)
    assert torch.equal(dx, dx0) and torch.equal(db, db0)  # dgrad and bias untouched
    torch.testing.assert_close(dw, dw0, rtol=1e-5, atol=1e-5)
    # exactly the product of the transformed, padded operands with the run's signs
    s = _signs(5)
    expected = hadamard(_pad16(g), 0, signs=s).t().mm(hadamard(_pad16(x), 0, signs=s))
    assert torch.equal(dw, expected)


def test_conv_wgrad_with_transform_equals_plain_wgrad():
    x, w = torch.randn(6, 3, 5, 5), torch.randn(4, 3, 3, 3)

    def grads(recipe):
        torch.manual_seed(0)
        m = nn.Conv2d(3, 4, 3, padding=1)
        if recipe is not None:
            lnn.convert(m, recipe)
        with torch.no_grad():
            m.weight.copy_(w)
        m(x).square().sum().backward()
        return m.weight.grad, m.bias.grad

    dw0, db0 = grads(None)
    dw, db = grads(Recipe(**FP32, wgrad_transform="hadamard"))
    torch.testing.assert_close(dw, dw0, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(db, db0, rtol=0, atol=0)


@pytest.mark.parametrize("b_shape", [(6, 5), (2, 6, 5)])  # 2-D: rows folded; 3-D: axis -2
def test_matmul_wgrad_with_transform(b_shape):
    a = torch.randn(2, 10, 6)
    b0 = torch.randn(*b_shape, requires_grad=True)
    (a @ b0).sum().backward()
    recipe = Recipe(**FP32, wgrad_transform={"kind": "hadamard", "block": 8})
    b1 = b0.detach().clone().requires_grad_()
    lnn.functional.matmul(a, b1, recipe=recipe, seed=0).sum().backward()
    torch.testing.assert_close(b1.grad, b0.grad, rtol=1e-5, atol=1e-5)


def test_transform_feeds_the_quantizers_padded_operands():
    recipe = Recipe(input="nvfp4", weight="nvfp4", grad_output=Role("nvfp4", rounding="stochastic"),
                    wgrad_transform="hadamard")
    m = lnn.convert(nn.Linear(32, 16), recipe)
    with lnn.trace() as events:
        m(torch.randn(20, 32)).sum().backward()
    shapes = {(e.role, e.gemm, e.shape) for e in events}
    assert ("input", "wgrad", (32, 32)) in shapes  # x and g zero-padded to 32 rows
    assert ("grad_output", "wgrad", (32, 16)) in shapes
    assert ("grad_output", "wgrad", (20, 16)) in shapes  # the bias gradient's, untransformed
    assert ("input", "forward", (20, 32)) in shapes


def test_high_precision_wgrad():
    recipe = Recipe(input="e4m3fn", weight="e4m3fn", grad_output="e5m2", quantize_wgrad=False)
    x, g = torch.randn(12, 8), torch.randn(12, 4)
    m = lnn.convert(nn.Linear(8, 4), recipe)
    xr = x.clone().requires_grad_()
    with lnn.trace() as events:
        m(xr).backward(g)
    assert {(e.role, e.gemm) for e in events if e.gemm == "wgrad"} == set()
    assert torch.equal(m.weight.grad, g.t().mm(x))  # the unquantized operands
    assert torch.equal(m.bias.grad, g.sum(0))
    expected_dx = quantize(g, "e5m2").mm(quantize(m.weight.detach(), "e4m3fn"))
    assert torch.equal(xr.grad, expected_dx)  # dgrad still quantized


def test_recipe_fields_round_trip_and_validate():
    r = Recipe(input="nvfp4", wgrad_transform="hadamard", quantize_wgrad=False,
               overrides={"fc": {"wgrad_transform": None, "quantize_wgrad": True},
                          "conv": {"wgrad_transform": {"block": 32}}})
    assert r.wgrad_transform == WgradTransform("hadamard", 16)
    assert Recipe.from_toml(r.to_toml()) == r
    assert Recipe.from_json(r.to_json()) == r
    assert r.to_dict()["wgrad_transform"] == "hadamard"
    assert r.to_dict()["overrides"]["conv"] == {"wgrad_transform": {"kind": "hadamard",
                                                                    "block": 32}}
    assert "quantize_wgrad" not in Recipe().to_dict()
    with pytest.raises(ValueError, match="'hadamard'"):
        Recipe(wgrad_transform="fft")
    with pytest.raises(ValueError, match="power of two"):
        Recipe(wgrad_transform={"block": 12})
    with pytest.raises(ValueError, match="unknown fields"):
        Recipe(wgrad_transform={"size": 16})
    with pytest.raises(TypeError, match="quantize_wgrad"):
        Recipe(quantize_wgrad="no")
