"""The reference backend of ``lowbit.ops.accumulate.gemm`` against the exact sequential oracle
(``_accum_oracle``, Python fractions) at zero tolerance, for every bit-reproducible mode:
sequential, FMA, rounded products, chunked (with its own ``chunk_acc``, and ``"fp32"`` chunks
with rounded products, which run in K order), Kahan, every rounding mode including stochastic
with the documented stream, on float, fixed-point and integer accumulators, plus targeted
double-rounding, underflow, overflow and special-value inputs."""

from __future__ import annotations

import pytest
import torch

import _accum_oracle as oracle
from lowbit.formats import FixedPoint, FloatFormat, IntFormat, get
from lowbit.ops.accumulate import Accumulate, gemm

SEED = 0x0123456789ABCDEF
ALL_MODES = oracle.MODES
ACCS = {
    "bf16": "bf16", "fp16": "fp16", "e5m2": "e5m2", "e4m3fn": "e4m3fn", "e6m9": "e6m9",
    "fp32": "fp32", "e4m3fnuz": "e4m3fnuz", "e3m2fn": "e3m2fn",
    "flush": FloatFormat(5, 4, subnormals=False), "sat": FloatFormat(5, 3, saturate=True),
    "unsigned": FloatFormat(5, 4, signed=False), "fixed": FixedPoint(12, 6),
    "fixed_sym": FixedPoint(10, 7, symmetric=True), "int8": IntFormat(8),
    "uint6": IntFormat(6, signed=False),
}
# Scale of the inputs per accumulator: sums of about 2^-3 .. 2^4, with products of every size.
SCALE = {"e3m2fn": 0.5, "int8": 4.0, "uint6": 2.0, "unsigned": 1.0}


def _inputs(shape_a, shape_b, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)

    def draw(shape):
        x = torch.randn(shape, generator=g) * torch.exp2(
            torch.randint(-5, 3, shape, generator=g).float())
        return x * scale

    return draw(shape_a), draw(shape_b)


def _oracle_spec(spec: Accumulate) -> oracle.Acc:
    chunk_acc = spec.chunk_acc
    chunk_mode = None
    if isinstance(chunk_acc, str):  # "fp32" with rounded products: fp32 in K order, nearest
        chunk_acc, chunk_mode = get("fp32"), "nearest"
    return oracle.Acc(
        acc=oracle.spec_of(spec.acc), acc_mode=spec.effective_acc_rounding.value,
        mul=oracle.spec_of(spec.mul), mul_mode=spec.effective_mul_rounding.value,
        chunk=spec.chunk, chunk_acc=oracle.spec_of(chunk_acc), chunk_mode=chunk_mode,
        compensated=spec.compensated)


def _check(a: torch.Tensor, b: torch.Tensor, spec: Accumulate, what: str) -> torch.Tensor:
    stochastic = "stochastic" in (spec.effective_acc_rounding.value,
                                  spec.effective_mul_rounding.value)
    seed = SEED if stochastic else None
    got = gemm(a, b, spec, seed=seed, backend="reference")
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    want = torch.tensor(oracle.gemm(a3.tolist(), b3.tolist(), _oracle_spec(spec), seed),
                        dtype=torch.float32).reshape(got.shape)
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    assert bool(same.all()), (f"{what}: {int((~same).sum())} of {same.numel()} differ; "
                              f"got {got[~same][:6].tolist()} want {want[~same][:6].tolist()}")
    return got


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("name", list(ACCS))
def test_sequential(name: str, mode: str) -> None:
    a, b = _inputs((2, 3, 17), (2, 17, 2), seed=len(name), scale=SCALE.get(name, 1.0))
    _check(a, b, Accumulate(acc=ACCS[name], rounding=mode), f"{name} {mode}")


STRUCTURES = {
    "fma": dict(fma=True),
    "mul": dict(mul="e4m3"),
    "mul_fixed": dict(mul=FixedPoint(10, 6)),
    "chunk": dict(chunk=4),
    "chunk_acc": dict(chunk=5, chunk_acc="fp16"),
    "fp32_chunks_mul": dict(chunk=3, chunk_acc="fp32", mul="bf16"),
    "kahan": dict(compensated=True),
    "kahan_mul": dict(compensated=True, mul="e5m2"),
}


@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "odd", "stochastic"])
@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("name", ["bf16", "e4m3fn", "fixed", "fp32"])
def test_structures(name: str, structure: str, mode: str) -> None:
    a, b = _inputs((1, 3, 19), (1, 19, 3), seed=7, scale=SCALE.get(name, 1.0))
    _check(a, b, Accumulate(acc=ACCS[name], rounding=mode, **STRUCTURES[structure]),
           f"{name} {structure} {mode}")


def test_separate_roundings() -> None:
    a, b = _inputs((1, 4, 12), (1, 12, 3), seed=3)
    spec = Accumulate(acc="e6m9", mul="e4m3fn", mul_rounding="stochastic",
                      acc_rounding="toward_zero")
    _check(a, b, spec, "stochastic products, truncated sums")
    spec = Accumulate(acc="bf16", mul="e5m2", rounding="up", acc_rounding="stochastic")
    _check(a, b, spec, "rounding sets mul_rounding only")


def _pair(rows, cols):
    """One output: a (1, 1, K), b (1, K, 1)."""
    return (torch.tensor(rows, dtype=torch.float32).reshape(1, 1, -1),
            torch.tensor(cols, dtype=torch.float32).reshape(1, -1, 1))


E = 2.0 ** -23


@pytest.mark.parametrize("mode", ALL_MODES)
def test_double_rounding_traps(mode: str) -> None:
    """fp64 sums would round twice here: s = 1 + 2^-23 plus a product just below half an fp32
    ulp (2^-24 - 2^-70, exact only in fp64 pairs), and 1 - 2^-60 (below 1 by far less than an
    fp64 ulp of 1)."""
    spec = Accumulate(acc="fp32", rounding=mode)
    got = _check(*_pair([1 + E, 2**-12 * (1 - E)], [1.0, 2**-12 * (1 + E)]), spec, mode)
    if mode == "nearest":
        assert got.item() == 1 + E  # an fp64 sum would tie and round to even, 1 + 2^-22
    got = _check(*_pair([1.0, 2.0**-30], [1.0, -(2.0**-30)]), spec, mode)
    if mode == "toward_zero":
        assert got.item() == 1 - 2.0**-24  # an fp64 sum would give 1.0
    for acc in ("bf16", "e5m2"):
        # bf16: 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7; the product puts the sum just above.
        _check(*_pair([1.0, 2.0**-8, 2.0**-40], [1.0, 1.0, 2.0**-40]),
               Accumulate(acc=acc, rounding=mode), f"{acc} {mode}")


@pytest.mark.parametrize("mode", ["nearest", "up", "down", "stochastic"])
@pytest.mark.parametrize("acc", ["fp32", "bf16", "fp16", "e4m3fn"])
def test_underflow_and_subnormals(acc: str, mode: str) -> None:
    """Products far below fp32's subnormals (down to 2^-298) and sums in the subnormal range."""
    tiny = [2.0**-149, 3 * 2.0**-140, -(2.0**-126), 2.0**-100, 1.5 * 2.0**-75]
    a, b = _pair(tiny + [2.0**-20, -(2.0**-130)], tiny[::-1] + [2.0**-5, 2.0**-10])
    _check(a, b, Accumulate(acc=acc, rounding=mode), f"{acc} {mode}")
    a, b = _pair([2.0**-140, -(2.0**-141), 2.0**-148], [2.0**-8, 2.0**-3, 0.75])
    _check(a, b, Accumulate(acc=acc, rounding=mode), f"{acc} {mode} subnormal sums")


@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "up", "down", "odd"])
@pytest.mark.parametrize("acc", ["fp32", "bf16", "e5m2", "e4m3fn", "e4m3fnuz", "fixed", "sat"])
def test_overflow_and_specials(acc: str, mode: str) -> None:
    """Overflow past the format (and past fp32: products up to 2^256), Inf and NaN inputs,
    Inf - Inf, signed zeros."""
    fmt = ACCS.get(acc, acc)
    big = 3.0e38
    cases = [
        ([big, big], [big, 1.0]),  # product past fp32
        ([big, -big], [big, big]),  # +huge - huge: exact zero
        ([60000.0, 60000.0, -1.0], [1.0, 1.0, 1e5]),
        ([float("inf"), 1.0], [1.0, -2.0]),
        ([float("inf"), float("-inf")], [1.0, 1.0]),
        ([float("nan"), 1.0], [1.0, 1.0]),
        ([-0.0, 0.0], [1.0, -1.0]),  # -0 + -0
        ([-1.0, 1.0], [1.0, 1.0]),  # exact zero of opposite terms
        ([0.0, float("inf")], [float("inf"), 1.0]),  # 0 · Inf
    ]
    for rows, cols in cases:
        _check(*_pair(rows, cols), Accumulate(acc=fmt, rounding=mode), f"{acc} {mode} {rows}")


def test_zero_length_and_signed_zero_products() -> None:
    a = torch.zeros(2, 3, 0)
    b = torch.zeros(2, 0, 4)
    out = gemm(a, b, Accumulate(acc="bf16"), backend="reference")
    assert out.shape == (2, 3, 4) and bool((out == 0).all()) and not bool(out.signbit().any())
    _check(*_pair([-0.0, -0.0], [1.0, 1.0]), Accumulate(acc="bf16"), "-0 + -0")
