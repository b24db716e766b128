"""The Triton GEMM kernels on small CPU tensors, run by Triton's interpreter, against the
reference backend bit for bit: one case per code path (the UNIFORM, generic float and fixed-point
fast paths, the float64 path, chunked, Kahan, rounded products, stochastic slots 0..5, special
values, batches and partial tiles), the tensor-core path against an error bound and exactly on
inputs whose chunk sums are exact.  The interpreter costs about a second per case, so the
sweep over every path × every mode is in the slow tier; the same sweep runs compiled in
``test_gemm_gpu.py``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from lowbit.ops.accumulate import Accumulate  # noqa: E402

from _gemm_cases import (  # noqa: E402
    SWEEP, SWEEP_MODES, assert_same, chunk_bound, inputs, integers, run,
)

FAST = {
    "bf16 nearest, batch, partial tiles": (dict(acc="bf16"), (2, 5, 6), (2, 6, 3), False),
    "bf16 up, specials": (dict(acc="bf16", rounding="up"), (1, 3, 6), (1, 6, 4), True),
    "e4m3fn toward_zero, e5m2 products": (dict(acc="e4m3fn", mul="e5m2", rounding="toward_zero"),
                                          (1, 3, 6), (1, 6, 2), False),
    "fixed odd, chunked": (dict(acc="fixed<12,6>", chunk=3, rounding="odd"), (1, 2, 7),
                           (1, 7, 3), False),
    "fp32 nearest, specials": (dict(acc="fp32"), (1, 2, 6), (1, 6, 3), True),
    "stochastic chunks and products": (dict(acc="e6m9", chunk=3, chunk_acc="fp16",
                                            mul="e4m3", rounding="stochastic"),
                                       (1, 2, 7), (1, 7, 3), False),
    "stochastic Kahan": (dict(acc="bf16", compensated=True, rounding="stochastic"), (1, 2, 4),
                         (1, 4, 2), False),
}


@pytest.mark.parametrize("case", list(FAST))
def test_paths_match_reference(case: str) -> None:
    options, shape_a, shape_b, specials = FAST[case]
    spec = Accumulate(**options)
    a, b = inputs(shape_a, shape_b, seed=len(case), specials=specials)
    assert_same(run(a, b, spec, "triton"), run(a, b, spec, "reference"), case)


@pytest.mark.parametrize("options", [
    dict(acc="int8", rounding="stochastic"),  # float64 path, fixed point
    dict(acc="e5m2", rounding="toward_zero", compensated=True),  # Kahan's negations
    dict(acc="fp32", rounding="down", compensated=True),
])
def test_signed_zeros(options) -> None:
    """Negative values that round to zero keep their sign; Kahan's -c of a +0 is -0."""
    a = torch.tensor([[[-0.3, 0.0, -(2.0**-30)], [-0.0, -0.0, 0.0], [0.3, -0.3, -0.0]]])
    b = torch.tensor([[[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]])
    spec = Accumulate(**options)
    assert_same(run(a, b, spec, "triton"), run(a, b, spec, "reference"), str(options))


def test_fp32_chunks_exact_where_chunk_sums_are_exact() -> None:
    """Tensor-core path (chunk a multiple of 16): integer inputs make every chunk sum exact in
    any order, so the result equals the reference bit for bit (ragged K, partial tiles)."""
    a, b = integers((1, 17, 40), (1, 40, 5), seed=1)
    for acc in ("bf16", "e5m2"):
        spec = Accumulate(acc=acc, chunk=16, chunk_acc="fp32")
        assert_same(run(a, b, spec, "triton"), run(a, b, spec, "reference"), acc)


def test_fp32_chunks_error_bound() -> None:
    a, b = inputs((1, 9, 48), (1, 48, 7), seed=2)
    got = run(a, b, Accumulate(acc="fp32", chunk=16, chunk_acc="fp32"), "triton")
    exact = a.double() @ b.double()
    assert bool(((got.double() - exact).abs() <= chunk_bound(a, b, 16)).all())


@pytest.mark.slow
@pytest.mark.parametrize("mode", SWEEP_MODES)
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_matches_reference(name: str, mode: str) -> None:
    spec = Accumulate(rounding=mode, **SWEEP[name])
    for specials in (False, True):
        a, b = inputs((2, 3, 9), (2, 9, 5), seed=len(name) + specials, specials=specials)
        assert_same(run(a, b, spec, "triton"), run(a, b, spec, "reference"),
                    f"{name} {mode} specials={specials}")
