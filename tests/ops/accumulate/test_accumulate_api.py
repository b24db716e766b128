"""The public accumulation ops: shapes and broadcasting as torch's, options and ``spec=``,
seeds, dtypes, the bias and convolution GEMMs against the exact oracle, straight-through
gradients (exact where fp32 sums are exact, and equal to the documented backward GEMMs under
their own specs and seeds), the tensor-core-style fp32 chunks, and bad input."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

import _accum_oracle as oracle
from lowbit.ops.accumulate import (
    Accumulate, bmm, conv2d, conv2d_forward, conv2d_input_grad, conv2d_weight_grad, gemm, linear,
    matmul,
)

SEED = 0x5EED
BF16_SR = Accumulate(acc="bf16", mul="e5m2", rounding="stochastic")


def _rand(*shape, seed=0, integers=False):
    g = torch.Generator().manual_seed(seed)
    if integers:
        return torch.randint(-4, 5, shape, generator=g).float()
    return torch.randn(shape, generator=g)


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.shape == y.shape and bool(((x.view(torch.int32) == y.view(torch.int32))
                                        | (x.isnan() & y.isnan())).all())


# --- shapes and options ---------------------------------------------------------------------
@pytest.mark.parametrize("shapes", [((5,), (5, 3)), ((2, 5), (5,)), ((5,), (5,)),
                                    ((3, 1, 4, 5), (2, 5, 6)), ((4, 5), (2, 5, 3))])
def test_matmul_shapes_and_broadcasting(shapes) -> None:
    a, b = _rand(*shapes[0], seed=1), _rand(*shapes[1], seed=2)
    out = matmul(a, b, acc="bf16")
    assert out.shape == torch.matmul(a, b).shape and out.dtype == torch.float32
    if a.dim() >= 2 and b.dim() >= 2:  # each output is the GEMM of its own batch element
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        ea = a.expand(*batch, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
        eb = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
        assert _same(out.reshape(-1, *out.shape[-2:]), gemm(ea, eb, Accumulate(acc="bf16")))


def test_options_equal_spec() -> None:
    a, b = _rand(3, 9, seed=3), _rand(9, 4, seed=4)
    options = dict(acc="e6m9", mul="e4m3", rounding="toward_zero", chunk=4, chunk_acc="fp16")
    assert _same(matmul(a, b, **options), matmul(a, b, spec=Accumulate(**options)))
    assert _same(bmm(a[None], b[None], spec=BF16_SR, seed=1)[0],
                 matmul(a, b, spec=BF16_SR, seed=1))


def test_low_precision_inputs_are_exact() -> None:
    a, b = _rand(4, 8, seed=5).bfloat16(), _rand(8, 3, seed=6).half()
    assert _same(matmul(a, b, acc="fp16"), matmul(a.float(), b.float(), acc="fp16"))


def test_backend_names() -> None:
    a, b = _rand(2, 6, seed=7), _rand(6, 2, seed=8)
    assert _same(matmul(a, b, spec=BF16_SR, seed=3, backend="cpu"),
                 matmul(a, b, spec=BF16_SR, seed=3, backend="reference"))


# --- seeds ----------------------------------------------------------------------------------
def test_seeds() -> None:
    a, b = _rand(8, 16, seed=9), _rand(16, 8, seed=10)
    first = matmul(a, b, spec=BF16_SR, seed=SEED)
    assert _same(first, matmul(a, b, spec=BF16_SR, seed=SEED))
    assert not _same(first, matmul(a, b, spec=BF16_SR, seed=SEED + 1))
    torch.manual_seed(1)
    unseeded = matmul(a, b, spec=BF16_SR)
    torch.manual_seed(1)
    assert _same(unseeded, matmul(a, b, spec=BF16_SR))


def test_stochastic_is_unbiased_on_a_tie() -> None:
    """s = 1 + 2^-8 is a bf16 midpoint: about half of the outputs round up (binomial, 4096
    trials: 6 standard deviations is 0.047)."""
    a = torch.tensor([[1.0, 2.0**-8]]).expand(4096, 2).contiguous()
    b = torch.tensor([[1.0], [1.0]])
    out = matmul(a, b, acc="bf16", rounding="stochastic", seed=SEED)
    assert set(out.unique().tolist()) == {1.0, 1 + 2.0**-7}
    assert abs(float((out > 1).float().mean()) - 0.5) < 0.047


# --- bias and convolution against the oracle ------------------------------------------------
def _oracle_dot(row, col, spec: oracle.Acc, seed, base) -> oracle.Val:
    return oracle.dot(row, col, spec, lambda k, slot: None if seed is None else
                      oracle.stream_word(seed, base + k, slot))


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_linear_bias_is_one_more_rounding(mode: str) -> None:
    x, w, bias = _rand(2, 3, 5, seed=11), _rand(4, 5, seed=12), _rand(4, seed=13) * 8
    seed = SEED if mode == "stochastic" else None
    out = linear(x, w, bias, acc="e5m2", rounding=mode, seed=seed)
    acc = oracle.Acc(acc=oracle.spec_of(Accumulate(acc="e5m2").acc), acc_mode=mode)
    rows = x.reshape(6, 5).tolist()
    for i in range(6):
        for j in range(4):
            base = (i * 4 + j) * 5
            s = _oracle_dot(rows[i], w[j].tolist(), acc, seed, base)
            word = None if seed is None else oracle.stream_word(seed, base + 4, 6)
            want = oracle.round_val(oracle.add(s, oracle.Val.of(bias[j].item())), acc.acc, mode,
                                    word).to_float()
            got = out.reshape(6, 4)[i, j].item()
            assert got == want or (got != got and want != want), (i, j, got, want)


@pytest.mark.parametrize("geometry", [dict(stride=1, padding=0, dilation=1, groups=1),
                                      dict(stride=2, padding=1, dilation=1, groups=2),
                                      dict(stride=1, padding=2, dilation=2, groups=1)])
def test_conv2d_forward_is_the_patch_gemm(geometry) -> None:
    """Each output is the oracle's accumulation of a weight row with an unfolded patch (K in
    (c, kh, kw) order), then the bias rounding; stochastic words of batch (n, g)."""
    x, w, bias = _rand(2, 4, 6, 5, seed=14), _rand(4, 4 // geometry["groups"], 3, 2, seed=15), \
        _rand(4, seed=16)
    spec = Accumulate(acc="bf16", mul="e4m3", rounding="stochastic")
    out = conv2d_forward(x, w, spec, **geometry, seed=SEED, bias=bias)
    groups = geometry["groups"]
    cols = F.unfold(x, (3, 2), dilation=geometry["dilation"], padding=geometry["padding"],
                    stride=geometry["stride"])
    n, kdim, length = cols.shape[0], cols.shape[1] // groups, cols.shape[2]
    og = 4 // groups
    acc = oracle.Acc(acc=oracle.spec_of(spec.acc), acc_mode="stochastic",
                     mul=oracle.spec_of(spec.mul), mul_mode="stochastic")
    flat = out.reshape(n, 4, length)
    for bi in range(n):
        for g in range(groups):
            for o in range(og):
                for p in (0, length // 2, length - 1):
                    base = (((bi * groups + g) * og + o) * length + p) * kdim
                    row = w[g * og + o].reshape(-1).tolist()
                    col = cols[bi, g * kdim:(g + 1) * kdim, p].tolist()
                    s = _oracle_dot(row, col, acc, SEED, base)
                    word = oracle.stream_word(SEED, base + kdim - 1, 6)
                    want = oracle.round_val(oracle.add(s, oracle.Val.of(bias[g * og + o].item())),
                                            acc.acc, "stochastic", word).to_float()
                    assert flat[bi, g * og + o, p].item() == want


# --- gradients ------------------------------------------------------------------------------
def _grads(fn, *tensors, grad_seed=20):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    g = _rand(*out.shape, seed=grad_seed, integers=True)
    out.backward(g)
    return out, [t.grad for t in leaves], g


@pytest.mark.parametrize("shapes", [((3, 1, 4, 5), (2, 5, 6)), ((4, 5), (2, 5, 3)), ((5,), (5, 3))])
def test_matmul_gradients_exact_in_fp32(shapes) -> None:
    """Integer data: every fp32 sum is exact, so the simulated gradients equal torch's."""
    a, b = _rand(*shapes[0], seed=21, integers=True), _rand(*shapes[1], seed=22, integers=True)
    out, (ga, gb), g = _grads(lambda x, y: matmul(x, y, acc="fp32"), a, b)
    ref, (ra, rb), _ = _grads(torch.matmul, a, b)
    assert torch.equal(out, ref) and torch.equal(ga, ra) and torch.equal(gb, rb)


def test_backward_gemms_use_their_specs_and_seeds() -> None:
    a, b = _rand(3, 4, 5, seed=23), _rand(5, 6, seed=24)
    dgrad = Accumulate(acc="e5m2", rounding="stochastic")
    wgrad = Accumulate(acc="fp16", chunk=4, rounding="stochastic")
    out, (ga, gb), g = _grads(lambda x, y: matmul(x, y, acc="bf16", dgrad=dgrad, wgrad=wgrad,
                                                  seed=SEED), a, b)
    assert _same(ga, gemm(g, b.t(), dgrad, seed=SEED + 1))
    # b was broadcast over the batch: one GEMM whose K runs over (batch, m) row-major.
    assert _same(gb, gemm(a.reshape(12, 5).t(), g.reshape(12, 6), wgrad, seed=SEED + 2))
    _, (pa, pb), _ = _grads(lambda x, y: matmul(x, y, acc="bf16", dgrad=None, wgrad=None), a, b)
    assert torch.allclose(pa, g @ b.t()) and torch.allclose(pb, (a.transpose(1, 2) @ g).sum(0))


def test_linear_gradients() -> None:
    x, w, bias = _rand(2, 3, 5, seed=25), _rand(4, 5, seed=26), _rand(4, seed=27)
    spec = Accumulate(acc="e6m9", mul="bf16", rounding="stochastic")
    _, (gx, gw, gbias), g = _grads(lambda *t: linear(*t, spec=spec, seed=SEED), x, w, bias)
    rows = g.reshape(6, 4)
    assert _same(gx.reshape(6, 5), gemm(rows, w, spec, seed=SEED + 1))
    assert _same(gw, gemm(rows.t(), x.reshape(6, 5), spec, seed=SEED + 2))
    assert _same(gbias, gemm(torch.ones(1, 6), rows, spec, seed=SEED + 3).reshape(4))
    xi, wi, bi = (_rand(*t.shape, seed=30 + i, integers=True) for i, t in enumerate((x, w, bias)))
    out, grads, _ = _grads(lambda *t: linear(*t, acc="fp32"), xi, wi, bi)
    ref, refs, _ = _grads(F.linear, xi, wi, bi)
    assert torch.equal(out, ref) and all(torch.equal(p, q) for p, q in zip(grads, refs))


@pytest.mark.parametrize("geometry", [(1, 0, 1, 1, 7, 6), (2, 1, 1, 1, 7, 6), (1, 2, 2, 1, 9, 8),
                                      (2, 1, 1, 2, 8, 7), (3, 2, 2, 1, 11, 9)])
def test_conv2d_gradients_exact_in_fp32(geometry) -> None:
    stride, padding, dilation, groups, h, w_ = geometry
    x = _rand(2, 4, h, w_, seed=40, integers=True)
    w = _rand(6, 4 // groups, 3, 2, seed=41, integers=True)
    bias = _rand(6, seed=42, integers=True)
    args = (stride, padding, dilation, groups)
    out, grads, _ = _grads(lambda *t: conv2d(*t, *args, acc="fp32"), x, w, bias)
    ref, refs, _ = _grads(lambda *t: F.conv2d(*t, *args), x, w, bias)
    assert torch.equal(out, ref) and all(torch.equal(p, q) for p, q in zip(grads, refs))


def test_conv2d_backward_gemms() -> None:
    """dgrad is the forward convolution of the stride-dilated, padded grad_out with the flipped,
    channel-swapped kernel; wgrad the GEMM over (n, oh, ow); both under their own specs."""
    x, w = _rand(2, 2, 7, 6, seed=43), _rand(3, 2, 3, 3, seed=44)
    dgrad = Accumulate(acc="e5m2", rounding="stochastic")
    wgrad = Accumulate(acc="bf16", chunk=5)
    _, (gx, gw), g = _grads(lambda *t: conv2d(*t, None, 2, 1, dgrad=dgrad, wgrad=wgrad,
                                              acc="bf16", seed=SEED), x, w)
    sparse = torch.zeros(2, 3, 7, 5)
    sparse[:, :, ::2, ::2] = g  # OH, OW = 4, 3 at stride 2
    # before = dilation·(k-1) - padding = 1; after = size + padding - 1 - (out-1)·stride
    padded = F.pad(sparse, (1, 2, 1, 1))
    flipped = w.transpose(0, 1).flip(-1, -2)
    assert _same(gx, conv2d_forward(padded, flipped, dgrad, seed=SEED + 1))
    assert _same(gx, conv2d_input_grad(g, w, x.shape, dgrad, stride=2, padding=1,
                                       seed=SEED + 1))
    cols = F.unfold(x, (3, 3), padding=1, stride=2)  # (2, 18, 12)
    want = gemm(g.reshape(2, 3, 12).permute(1, 0, 2).reshape(3, 24),
                cols.permute(0, 2, 1).reshape(24, 18), wgrad).reshape(w.shape)
    assert _same(gw, want)
    assert _same(gw, conv2d_weight_grad(x, g, w.shape, wgrad, stride=2, padding=1))


def test_only_requested_gradients() -> None:
    a = _rand(3, 4, seed=45).requires_grad_()
    b = _rand(4, 2, seed=46)
    matmul(a, b, acc="bf16").sum().backward()
    assert a.grad is not None and b.grad is None


# --- fp32 chunks (reference backend) ----------------------------------------------------------
def test_fp32_chunks() -> None:
    a, b = _rand(1, 6, 50, seed=47), _rand(1, 50, 5, seed=48)
    got = gemm(a, b, Accumulate(acc="fp32", chunk=16, chunk_acc="fp32"))
    bound = 1.01 * (15 + 4) * 2.0**-23 * (a.double().abs() @ b.double().abs())
    assert bool(((got.double() - a.double() @ b.double()).abs() <= bound).all())
    ai, bi = _rand(1, 6, 50, seed=49, integers=True), _rand(1, 50, 5, seed=50, integers=True)
    exact_chunks = Accumulate(acc="e5m2", chunk=16, chunk_acc="fp32")
    sequential = Accumulate(acc="e5m2", chunk=16, chunk_acc=Accumulate(acc="fp32").acc)
    assert _same(gemm(ai, bi, exact_chunks), gemm(ai, bi, sequential))


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda a, b: matmul(a, b), TypeError, "acc="),
    (lambda a, b: matmul(a, b, acc="bf16", spec=Accumulate(acc="bf16")), ValueError, "not both"),
    (lambda a, b: matmul(a, b, spec="bf16"), TypeError, "Accumulate"),
    (lambda a, b: matmul(a, b, acc="bf16", mul="e4m3", fma=True), ValueError, "fma"),
    (lambda a, b: matmul(a, b, acc="mxfp8_e4m3"), ValueError, "acc must be"),
    (lambda a, b: matmul(a, b, acc="fixed<8,4,noclamp>"), ValueError, "clamp"),
    (lambda a, b: matmul(a, b, acc="bf16", rounding="sideways"), ValueError, "rounding"),
    (lambda a, b: matmul(a.double(), b, acc="bf16"), ValueError, "float64"),
    (lambda a, b: matmul(a.int(), b, acc="bf16"), TypeError, "float32"),
    (lambda a, b: matmul([1.0], b, acc="bf16"), TypeError, "Tensor"),
    (lambda a, b: matmul(a, b.t(), acc="bf16"), ValueError, "inner sizes"),
    (lambda a, b: matmul(a, b, acc="bf16", seed=1), ValueError, "seed"),
    (lambda a, b: matmul(a, b, acc="bf16", rounding="stochastic", seed=-1), ValueError, "seed"),
    (lambda a, b: matmul(a, b, acc="bf16", dgrad="fp32"), ValueError, "dgrad"),
    (lambda a, b: matmul(a, b, acc="bf16", wgrad=3), TypeError, "wgrad"),
    (lambda a, b: matmul(a, b, acc="bf16", backend="gpu"), ValueError, "backend"),
    (lambda a, b: matmul(a, b, acc="bf16", chunk=0), ValueError, "chunk"),
    (lambda a, b: bmm(a, b, acc="bf16"), ValueError, "3-D"),
    (lambda a, b: gemm(a[None].expand(2, 3, 4), b[None].expand(3, 4, 2), Accumulate(acc="bf16")),
     ValueError, "broadcast"),
    (lambda a, b: gemm(a, b, Accumulate(acc="bf16"), bias=torch.zeros(3)), ValueError, "bias"),
    (lambda a, b: linear(a, b, acc="bf16"), ValueError, "weight"),
])
def test_bad_input(call, error, match) -> None:
    a, b = _rand(3, 4, seed=51), _rand(4, 2, seed=52)
    with pytest.raises(error, match=match):
        call(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(stride=0), "stride"), (dict(padding="same"), "padding"), (dict(groups=3), "groups"),
    (dict(dilation=(1,)), "dilation"), (dict(padding=-1), "padding"),
])
def test_conv2d_bad_input(kwargs, match) -> None:
    x, w = _rand(1, 2, 5, 5, seed=53), _rand(2, 2, 3, 3, seed=54)
    with pytest.raises(ValueError, match=match):
        conv2d(x, w, acc="bf16", **kwargs)


def test_spec_round_trip() -> None:
    spec = Accumulate(acc="e6m9", mul="e4m3fn", chunk=64, chunk_acc="fp32",
                      rounding="stochastic")
    assert Accumulate.from_dict(spec.to_dict()) == spec
    assert Fraction(1) == 1  # fractions import used by the oracle helpers
