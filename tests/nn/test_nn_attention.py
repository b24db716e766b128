"""Attention: the math path against its formula, against torch's fused attention and
nn.MultiheadAttention, and quantized operands."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
from _nn_oracles import FP32_EVERYWHERE, assert_same, converted, q


def _formula(qq, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(qq.shape[-1]) if scale is None else scale
    s = (qq @ k.transpose(-2, -1)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    return torch.softmax(s, -1) @ v


def _qkv(seed=0, b=2, h=3, lq=5, lk=7, d=8):
    torch.manual_seed(seed)
    return [torch.randn(b, h, n, d, requires_grad=True) for n in (lq, lk, lk)]


MASKS = {
    "none": lambda lq, lk: None,
    "bool": lambda lq, lk: torch.rand(lq, lk) > 0.3,
    "float": lambda lq, lk: torch.randn(lq, lk),
}


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_fp32_attention_equals_its_formula_exactly_and_torch_closely(mask):
    qq, k, v = _qkv()
    m = MASKS[mask](5, 7)
    if m is not None and m.dtype == torch.bool:
        m[:, 0] = True  # every query attends somewhere
    attn = converted(lnn.ScaledDotProductAttention(), FP32_EVERYWHERE)
    out = attn(qq, k, v, attn_mask=m, scale=0.3)
    g = torch.randn_like(out)
    got = [out.detach()] + list(torch.autograd.grad(out, (qq, k, v), g))
    want_out = _formula(qq, k, v, m, 0.3)
    want = [want_out.detach()] + list(torch.autograd.grad(want_out, (qq, k, v), g))
    assert_same(got, want)
    fused = F.scaled_dot_product_attention(qq, k, v, attn_mask=m, scale=0.3)
    torch.testing.assert_close(got[0], fused.detach(), rtol=1e-5, atol=1e-6)


def test_causal_attention_matches_torch():
    qq, k, v = _qkv(lq=6, lk=6)
    attn = converted(lnn.ScaledDotProductAttention(), FP32_EVERYWHERE)
    got = attn(qq, k, v, is_causal=True)
    want = F.scaled_dot_product_attention(qq, k, v, is_causal=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="either"):
        attn(qq, k, v, attn_mask=torch.ones(6, 6, dtype=torch.bool), is_causal=True)


def test_quantized_attention_operands_follow_the_formula():
    qq, k, v = _qkv(seed=1)
    r = lnn.Recipe(input="e4m3fn", weight="e4m3fn", output="bf16")
    got = converted(lnn.ScaledDotProductAttention(), r)(qq, k, v)
    s = q(q(qq.detach(), "e4m3fn") @ q(k.detach().transpose(-2, -1), "e4m3fn"), "bf16")
    p = torch.softmax(s / math.sqrt(8), -1)
    assert_same(got.detach(), q(q(p, "e4m3fn") @ q(v.detach(), "e4m3fn"), "bf16"))


def test_attention_sites_are_traced_separately():
    qq, k, v = _qkv(seed=2)
    attn = converted(lnn.ScaledDotProductAttention(), lnn.Recipe(input="mxfp8_e4m3",
                                                                  grad_output="e5m2"))
    with lnn.trace() as events:
        attn(qq, k, v).sum().backward()
    assert {(e.module, e.role, e.gemm) for e in events} == {
        ("qk", "input", "forward"), ("qk", "input", "wgrad"), ("qk", "grad_output", "backward"),
        ("pv", "input", "forward"), ("pv", "input", "wgrad"), ("pv", "grad_output", "backward")}


MHA_CASES = {
    "self-batch-first": dict(batch_first=True),
    "seq-first-kdim": dict(kdim=6, vdim=5),
    "no-bias": dict(bias=False, batch_first=True),
}


@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_multihead_attention_matches_torch(case):
    torch.manual_seed(3)
    kw = MHA_CASES[case]
    module = nn.MultiheadAttention(8, 2, **kw).eval()
    n, lq, lk = 3, 4, 6
    first = (lambda a, b: (a, b)) if kw.get("batch_first") else (lambda a, b: (b, a))
    query = torch.randn(*first(n, lq), 8)
    key = torch.randn(*first(n, lk), kw.get("kdim", 8))
    value = torch.randn(*first(n, lk), kw.get("vdim", 8))
    pad = torch.zeros(n, lk, dtype=torch.bool)
    pad[0, -2:] = True
    attn_mask = torch.rand(lq, lk) > 0.8
    attn_mask[:, 0] = False
    q_module = converted(module, FP32_EVERYWHERE)
    for args in (dict(), dict(key_padding_mask=pad, attn_mask=attn_mask),
                 dict(need_weights=True, average_attn_weights=False)):
        want = module(query, key, value, **args)
        got = q_module(query, key, value, **args)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)


def test_multihead_attention_unbatched_and_causal_and_projections_traced():
    torch.manual_seed(4)
    module = nn.MultiheadAttention(8, 2)
    x = torch.randn(5, 8)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    q_module = converted(module, lnn.Recipe(weight="bf16"))
    want = module(x, x, x, attn_mask=causal)[0]
    with lnn.trace() as events:
        got = q_module(x, x, x, is_causal=True, need_weights=False)
    assert got[1] is None
    torch.testing.assert_close(got[0], want, rtol=1e-2, atol=1e-2)
    assert {e.module for e in events} == {"q_proj", "k_proj", "v_proj", "out_proj", "qk", "pv"}


def test_multihead_attention_rejects_bias_kv():
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        converted(nn.MultiheadAttention(8, 2, add_bias_kv=True), FP32_EVERYWHERE)
