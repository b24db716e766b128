"""Shared cases of the GEMM kernel tests: inputs, specs and the bit-exact comparison."""

from __future__ import annotations

import math
from typing import Optional

import torch

from lowbit.formats import FixedPoint, FloatFormat, IntFormat
from lowbit.ops.accumulate import Accumulate, gemm

SEED = 0xD1B54A32D192ED03

# (name, spec options): every code path of the Triton kernels (see lowbit.kernels.gemm.triton).
SWEEP = {
    "bf16": dict(acc="bf16"),  # UNIFORM fast path
    "bf16_sat_mul": dict(acc=FloatFormat(8, 7, saturate=True), mul="e4m3"),
    "e4m3fn_mul": dict(acc="e4m3fn", mul="e5m2"),  # generic fast path
    "fp16_chunk": dict(acc="fp16", chunk=3),
    "e6m9_chunk_fp16": dict(acc="e6m9", chunk=4, chunk_acc="fp16"),
    "fp32": dict(acc="fp32"),  # float64 path (NATIVE on the GPU)
    "fp32_kahan": dict(acc="fp32", compensated=True),
    "e5m2_kahan_mul": dict(acc="e5m2", mul="e3m2fn", compensated=True),
    "flush": dict(acc=FloatFormat(5, 4, subnormals=False)),
    "unsigned": dict(acc=FloatFormat(5, 4, signed=False)),
    "wide": dict(acc=FloatFormat(8, 22)),  # float64 path: man > 21
    "fixed": dict(acc=FixedPoint(12, 6)),
    "fixed_wide": dict(acc=FixedPoint(25, 10)),  # float64 path: 24 magnitude bits
    "int8_chunk": dict(acc=IntFormat(8), chunk=5, chunk_acc=FixedPoint(16, 4)),
    "fp32_chunks_mul": dict(acc="bf16", chunk=4, chunk_acc="fp32", mul="bf16"),
}
SWEEP_MODES = ("nearest", "nearest_away", "toward_zero", "up", "down", "odd", "stochastic")


def inputs(shape_a, shape_b, seed: int, scale: float = 1.0, specials: bool = False):
    """Random fp32 operands with a spread of exponents (and a few Inf/NaN/zeros)."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape):
        x = torch.randn(shape, generator=g) * torch.exp2(
            torch.randint(-6, 4, shape, generator=g).float()) * scale
        if specials:
            flat = x.view(-1)
            idx = torch.randperm(flat.numel(), generator=g)[:4]
            flat[idx] = torch.tensor([float("inf"), float("nan"), -0.0, 3.0e38])[:len(idx)]
        return x

    return draw(shape_a), draw(shape_b)


def integers(shape_a, shape_b, seed: int, high: int = 8):
    """Small-integer operands: every chunk sum of up to 2^14 products is exact in fp32."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-high, high + 1, shape_a, generator=g).float(),
            torch.randint(-high, high + 1, shape_b, generator=g).float())


def seed_for(spec: Accumulate) -> Optional[int]:
    modes = (spec.effective_acc_rounding.value, spec.effective_mul_rounding.value)
    return SEED if "stochastic" in modes else None


def run(a, b, spec: Accumulate, backend: str) -> torch.Tensor:
    return gemm(a, b, spec, seed=seed_for(spec), backend=backend)


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Bit-identical fp32 results (every NaN equal, the sign of zero counts)."""
    got, want = got.cpu(), want.cpu()
    assert got.shape == want.shape, (got.shape, want.shape)
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    assert bool(same.all()), (f"{what}: {int((~same).sum())} of {same.numel()} differ; got "
                              f"{got[~same][:6].tolist()} want {want[~same][:6].tolist()}")


def chunk_bound(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    """An upper bound on |fp32-chunked result - exact| with an fp32 accumulator: each chunk sum
    and each addition to the total has relative error below 2^-23 per operation (rounding or
    truncating hardware), so (chunk - 1 + chunks) · 2^-23 · Σ|a·b| bounds the error to first
    order; the factor 1.01 covers the higher-order terms at these sizes."""
    k = a.shape[-1]
    ops = chunk - 1 + math.ceil(k / chunk)
    return 1.01 * ops * 2.0**-23 * (a.double().abs() @ b.double().abs())
