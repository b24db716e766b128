"""The numba CPU GEMM backend (``lowbit.kernels.gemm.cpu``) against the reference, bit for bit:
every code path of ``SWEEP`` in every rounding mode, the common accumulator formats under each
structure (sequential, chunked with a ragged last chunk, rounded products, Kahan), batches,
NaN/Inf/overflow and signed zeros, 64-bit seeds, ``chunk_acc="fp32"``, empty shapes, and the
routing of ``backend="auto"`` on CPU tensors.  numba compiles each kernel once (cached on
disk), so the first run of this file is slower than later ones."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("numba")

from lowbit.formats import FloatFormat  # noqa: E402
from lowbit.kernels.dispatch import Backend  # noqa: E402
from lowbit.kernels.gemm import _auto  # noqa: E402
from lowbit.ops.accumulate import Accumulate, gemm, matmul  # noqa: E402

from _gemm_cases import (  # noqa: E402
    SEED, SWEEP, SWEEP_MODES, assert_same, inputs, integers, run,
)

ACCS = {"bf16": "bf16", "fp16": "fp16", "e6m9": FloatFormat(6, 9), "e5m2": "e5m2",
        "fp32": "fp32"}
STRUCTURES = {
    "sequential": dict(),
    "chunk5": dict(chunk=5),  # K = 13: a ragged last chunk
    "chunk_fp16": dict(chunk=4, chunk_acc="fp16"),
    "mul": dict(mul="e4m3"),
    "kahan": dict(compensated=True),
}


def _same_as_reference(a, b, spec: Accumulate, what: str, seed=None) -> None:
    if seed is None:
        got, want = run(a, b, spec, "cpu"), run(a, b, spec, "reference")
    else:
        got = gemm(a, b, spec, seed=seed, backend="cpu")
        want = gemm(a, b, spec, seed=seed, backend="reference")
    assert_same(got, want, what)


@pytest.mark.parametrize("mode", SWEEP_MODES)
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_matches_reference(name: str, mode: str) -> None:
    """Every path of the Triton sweep (fast and float64 formats, fixed point, flushed,
    unsigned, saturating, chunked, Kahan, rounded products), with and without specials."""
    spec = Accumulate(rounding=mode, **SWEEP[name])
    for specials in (False, True):
        a, b = inputs((2, 3, 9), (2, 9, 5), seed=len(name) + specials, specials=specials)
        _same_as_reference(a, b, spec, f"{name} {mode} specials={specials}")


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("acc", list(ACCS))
def test_formats_and_structures(acc: str, structure: str) -> None:
    """bf16, fp16, e6m9, e5m2 and fp32 accumulators, every structure, all seven modes, a
    batch of 3 and K = 13; large operands overflow the narrow formats."""
    for mode in SWEEP_MODES:
        spec = Accumulate(acc=ACCS[acc], rounding=mode, **STRUCTURES[structure])
        for scale, specials in ((1.0, False), (1.0, True), (2.0**12, False)):
            a, b = inputs((3, 4, 13), (3, 13, 6), seed=len(acc + structure), scale=scale,
                          specials=specials)
            _same_as_reference(a, b, spec, f"{acc} {structure} {mode} x{scale} {specials}")


@pytest.mark.parametrize("options", [
    dict(acc="int8", rounding="stochastic"),
    dict(acc="e5m2", rounding="toward_zero", compensated=True),  # Kahan's negations of +0
    dict(acc="fp32", rounding="down", compensated=True),
    dict(acc="bf16", rounding="down", chunk=2),
    dict(acc="fp16", mul="e5m2", rounding="up"),
])
def test_signed_zeros(options) -> None:
    """Negative values that round to zero keep their sign; -0 + -0 stays -0."""
    a = torch.tensor([[[-0.3, 0.0, -(2.0**-30)], [-0.0, -0.0, 0.0], [0.3, -0.3, -0.0]]])
    b = torch.tensor([[[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]])
    _same_as_reference(a, b, Accumulate(**options), str(options))


@pytest.mark.parametrize("seed", [0, 1, 2**32, 2**32 - 1, 0x9E3779B97F4A7C15, 2**64 - 1, SEED])
def test_64_bit_seeds(seed: int) -> None:
    """Both 32-bit halves of the Philox key reach the stream as the reference's do (steps
    here stay below 2^31, so the counter's high word is 0)."""
    a, b = inputs((2, 3, 11), (2, 11, 4), seed=3)
    for options in (dict(acc="bf16"), dict(acc="e6m9", chunk=4, chunk_acc="fp16", mul="e4m3"),
                    dict(acc="bf16", compensated=True, mul="e5m2")):
        spec = Accumulate(rounding="stochastic", **options)
        _same_as_reference(a, b, spec, f"{options} seed={seed:#x}", seed=seed)


def test_seeds_change_the_result() -> None:
    a, b = inputs((1, 8, 16), (1, 16, 8), seed=4)
    spec = Accumulate(acc="bf16", rounding="stochastic")
    first = gemm(a, b, spec, seed=1, backend="cpu")
    assert_same(gemm(a, b, spec, seed=1, backend="cpu"), first, "same seed")
    assert not torch.equal(gemm(a, b, spec, seed=1 + 2**32, backend="cpu"), first)


@pytest.mark.parametrize("mode", ["nearest", "up", "stochastic"])
def test_fp32_chunks(mode: str) -> None:
    """``chunk_acc="fp32"`` forms chunk sums with the reference's torch.matmul calls: same
    bits (ragged K, batch), exactly so on integer inputs whatever the order."""
    spec = Accumulate(acc="bf16", chunk=16, chunk_acc="fp32", rounding=mode)
    a, b = inputs((2, 5, 40), (2, 40, 3), seed=5)
    _same_as_reference(a, b, spec, f"fp32 chunks {mode}")
    a, b = integers((1, 17, 40), (1, 40, 5), seed=1)
    _same_as_reference(a, b, spec, f"fp32 chunks integers {mode}")


def test_longer_k_and_rows() -> None:
    """A K of 130 with chunks of 64 (two full chunks and a ragged one), many rows."""
    a, b = inputs((1, 37, 130), (1, 130, 9), seed=6)
    for options in (dict(acc=FloatFormat(6, 9), chunk=64), dict(acc="bf16", mul="bf16"),
                    dict(acc="fp16", rounding="stochastic", chunk=64)):
        _same_as_reference(a, b, Accumulate(**options), str(options))


@pytest.mark.parametrize("shape_a, shape_b", [((1, 3, 0), (1, 0, 2)), ((1, 0, 4), (1, 4, 2)),
                                              ((2, 2, 1), (2, 1, 0)), ((1, 1, 1), (1, 1, 1))])
def test_small_and_empty(shape_a, shape_b) -> None:
    a, b = inputs(shape_a, shape_b, seed=7)
    for options in (dict(acc="bf16"), dict(acc="bf16", rounding="stochastic", chunk=2)):
        _same_as_reference(a, b, Accumulate(**options), f"{shape_a} {options}")


def test_auto_routes_cpu_tensors_to_numba() -> None:
    a = torch.zeros(1, 2, 2)
    assert _auto(a) is Backend.CPU
    x, y = torch.randn(5, 7), torch.randn(7, 3)
    assert_same(matmul(x, y, acc="e6m9", chunk=4), matmul(x, y, acc="e6m9", chunk=4,
                                                          backend="reference"), "auto")


def test_forced_cpu_backend_errors_are_clear(monkeypatch):
    from lowbit.kernels import gemm as gemm_kernels
    from lowbit.ops import accumulate as acc

    a, b = torch.ones(2, 3), torch.ones(3, 2)
    monkeypatch.setattr(gemm_kernels, "cpu_available", lambda: False)
    with pytest.raises(ValueError, match="backend='cpu' needs numba installed"):
        acc.matmul(a, b, acc="bf16", backend="cpu")
    # AUTO falls back to the reference when numba is missing, with the same bits
    assert torch.equal(acc.matmul(a, b, acc="bf16"), acc.matmul(a, b, acc="bf16",
                                                                backend="reference"))
