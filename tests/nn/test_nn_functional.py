"""lowbit.nn.functional: the same math as the modules, without state."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
import lowbit.nn.functional as LF
from _nn_oracles import assert_same, converted, run

R = lnn.Recipe(input="e4m3fn", weight="mxfp8_e4m3", bias="bf16", output="bf16",
               grad_output="e5m2", grad_input="bf16", grad_weight="bf16")


def _fn_run(fn, inputs, grad):
    ins = [i.detach().clone().requires_grad_() for i in inputs]
    y = fn(*ins)
    y.backward(grad)
    return y.detach(), [i.grad for i in ins]


def test_linear_matches_the_module():
    torch.manual_seed(19)
    module = nn.Linear(40, 6)
    x, g = torch.randn(3, 40), torch.randn(3, 6)
    y, grads = run(converted(module, R), [x], g)
    w, b = module.weight.detach(), module.bias.detach()
    assert_same(_fn_run(lambda x, w, b: LF.linear(x, w, b, recipe=R), [x, w, b], g),
                (y, grads))


CONVS = {
    "conv1d": (nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 9),
               lambda m: dict(stride=2, padding=1), LF.conv1d),
    "conv2d": (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), (2, 4, 6, 5),
               lambda m: dict(padding=2, dilation=2, groups=2), LF.conv2d),
    "conv3d": (nn.Conv3d(2, 3, 3, padding=1), (1, 2, 3, 4, 3), lambda m: dict(padding=1),
               LF.conv3d),
    "conv_transpose2d": (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
                         (2, 4, 3, 3), lambda m: dict(stride=2, padding=1, output_padding=1),
                         LF.conv_transpose2d),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_convolutions_match_the_modules(case):
    torch.manual_seed(20)
    module, shape, kwargs, fn = CONVS[case]
    x = torch.randn(*shape)
    g = torch.randn_like(module(x))
    y, grads = run(converted(module, R), [x], g)
    w, b = module.weight.detach(), module.bias.detach()
    got = _fn_run(lambda x, w, b: fn(x, w, b, **kwargs(module), recipe=R), [x, w, b], g)
    assert_same(got, (y, grads))


def test_matmul_and_bmm_match_the_module():
    a, b, g = torch.randn(2, 3, 40), torch.randn(2, 40, 5), torch.randn(2, 3, 5)
    want = run(converted(lnn.MatMul(), R), [a, b], g)
    assert_same(_fn_run(lambda a, b: LF.matmul(a, b, recipe=R), [a, b], g), want)
    assert_same(_fn_run(lambda a, b: LF.bmm(a, b, recipe=R), [a, b], g), want)
    with pytest.raises(ValueError, match="3-D"):
        LF.bmm(a[0], b[0], recipe=R)
    with pytest.raises(ValueError, match=">= 2 dims"):
        LF.matmul(a[0, 0], b[0], recipe=R)


def test_attention_without_formats_is_torchs_and_with_formats_the_module():
    q, k, v = (torch.randn(2, 2, 4, 8) for _ in range(3))
    assert_same(LF.scaled_dot_product_attention(q, k, v, is_causal=True, recipe=lnn.Recipe()),
                F.scaled_dot_product_attention(q, k, v, is_causal=True))
    r = lnn.Recipe(input="e4m3fn", weight="e4m3fn")
    module = converted(lnn.ScaledDotProductAttention(), r)
    assert_same(LF.scaled_dot_product_attention(q, k, v, is_causal=True, recipe=r),
                module(q, k, v, is_causal=True))


def test_stochastic_calls_are_reproducible_from_the_seed():
    r = lnn.Recipe(weight=lnn.Role("e4m3fn", rounding="stochastic"))
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    assert_same(LF.linear(x, w, recipe=r, seed=5), LF.linear(x, w, recipe=r, seed=5))
    assert not torch.equal(LF.linear(x, w, recipe=r, seed=5), LF.linear(x, w, recipe=r, seed=6))
    torch.manual_seed(1)
    first = LF.linear(x, w, recipe=r)
    torch.manual_seed(1)
    assert_same(LF.linear(x, w, recipe=r), first)


@pytest.mark.parametrize("recipe,match", [
    (lnn.Recipe(weight=lnn.Role("e4m3fn", scaling=lnn.Scaling(history=4))), "delayed"),
    (lnn.Recipe(overrides={"x": None}), "overrides"),
])
def test_stateful_recipes_need_modules(recipe, match):
    with pytest.raises(ValueError, match=match):
        LF.linear(torch.randn(2, 3), torch.randn(4, 3), recipe=recipe)


def test_functional_convolutions_take_numeric_padding():
    with pytest.raises(ValueError, match="numeric padding"):
        LF.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3), padding="same", recipe=R)
    with pytest.raises(ValueError, match="stride"):
        LF.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3), stride=(1, 2, 3), recipe=R)
