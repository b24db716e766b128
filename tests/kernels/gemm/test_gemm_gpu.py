"""The Triton GEMM kernels compiled for CUDA against the reference on the CPU, bit for bit:
every code path × every rounding mode on shapes that leave partial tiles, the inline-PTX
round-to-odd fast path and the native fp32 FMA on larger problems, the tensor-core path on
bf16-, fp16- and fp32-exact operands (exact where chunk sums are exact, else within the error
bound) and the public ops on CUDA tensors.  Marked ``gpu``; skipped without CUDA.

Run on the GPU machine: ``PYTHONPATH=src python -m pytest -q -m gpu tests/kernels/gemm``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

pytest.importorskip("triton")

from lowbit.ops.accumulate import Accumulate, conv2d, linear, matmul  # noqa: E402

from _gemm_cases import (  # noqa: E402
    SEED, SWEEP, SWEEP_MODES, assert_same, chunk_bound, inputs, integers, run,
)

CUDA = torch.device("cuda")


def _both(a, b, spec: Accumulate, what: str) -> None:
    got = run(a.to(CUDA), b.to(CUDA), spec, "triton")
    assert got.is_cuda
    assert_same(got, run(a, b, spec, "reference"), what)


@pytest.mark.parametrize("mode", SWEEP_MODES)
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str, mode: str) -> None:
    spec = Accumulate(rounding=mode, **SWEEP[name])
    for specials in (False, True):
        a, b = inputs((2, 37, 70), (2, 70, 45), seed=len(name) + specials, specials=specials)
        _both(a, b, spec, f"{name} {mode} specials={specials}")


@pytest.mark.parametrize("options", [dict(acc="bf16", fma=True), dict(acc="fp16"),
                                     dict(acc="fp32"), dict(acc="e4m3fn", mul="e4m3fn"),
                                     dict(acc="bf16", rounding="toward_zero")])
def test_large(options) -> None:
    """Many tiles: the fast paths (inline PTX), the native fp32 FMA."""
    a, b = inputs((1, 200, 300), (1, 300, 150), seed=5, scale=0.5)
    _both(a, b, Accumulate(**options), str(options))


@pytest.mark.parametrize("chunk", [16, 32, 64, 128])
def test_tensor_cores_exact(chunk: int) -> None:
    for high in (8, 1000):  # bf16-exact, then fp16-exact operands
        a, b = integers((2, 100, 300), (2, 300, 90), seed=chunk, high=high)
        _both(a, b, Accumulate(acc="bf16", chunk=chunk, chunk_acc="fp32"), f"{chunk} {high}")


@pytest.mark.parametrize("chunk", [16, 24, 64])
def test_tensor_cores_bound(chunk: int) -> None:
    """fp32 operands (IEEE products) and a chunk length that is not a multiple of 16."""
    a, b = inputs((1, 70, 400), (1, 400, 60), seed=chunk)
    got = run(a.to(CUDA), b.to(CUDA), Accumulate(acc="fp32", chunk=chunk, chunk_acc="fp32"),
              "triton").cpu()
    assert bool(((got.double() - a.double() @ b.double()).abs()
                 <= chunk_bound(a, b, chunk)).all())


def test_stochastic_stream_is_the_cpus() -> None:
    a, b = inputs((3, 40, 50), (3, 50, 30), seed=9)
    spec = Accumulate(acc="bf16", mul="e4m3", rounding="stochastic", chunk=8)
    got = run(a.to(CUDA), b.to(CUDA), spec, "triton")
    assert_same(got, run(a, b, spec, "reference"), "stochastic")
    other = got.clone()
    assert_same(run(a.to(CUDA), b.to(CUDA), spec, "triton"), other, "same seed, same bits")


def test_ops_on_cuda() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 8, generator=g)
    w = torch.randn(4, 3, 3, 3, generator=g)
    bias = torch.randn(4, generator=g)
    spec = Accumulate(acc="bf16", rounding="stochastic")
    cpu = conv2d(x, w, bias, 2, 1, spec=spec, seed=SEED)
    gpu = conv2d(x.to(CUDA), w.to(CUDA), bias.to(CUDA), 2, 1, spec=spec, seed=SEED)
    assert_same(gpu, cpu, "conv2d")
    a = torch.randn(5, 16, generator=g).requires_grad_()
    wt = torch.randn(6, 16, generator=g).requires_grad_()
    out = linear(a.to(CUDA), wt.to(CUDA), acc="e6m9")
    out.sum().backward()
    ref_a, ref_w = a.detach().requires_grad_(), wt.detach().requires_grad_()
    linear(ref_a, ref_w, acc="e6m9").sum().backward()
    assert_same(a.grad, ref_a.grad, "dgrad")
    assert_same(wt.grad, ref_w.grad, "wgrad")
    t = torch.randn(7, 40, generator=g)
    assert_same(matmul(t.to(CUDA).t(), t.to(CUDA), acc="fp16"), matmul(t.t(), t, acc="fp16"),
                "non-contiguous operands")
