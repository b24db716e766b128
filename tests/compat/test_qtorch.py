"""lowbit.compat.qtorch: QPyTorch 0.3's quantization API on lowbit.

Three groups: QPyTorch's own invariants (its test/ suite, made exact, seeded and CPU-only),
the documented differences from QPyTorch (each pinned elementwise), and the API surface
(signatures, repr, lowbit_format, validation, pickling).  A slow test compares against the
real qtorch where it is installed.
"""

import inspect
import io
import math
import pickle
import warnings

import pytest
import torch

import lowbit as lb
import lowbit.compat.qtorch as qtorch
from lowbit.compat.qtorch import BlockFloatingPoint, FixedPoint, FloatingPoint, Number
from lowbit.compat.qtorch.quant import (
    Quantizer, block_quantize, fixed_point_quantize, float_quantize, quantizer,
)

ROUNDINGS = ["nearest", "stochastic"]


def bits(t):
    return t.float().view(torch.int32)


def assert_bitwise(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(bits(a), bits(b)), (a, b)


# ---------------------------------------------------------------------------------------------
# QPyTorch's invariants (research note §4)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_fixed_clamp_range(rounding):
    # test_clamp.py: FixedPoint(5, 4) spans [-1, 0.9375]; clamp pins both ends exactly.
    x = torch.linspace(-2, 2, steps=100)
    y = fixed_point_quantize(x, 5, 4, clamp=True, rounding=rounding)
    assert y.max().item() == 0.9375 and y.min().item() == -1.0
    y = fixed_point_quantize(x, 5, 4, clamp=False, rounding=rounding)
    assert y.max().item() > 0.9375 and y.min().item() < -1.0


def qpytorch_float_values(exp, man):
    """QPyTorch's value set: exponent code 0 subnormal, codes 1..2^exp-1 all finite."""
    emin = 2 - 2 ** (exp - 1)
    mags = {2.0**emin * m * 2.0**-man for m in range(2**man)}
    for code in range(1, 2**exp):
        mags |= {2.0 ** (code + emin - 1) * (1 + m * 2.0**-man) for m in range(2**man)}
    return sorted({s * v for v in mags for s in (1, -1)})


@pytest.mark.parametrize("exp,man", [(2, 2), (2, 3), (3, 2)])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_float_value_set_enumeration(exp, man, rounding):
    # test_clamp.py: sweeping -30..30 in steps of 0.01 (past the max, so saturation shows)
    # must produce exactly the format's value set, for both roundings.
    x = torch.arange(-3000, 3001, dtype=torch.float32) / 100
    y = float_quantize(x, exp, man, rounding=rounding)
    assert torch.unique(y).tolist() == qpytorch_float_values(exp, man)
    assert torch.equal(torch.unique(lb.quantize(x, FloatingPoint(exp, man).lowbit_format)),
                       torch.tensor(qpytorch_float_values(exp, man)))


def test_backward_fixed():
    # test_backward.py: the all-ones gradient quantized to FixedPoint(5, 4) saturates at t_max.
    number = FixedPoint(wl=5, fl=4)
    a = torch.linspace(-1, 0.9375, steps=100, requires_grad=True)
    quant = quantizer(forward_number=number, forward_rounding="nearest",
                      backward_number=number, backward_rounding="nearest")
    quant(a).sum().backward()
    assert torch.equal(a.grad, torch.full_like(a, 0.9375))


def test_backward_fixed_clamping_grad_zero():
    number = FixedPoint(wl=5, fl=4)
    a = torch.tensor([-1, -0.6, 0, 1], requires_grad=True)
    quant = quantizer(forward_number=number, forward_rounding="nearest",
                      backward_number=number, backward_rounding="nearest",
                      clamping_grad_zero=True)
    y = quant(a)
    y.sum().backward()
    assert y.tolist() == [-1.0, -0.625, 0.0, 0.9375]
    # 1 was clamped to 0.9375; -1 is representable, so its gradient survives.
    assert a.grad.tolist() == [0.9375, 0.9375, 0.9375, 0.0]


def test_clamping_grad_zero_matches_wage_oracle():
    # test_backward.py's hand-written WAGE oracle for FixedPoint(4, 3, symmetric): forward
    # Q(x) = round(8x)/8 clamped to ±7/8; backward Q(clamp(g)) zeroed where Q(x) was clamped.
    number = FixedPoint(wl=4, fl=3, clamp=True, symmetric=True)
    quant = quantizer(forward_number=number, forward_rounding="nearest",
                      backward_number=number, backward_rounding="nearest",
                      clamping_grad_zero=True)
    z = torch.linspace(-2, 2, steps=10, requires_grad=True)
    y = quant(z)
    y.sum().backward()
    x = z.detach()
    q = torch.round(x * 8) / 8
    mask = (q > 0.875) | (q < -0.875)
    assert torch.equal(y.detach(), q.clamp(-0.875, 0.875))
    oracle_grad = (torch.round(torch.ones(10).clamp(-0.875, 0.875) * 8) / 8).masked_fill(mask, 0)
    assert torch.equal(z.grad, oracle_grad)
    assert z.grad.tolist() == [0, 0, 0, 0.875, 0.875, 0.875, 0.875, 0, 0, 0]


@pytest.mark.parametrize("number", [BlockFloatingPoint(wl=5), FloatingPoint(exp=3, man=5)])
def test_backward_representable_gradient_passes(number):
    # test_backward.py: the all-ones gradient is representable, so it comes back exactly.
    a = torch.linspace(-0.9, 0.9, steps=100, requires_grad=True)
    quant = quantizer(forward_number=number, forward_rounding="nearest",
                      backward_number=number, backward_rounding="nearest")
    quant(a).sum().backward()
    assert torch.equal(a.grad, torch.ones_like(a))


def test_fixed_nearest_equals_torch_round():
    # test_random.py: FixedPoint(8, 8) without clamp is torch.round(x·256)/256 (ties to even).
    x = torch.randn(100_000)
    ties = (torch.arange(-300, 301, dtype=torch.float32) + 0.5) / 256
    x = torch.cat([x, ties])
    y = fixed_point_quantize(x, 8, 8, clamp=False, rounding="nearest")
    assert_bitwise(y, torch.round(x * 256) / 256)


@pytest.mark.parametrize("wl,fl", [(3, 2), (5, 4)])
def test_fixed_nearest_equals_block_nearest(wl, fl):
    # test_relation.py: on [-t_max, t_max] with t_max = 1 - 2^-fl the block exponent is -1,
    # so block(wl) has fixed(wl, wl-1)'s grid.
    t_max = 1 - 2.0**-fl
    x = torch.linspace(-t_max, t_max, steps=1000)
    assert_bitwise(fixed_point_quantize(x, wl, fl, rounding="nearest"),
                   block_quantize(x, wl, rounding="nearest"))


# -- unbiased stochastic rounding, with tolerances derived from the binomial spread ------------
Z = 5.0  # per-element bound in standard deviations; the seed is fixed, so this never flakes


def check_unbiased(draws, lo, hi, x, p=None):
    """``draws`` (N, *x.shape): every draw is lo or hi, and the mean is within Z standard
    deviations of the expectation lo + p·(hi - lo), p = (x - lo)/(hi - lo) unless given
    (where the format clamps the upper neighbour down to ``lo``, hi == lo)."""
    n = draws.shape[0]
    assert ((draws == lo) | (draws == hi)).all()
    lo, hi, x = lo.double(), hi.double(), x.double()
    width = hi - lo
    if p is None:
        p = torch.where(width > 0, (x - lo) / torch.where(width > 0, width, 1), 0)
    expect = lo + p * width
    sd = width * torch.sqrt(p * (1 - p) / n)
    gap = (draws.double().mean(0) - expect).abs()
    assert (gap <= Z * sd + 1e-12).all(), (gap - Z * sd).max()
    # QPyTorch's form: the mean squared gap, whose expectation is mean(width² p(1-p)/n).
    assert (gap**2).mean() <= 4 * (sd**2).mean() + 1e-24


def test_fixed_stochastic_unbiased():
    # test_stochastic.py: fixed (7, 6) on linspace(-0.9, 0.9, 100), function and quantizer.
    x = torch.linspace(-0.9, 0.9, steps=100)
    n = 1000
    lo = torch.floor(x * 64) / 64
    hi = lo + 1 / 64
    check_unbiased(fixed_point_quantize(x.expand(n, -1), 7, 6), lo, hi, x)
    quant = quantizer(forward_number=FixedPoint(7, 6))
    check_unbiased(quant(x.expand(n, -1)), lo, hi, x)


def block_oracle_grid(x, wl, dim):
    """Per element: the step 2^(floor(log2 amax) + 2 - wl) of its block and the largest
    magnitude (2^(wl-1) - 1)·step, computed independently in float64."""
    a = x.abs().double()
    if dim == -1:
        amax = a.amax()
    else:
        others = tuple(d for d in range(x.dim()) if d != dim)
        amax = a.amax(dim=others, keepdim=True) if others else a
    _, e = torch.frexp(amax)  # amax = m · 2^e with m in [0.5, 1): floor(log2 amax) = e - 1
    step = torch.ldexp(torch.ones_like(amax), e - 1 + 2 - wl).expand(x.shape)
    return step, (2 ** (wl - 1) - 1) * step


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_block_stochastic_unbiased(dim):
    # test_stochastic.py: block wl=6, dims -1/0/1 on rand(10, 10, 10).  Replicating x along a
    # new leading axis keeps every block's maximum, so one call gives n independent draws.
    x = torch.rand(10, 10, 10)
    n = 100
    draws = block_quantize(x.expand(n, -1, -1, -1), 6, dim=dim if dim == -1 else dim + 1)
    step, top = block_oracle_grid(x, 6, dim)
    x64 = x.double()
    lo = torch.floor(x64 / step) * step
    hi = torch.minimum(lo + step, top)  # the clamp at the block's top is part of the format
    assert (hi == lo).any()  # rand's largest elements lie above the top: clamped
    check_unbiased(draws, lo, hi, x, p=(x64 - lo) / step)


def test_float_stochastic_unbiased():
    # test_stochastic.py: E6M5 on rand(100).
    x = torch.rand(100)
    n = 1000
    draws = float_quantize(x.expand(n, -1), 6, 5)
    emin = 2 - 2**5
    _, e = torch.frexp(x.double())
    step = torch.ldexp(torch.ones_like(x, dtype=torch.float64), torch.clamp(e - 1, min=emin) - 5)
    lo = torch.floor(x.double() / step) * step
    check_unbiased(draws, lo, lo + step, x)


# ---------------------------------------------------------------------------------------------
# Where lowbit differs from QPyTorch (each documented in the function's docstring)
# ---------------------------------------------------------------------------------------------
def all_fp16_test_points():
    """Every finite fp16 value, every midpoint between neighbours, and the fp32 values one ulp
    either side of each midpoint, within fp16's range (|x| <= 65504)."""
    codes = torch.arange(0, 2**16, dtype=torch.int32).to(torch.int16)
    v = codes.view(torch.float16).float()
    v = torch.unique(v[torch.isfinite(v)])  # sorted; -0 and +0 merge
    mids = (v[:-1].double() + v[1:].double()).div(2).float()  # exact: 12 significant bits
    pts = torch.cat([v, mids, torch.nextafter(mids, torch.tensor(math.inf)),
                     torch.nextafter(mids, torch.tensor(-math.inf)), torch.tensor([-0.0])])
    return pts[pts.abs() <= 65504]


def test_float_e5m10_ties_to_even_equals_half():
    # QPyTorch rounds ties away from zero (661 mismatches per 1e7 randn vs .half()); lowbit
    # equals .half() at every value, midpoint and midpoint ± 1 ulp in fp16's range.
    x = all_fp16_test_points()
    assert_bitwise(float_quantize(x, 5, 10, rounding="nearest"), x.half().float())
    # The tie QPyTorch rounds up: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
    assert float_quantize(torch.tensor([1.00048828125]), 5, 10, "nearest").item() == 1.0


def test_float_e5m10_top_binade_beyond_half():
    # QPyTorch's E5M10 has every exponent code finite: max 131008, not 65504 (documented).
    x = torch.tensor([65520.0, 70000.0, 131008.0, 131040.0, 131072.0, 1e6, math.inf, -math.inf])
    y = float_quantize(x, 5, 10, rounding="nearest")
    assert y.tolist() == [65536.0, 70016.0, 131008.0, 131008.0, 131008.0, 131008.0, 131008.0,
                          -131008.0]


def test_float_exp8_overflows_like_fp32():
    # exp=8: the format's range passes fp32's, so fp32's overflow to ±Inf applies (as QPyTorch).
    x = torch.tensor([3.4e38, -3.4e38, math.inf, -math.inf, 1e38])
    y = float_quantize(x, 8, 7, rounding="nearest")
    assert y.tolist()[:4] == [math.inf, -math.inf, math.inf, -math.inf]
    assert y[4].item() == torch.tensor(1e38).bfloat16().item()
    # exp < 8 saturates instead (E4M3's max is 480 here, not OCP's 448).
    assert float_quantize(torch.tensor([1e4, -math.inf]), 4, 3, "nearest").tolist() == [480, -480]


def test_float_e8m7_equals_bfloat16():
    # E8M7 in QPyTorch is bf16 with fp32's overflow; lowbit equals x.bfloat16() bit for bit,
    # on random fp32 patterns (Inf and subnormals included) and on exact ties.
    g = torch.Generator().manual_seed(1)
    pats = torch.randint(-(2**31), 2**31 - 1, (100_000,), dtype=torch.int64, generator=g)
    x = pats.to(torch.int32).view(torch.float32)
    ties = ((pats.to(torch.int32) & ~0xFFFF) | 0x8000).view(torch.float32)
    x = torch.cat([x, ties])
    x = x[~torch.isnan(x)]
    assert_bitwise(float_quantize(x, 8, 7, rounding="nearest"), x.bfloat16().float())


def test_fixed_ties_to_even():
    # QPyTorch's CUDA kernel rounds fixed-point ties away from zero (its CPU one to even).
    x = torch.tensor([1, 3, 5, -1, -3, -5], dtype=torch.float32) / 32  # k.5 at fl=4
    assert fixed_point_quantize(x, 8, 4, rounding="nearest").tolist() == [
        0.0, 0.125, 0.125, -0.0, -0.125, -0.125]
    # QPyTorch's CPU kernel rounds x·2^fl = 0.5 + 2^-24 twice, down to 0.
    x = torch.tensor([(0.5 + 2.0**-24) / 16])
    assert fixed_point_quantize(x, 8, 4, rounding="nearest").item() == 1 / 16


def test_block_ties_to_even():
    # wl=3 with block max 0.75: step 0.25.  QPyTorch rounds ties toward +Inf
    # (0.125 -> 0.25, -0.125 -> 0, 0.625 -> 0.75); lowbit to even.
    x = torch.tensor([0.75, 0.125, -0.125, 0.375, -0.375, 0.625])
    y = block_quantize(x, 3, rounding="nearest")
    assert y.tolist() == [0.75, 0.0, -0.0, 0.5, -0.5, 0.5]
    assert torch.signbit(y[2])


def test_float_no_double_rounding_near_subnormals():
    # QPyTorch forms x + 2^emin in fp32 first, so these round twice (research note §2.1).
    x = torch.tensor([2.0**-25 - 2.0**-48, 3 * 2.0**-25 - 2.0**-47])
    y = float_quantize(x, 5, 10, rounding="nearest")
    assert y.tolist() == [0.0, 2.0**-24]  # QPyTorch: 2^-24, 2^-23
    assert_bitwise(y, x.half().float())
    assert float_quantize(torch.tensor([2.0**-17 - 2.0**-40]), 5, 2, "nearest").item() == 0.0


def test_float_man23_nearest_is_identity():
    # QPyTorch's CPU kernel negates the input for man=23 with nearest (1.5 -> -1.5).
    x = torch.tensor([1.5, -2.75, 3.14159, 1e-40, -1e30])
    assert_bitwise(float_quantize(x, 8, 23, rounding="nearest"), x)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_negative_zero_preserved(rounding):
    # QPyTorch returns +0 for -0 (and for negative values that underflow in floats).
    z = torch.tensor([-0.0])
    for y in (float_quantize(z, 5, 2, rounding), fixed_point_quantize(z, 8, 4, rounding=rounding),
              block_quantize(torch.tensor([-0.0, 1.0]), 8, rounding=rounding)[:1]):
        assert y.item() == 0 and torch.signbit(y).all()
    tiny = torch.tensor([-1e-10])
    assert torch.signbit(float_quantize(tiny, 5, 2, "nearest")).all()
    assert torch.signbit(fixed_point_quantize(tiny, 8, 4, rounding="nearest")).all()
    assert torch.signbit(block_quantize(torch.tensor([-1e-10, 1.0]), 8, rounding="nearest")[0])


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_nan_preserved(rounding):
    # QPyTorch's float quantizer returns +max for NaN; lowbit keeps NaN (fixed point and
    # blocks already did: a block holding NaN is NaN in both).
    nan = torch.tensor([math.nan, 1.0])
    for exp in (2, 5, 8):
        assert torch.isnan(float_quantize(nan, exp, 2, rounding)[0])
    assert torch.isnan(fixed_point_quantize(nan, 8, 4, rounding=rounding)[0])
    assert torch.isnan(block_quantize(nan, 8, rounding=rounding)).all()


def test_backward_hooks_honoured_without_clamping_grad_zero():
    # QPyTorch ignores backward_hooks unless clamping_grad_zero=True.  Hooks run in order,
    # before the backward rounding: (3g + 0.03) rounded to 1/16 is 3.0; the other order would
    # give round(3.09 · 16)/16 = 3.0625.
    hooks = [lambda g: g * 3, lambda g: g + 0.03]
    x = torch.zeros(4, requires_grad=True)
    quantizer(backward_number=FixedPoint(8, 4), backward_rounding="nearest",
              backward_hooks=hooks)(x).sum().backward()
    assert x.grad.tolist() == [3.0] * 4
    x = torch.zeros(4, requires_grad=True)
    quantizer(backward_hooks=hooks)(x).sum().backward()
    assert torch.equal(x.grad, torch.full((4,), 3.0) + 0.03)


def test_clamping_grad_zero_without_backward_number_applies_hooks_and_mask():
    # QPyTorch skips both the hooks and the zeroing when backward_number is None.
    x = torch.tensor([-2.0, 0.3, 2.0], requires_grad=True)
    q = quantizer(forward_number=FixedPoint(5, 4), forward_rounding="nearest",
                  clamping_grad_zero=True, backward_hooks=[lambda g: g * 2])
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 0.0]


def test_backward_hooks_default_is_not_a_shared_list():
    assert inspect.signature(quantizer).parameters["backward_hooks"].default is None
    hooks = [lambda g: g * 2]
    q = quantizer(backward_hooks=hooks)
    hooks.append(lambda g: g * 100)  # a later change of the list changes nothing
    x = torch.ones(2, requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_clamping_grad_zero_stochastic_forward_equals_function():
    x = torch.randn(1000) * 2
    q = quantizer(forward_number=FixedPoint(6, 3), clamping_grad_zero=True)
    torch.manual_seed(7)
    a = q(x)
    torch.manual_seed(7)
    b = fixed_point_quantize(x, 6, 3)
    assert_bitwise(a, b)


def test_stochastic_reproducible_under_manual_seed():
    # QPyTorch's CPU kernels draw from an unseedable std::mt19937.
    x = torch.randn(4, 64)
    calls = [
        lambda: float_quantize(x, 5, 2),
        lambda: fixed_point_quantize(x, 8, 4),
        lambda: block_quantize(x, 6, dim=0),
        lambda: quantizer(FloatingPoint(4, 3))(x),
    ]
    for call in calls:
        torch.manual_seed(123)
        a = call()
        torch.manual_seed(123)
        assert_bitwise(a, call())
        assert not torch.equal(a, call())  # a fresh seed per call


def test_quantizer_gradient_is_quantized_stochastically_and_reproducibly():
    x = torch.randn(256, requires_grad=True)
    q = quantizer(backward_number=FixedPoint(8, 2))
    grads = []
    for _ in range(2):
        torch.manual_seed(3)
        x.grad = None
        (q(x) * 0.3).sum().backward()
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])
    assert set(grads[0].tolist()) == {0.25, 0.5}


def test_torch_save_model_with_quantizer():
    # QPyTorch: "Can't pickle local object quantizer.<locals>.Rounding".
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 3),
        Quantizer(FixedPoint(8, 4), FloatingPoint(5, 2), "nearest", "nearest"),
        torch.nn.ReLU(),
        Quantizer(BlockFloatingPoint(6, dim=0), None, "nearest"),
    )
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert repr(loaded) == repr(model)
    assert loaded[1].forward_number == FixedPoint(8, 4)
    x = torch.randn(5, 4)
    outs = []
    for m in (model, loaded):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.sum().backward()
        outs.append((y.detach(), xi.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert model.state_dict().keys() == {"0.weight", "0.bias"}


def test_quantizer_function_and_numbers_pickle():
    q = quantizer(FixedPoint(8, 4, symmetric=True), BlockFloatingPoint(8, dim=1), "nearest",
                  "stochastic", clamping_grad_zero=True)
    q2 = pickle.loads(pickle.dumps(q))
    assert repr(q2) == repr(q)
    x = torch.randn(3, 3)
    assert torch.equal(q(x), q2(x))
    for n in (FixedPoint(5, 4, False, True), FloatingPoint(5, 2), BlockFloatingPoint(8, 0)):
        assert pickle.loads(pickle.dumps(n)) == n


# ---------------------------------------------------------------------------------------------
# Block floating point against an independent oracle, every dim
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dim", [((4, 5, 6), -1), ((4, 5, 6), 0), ((4, 5, 6), 1),
                                       ((4, 5, 6), 2), ((7,), 0), ((7,), -1), ((), -1),
                                       ((3, 8), 1)])
@pytest.mark.parametrize("wl", [2, 3, 8])
def test_block_nearest_matches_oracle(shape, dim, wl):
    x = torch.randn(shape) * 3
    step, top = block_oracle_grid(x, wl, dim)
    want = (torch.round(x.double() / step) * step).clamp(-top, top).float()
    assert_bitwise(block_quantize(x, wl, dim=dim, rounding="nearest"), want)
    assert_bitwise(lb.quantize(x, BlockFloatingPoint(wl, dim).format_for(x.dim())), want)


def test_block_all_zero_and_dim_means_whole_tensor():
    assert block_quantize(torch.zeros(3, 2), 8).tolist() == [[0.0, 0.0]] * 3
    # dim=-1 is the whole tensor (QPyTorch's meaning), not the last axis.
    x = torch.tensor([[8.0, 0.3], [0.1, 0.3]])
    assert block_quantize(x, 4, rounding="nearest").tolist() == [[8.0, 0.0], [0.0, 0.0]]
    assert block_quantize(x, 4, dim=0, rounding="nearest").tolist() == [[8.0, 0.0],
                                                                       [0.125, 0.3125]]


# ---------------------------------------------------------------------------------------------
# API surface
# ---------------------------------------------------------------------------------------------
def defaults(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


E = inspect.Parameter.empty


def test_signatures_match_qpytorch():
    assert defaults(float_quantize) == [("x", E), ("exp", E), ("man", E),
                                        ("rounding", "stochastic")]
    assert defaults(fixed_point_quantize) == [("x", E), ("wl", E), ("fl", E), ("clamp", True),
                                              ("symmetric", False), ("rounding", "stochastic")]
    assert defaults(block_quantize) == [("x", E), ("wl", E), ("dim", -1),
                                        ("rounding", "stochastic")]
    assert defaults(quantizer) == [
        ("forward_number", None), ("backward_number", None),
        ("forward_rounding", "stochastic"), ("backward_rounding", "stochastic"),
        ("clamping_grad_zero", False), ("backward_hooks", None)]
    assert defaults(Quantizer.__init__)[1:] == [
        ("forward_number", None), ("backward_number", None),
        ("forward_rounding", "stochastic"), ("backward_rounding", "stochastic")]
    assert defaults(FixedPoint.__init__)[1:] == [("wl", E), ("fl", E), ("clamp", True),
                                                 ("symmetric", False)]
    assert defaults(FloatingPoint.__init__)[1:] == [("exp", E), ("man", E)]
    assert defaults(BlockFloatingPoint.__init__)[1:] == [("wl", E), ("dim", -1)]
    assert set(qtorch.__all__) >= {"FixedPoint", "BlockFloatingPoint", "FloatingPoint"}
    assert set(qtorch.quant.__all__) == {"fixed_point_quantize", "block_quantize",
                                         "float_quantize", "quantizer", "Quantizer"}
    for cls in (FixedPoint, FloatingPoint, BlockFloatingPoint):
        assert issubclass(cls, Number)


def test_numbers_positional_and_keyword_like_qpytorch():
    n = FixedPoint(8, 4, False, True)
    assert (n.wl, n.fl, n.clamp, n.symmetric) == (8, 4, False, True)
    n = FloatingPoint(exp=5, man=2)
    assert (n.exp, n.man) == (5, 2)
    n = BlockFloatingPoint(wl=8, dim=0)
    assert (n.wl, n.dim) == (8, 0)


def test_repr_matches_qpytorch():
    assert repr(FloatingPoint(5, 2)) == "FloatingPoint (exponent=5, mantissa=2)"
    assert str(FloatingPoint(8, 7)) == "FloatingPoint (exponent=8, mantissa=7)"
    assert repr(FixedPoint(5, 4)) == "FixedPoint (wl=5, fl=4)"
    assert repr(BlockFloatingPoint(8)) == "BlockFloatingPoint (wl=8, dim=-1)"
    assert repr(BlockFloatingPoint(8, 1)) == "BlockFloatingPoint (wl=8, dim=1)"
    # Non-default options are shown (QPyTorch prints distinct formats alike).
    assert repr(FixedPoint(5, 4, clamp=False)) == "FixedPoint (wl=5, fl=4, clamp=False)"
    assert repr(FixedPoint(5, 4, symmetric=True)) == "FixedPoint (wl=5, fl=4, symmetric=True)"
    assert "forward_number=FixedPoint (wl=5, fl=4)" in repr(Quantizer(FixedPoint(5, 4)))


def test_lowbit_format():
    assert FloatingPoint(5, 2).lowbit_format == lb.FloatFormat(5, 2, specials="none")
    assert FloatingPoint(4, 3).lowbit_format.max == 480.0
    assert FloatingPoint(5, 10).lowbit_format.max == 131008.0
    assert FixedPoint(5, 4, False, True).lowbit_format == lb.FixedPoint(5, 4, clamp=False,
                                                                        symmetric=True)
    # QPyTorch's range [-2^(wl-fl-1), 2^(wl-fl-1) - 2^-fl] is lowbit's k·2^-fl range.
    for wl, fl in [(5, 4), (8, 2), (8, 8), (12, 3)]:
        f = FixedPoint(wl, fl).lowbit_format
        assert f.lowest == -(2.0 ** (wl - fl - 1)) and f.max == 2.0 ** (wl - fl - 1) - 2.0**-fl
        assert FixedPoint(wl, fl, symmetric=True).lowbit_format.lowest == -f.max
    assert BlockFloatingPoint(8).lowbit_format == lb.formats.get("bfp8")
    assert BlockFloatingPoint(6, dim=1).format_for(3) == lb.BlockFormat(
        lb.FixedPoint(6, 0, symmetric=True), scale=lb.FloatFormat(8, 23), block_size=None,
        axis=(0, 2))
    with pytest.raises(ValueError, match="format_for"):
        BlockFloatingPoint(8, dim=1).lowbit_format


def test_numbers_compare_hash_and_are_immutable():
    assert FixedPoint(5, 4) == FixedPoint(5, 4) and FixedPoint(5, 4) != FixedPoint(5, 4, False)
    assert FloatingPoint(5, 2) != FixedPoint(5, 2)
    assert len({FloatingPoint(5, 2), FloatingPoint(5, 2), BlockFloatingPoint(5, 2)}) == 2
    n = FixedPoint(5, 4)
    with pytest.raises(AttributeError):
        n.wl = 6


def test_dtypes():
    x = torch.randn(64)
    for dtype in (torch.float16, torch.bfloat16):
        y = fixed_point_quantize(x.to(dtype), 8, 4, rounding="nearest")
        assert y.dtype == dtype
        assert torch.equal(y.float(), fixed_point_quantize(x.to(dtype).float(), 8, 4,
                                                           rounding="nearest"))
    y = float_quantize(x.bfloat16(), 8, 7, rounding="nearest")
    assert y.dtype == torch.bfloat16 and torch.equal(y, x.bfloat16())
    assert float_quantize(x.half(), 4, 3, "nearest").dtype == torch.float16
    with pytest.raises(ValueError, match="float32|fp32"):  # 131008 does not fit fp16
        float_quantize(x.half(), 5, 10)
    with pytest.raises(ValueError, match="float64"):
        float_quantize(x.double(), 5, 2)


def test_block_accepts_bfloat16():
    x = torch.randn(64)
    y = block_quantize(x.bfloat16(), 8, rounding="nearest")
    assert y.dtype == torch.bfloat16
    assert torch.equal(y.float(), block_quantize(x.bfloat16().float(), 8, rounding="nearest"))


def test_empty_tensors():
    for y in (float_quantize(torch.empty(0), 5, 2), fixed_point_quantize(torch.empty(0, 3), 8, 4),
              block_quantize(torch.empty(2, 0), 8, dim=0)):
        assert y.numel() == 0


@pytest.mark.parametrize("make,exc,match", [
    (lambda: FloatingPoint(0, 2), ValueError, "exp"),
    (lambda: FloatingPoint(9, 2), ValueError, "exp"),
    (lambda: FloatingPoint(5, 0), ValueError, "man"),
    (lambda: FloatingPoint(5, 24), ValueError, "man"),
    (lambda: FloatingPoint(5.0, 2), TypeError, "exp"),
    (lambda: FloatingPoint(True, 2), TypeError, "exp"),
    (lambda: FixedPoint(1, 1), ValueError, "wl"),
    (lambda: FixedPoint(26, 4), ValueError, "wl"),
    (lambda: FixedPoint(8, 150), ValueError, "fl"),
    (lambda: FixedPoint(8, 4.0), TypeError, "fl"),
    (lambda: FixedPoint(8, 4, clamp=1), TypeError, "clamp"),
    (lambda: FixedPoint(8, 4, symmetric="yes"), TypeError, "symmetric"),
    (lambda: BlockFloatingPoint(0), ValueError, "wl"),
    (lambda: BlockFloatingPoint(1), ValueError, "wl"),
    (lambda: BlockFloatingPoint(8.0), TypeError, "wl"),
    (lambda: BlockFloatingPoint(8, dim=-2), ValueError, "dim"),
    (lambda: BlockFloatingPoint(8, dim=1.0), TypeError, "dim"),
    (lambda: float_quantize(torch.ones(2), 5, 2, rounding="floor"), ValueError, "rounding"),
    (lambda: fixed_point_quantize(torch.ones(2), 8, 4, rounding="up"), ValueError, "rounding"),
    (lambda: block_quantize(torch.ones(2), 8, rounding=None), ValueError, "rounding"),
    (lambda: float_quantize(torch.ones(2), 9, 2), ValueError, "exp"),
    (lambda: float_quantize(torch.ones(2), 5, 24), ValueError, "man"),
    (lambda: float_quantize([1.0], 5, 2), TypeError, "Tensor"),
    (lambda: fixed_point_quantize(torch.ones(2), 1, 1), ValueError, "wl"),
    (lambda: block_quantize(torch.ones(3, 4), 8, dim=2), ValueError, "dim"),
    (lambda: block_quantize(torch.ones(3), 8, dim=-3), ValueError, "dim"),
    (lambda: quantizer(forward_rounding="up"), ValueError, "forward_rounding"),
    (lambda: quantizer(backward_rounding="Nearest"), ValueError, "backward_rounding"),
    (lambda: quantizer(forward_number=lb.FixedPoint(8, 4)), TypeError, "forward_number"),
    (lambda: quantizer(backward_number="fp16"), TypeError, "backward_number"),
    (lambda: quantizer(FloatingPoint(5, 2), clamping_grad_zero=True), ValueError, "FixedPoint"),
    (lambda: quantizer(FixedPoint(5, 4, clamp=False), clamping_grad_zero=True), ValueError,
     "clamp"),
    (lambda: quantizer(clamping_grad_zero="yes"), TypeError, "clamping_grad_zero"),
    (lambda: quantizer(backward_hooks=[1]), TypeError, "backward_hooks"),
    (lambda: Quantizer(forward_rounding="fast"), ValueError, "forward_rounding"),
    (lambda: quantizer()([1.0]), TypeError, "Tensor"),
])
def test_validation_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_fixed_point_accepts_what_lowbit_accepts():
    # QPyTorch's class asserts fl > 0; integers (fl = 0) and negative fl are lowbit formats.
    assert fixed_point_quantize(torch.tensor([2.5, 3.5, 200.0]), 8, 0, rounding="nearest"
                                ).tolist() == [2.0, 4.0, 127.0]
    assert FixedPoint(8, 0).lowbit_format.max == 127
    assert FixedPoint(4, -2).lowbit_format.max == 28
    # clamping_grad_zero with no forward number clamps nothing (as QPyTorch).
    x = torch.tensor([5.0, -7.0], requires_grad=True)
    quantizer(clamping_grad_zero=True)(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


def test_functions_pass_the_gradient_straight_through():
    # QPyTorch's functions return tensors without autograd; lowbit's have the STE gradient.
    x = torch.randn(8, requires_grad=True)
    (float_quantize(x, 5, 2) + fixed_point_quantize(x, 8, 4)
     + block_quantize(x, 8)).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))


def test_quantizer_without_grad_and_identity():
    x = torch.randn(5)
    y = quantizer(FixedPoint(8, 4))(x)
    assert not y.requires_grad
    x = torch.randn(5, requires_grad=True)
    y = Quantizer()(x)
    assert torch.equal(y, x) and y.requires_grad


# ---------------------------------------------------------------------------------------------
# Against the real qtorch (slow: its import JIT-compiles a C++ extension, ~1 minute)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_qtorch():
    pytest.importorskip("qtorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import qtorch.quant as real

    return real


def no_tie_values(n, lowbit_fmt, scale, generator):
    """Random values, those lying exactly on a tie of ``lowbit_fmt`` removed (QPyTorch rounds
    ties differently from lowbit, as documented)."""
    x = torch.randn(n, generator=generator) * scale
    return drop_ties(x, lowbit_fmt)


def drop_ties(x, lowbit_fmt):
    tie = lb.quantize(x, lowbit_fmt, rounding="nearest") != lb.quantize(
        x, lowbit_fmt, rounding="nearest_away")
    return x[~tie]


def float_test_values(fmt, generator):
    """Random fp32 values for QPyTorch's float ``fmt``: every binade from its min normal to
    two past its max (saturation), and subnormal-range multiples of 2^(emin-20), which fp32
    holds exactly after QPyTorch's ``x + 2^emin`` pre-addition (so no double rounding)."""
    n = 50_000
    top = min(fmt.emax + 2, 127)
    e = torch.randint(fmt.emin, top + 1, (n,), generator=generator)
    frac = torch.randint(0, 2**23, (n,), generator=generator)
    sign = torch.randint(0, 2, (n,), generator=generator) << 31
    normal = (sign | ((e + 127) << 23) | frac).to(torch.int32).view(torch.float32)
    sub = torch.randint(-(2**20), 2**20, (n // 4,), generator=generator).float()
    sub = sub * 2.0 ** (fmt.emin - 20)
    return drop_ties(torch.cat([normal, sub[sub != 0]]), fmt)


@pytest.mark.slow
def test_against_real_qtorch(real_qtorch):
    g = torch.Generator().manual_seed(0)
    for exp, man in [(5, 10), (8, 7), (4, 3), (5, 2), (3, 4), (2, 1), (6, 9)]:
        x = float_test_values(lb.FloatFormat(exp, man, specials="none"), g)
        assert x.numel() > 55_000
        ours = float_quantize(x, exp, man, rounding="nearest")
        theirs = real_qtorch.float_quantize(x, exp, man, rounding="nearest")
        nz = ours != 0  # QPyTorch turns -0 into +0 (documented)
        assert torch.equal(ours[nz], theirs[nz]), (exp, man)
        assert torch.equal(ours.abs(), theirs.abs())
    for wl, fl, clamp, sym in [(8, 4, True, False), (5, 4, True, True), (16, 8, False, False)]:
        fmt = lb.FixedPoint(wl, fl, clamp=clamp, symmetric=sym)
        x = no_tie_values(100_000, fmt, 2.0 ** (wl - fl - 1), g)
        ours = fixed_point_quantize(x, wl, fl, clamp, sym, rounding="nearest")
        theirs = real_qtorch.fixed_point_quantize(x, wl, fl, clamp, sym, rounding="nearest")
        assert torch.equal(ours.abs(), theirs.abs()) and torch.equal(ours[ours != 0],
                                                                     theirs[ours != 0])
    for wl, dim in [(8, -1), (5, 0), (6, 1), (4, 2)]:
        x = torch.randn(16, 8, 4, generator=g) * 10
        fmt = BlockFloatingPoint(wl, dim).format_for(3)
        tie = lb.quantize(x, fmt) != lb.quantize(x, fmt, rounding="nearest_away")
        ours = block_quantize(x, wl, dim, rounding="nearest")
        theirs = real_qtorch.block_quantize(x, wl, dim, rounding="nearest")
        keep = ~tie & (ours != 0)
        assert torch.equal(ours[keep], theirs[keep]), (wl, dim)
    # The documented QPyTorch behaviours this module corrects, confirmed on the real thing.
    one_tie = torch.tensor([1.00048828125])
    assert real_qtorch.float_quantize(one_tie, 5, 10, "nearest").item() == 1.0009765625
    assert real_qtorch.float_quantize(torch.tensor([math.nan]), 5, 2, "nearest").item() == 114688
    assert not torch.signbit(real_qtorch.float_quantize(torch.tensor([-0.0]), 5, 2, "nearest"))
    assert real_qtorch.float_quantize(torch.tensor([2.0**-25 - 2.0**-48]), 5, 10,
                                      "nearest").item() == 2.0**-24
    assert real_qtorch.float_quantize(torch.tensor([1.5]), 8, 23, "nearest").item() == -1.5
    assert real_qtorch.block_quantize(torch.tensor([0.75, 0.125, -0.375]), 3,
                                      rounding="nearest").tolist() == [0.75, 0.25, -0.25]
    assert real_qtorch.fixed_point_quantize(torch.tensor([(0.5 + 2.0**-24) / 16]), 8, 4,
                                            rounding="nearest").item() == 0.0
