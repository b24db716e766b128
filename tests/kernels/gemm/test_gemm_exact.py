"""``lowbit.kernels.gemm._exact``, the one rounding of an exact value under every GEMM
operation: ``two_sum`` is error-free (checked in fractions), and ``round_pair`` of a value that
is itself fp32 (``lo = 0``) is exactly ``lowbit.quantize``'s rounding, for every mode, on edge
and random inputs and formats of every family and range (fp32-wide, flushed, unsigned,
saturating, past the fp32 carrier above and below).  (Its agreement with the exact oracle on
true two-term sums is in ``tests/ops/accumulate/test_accumulate_oracle.py``.)"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from _scalar_oracles import fp32_edge_values, random_fp32
from lowbit.formats import FixedPoint, FloatFormat, IntFormat, Rounding, get
from lowbit.kernels.gemm._exact import round_pair, two_sum
from lowbit.kernels.philox import random_words
from lowbit.kernels.reference import quantize_fixed, quantize_float

FORMATS = {
    "e4m3fn": get("e4m3fn"), "e5m2": get("e5m2"), "bf16": get("bf16"), "fp16": get("fp16"),
    "fp32": get("fp32"), "e2m1fn": get("e2m1fn"), "e4m3fnuz": get("e4m3fnuz"),
    "flush": FloatFormat(5, 4, subnormals=False), "unsigned": FloatFormat(4, 3, signed=False),
    "saturating": FloatFormat(5, 2, saturate=True), "beyond": FloatFormat(8, 3, specials="none"),
    "below": FloatFormat(8, 3, bias=200), "fixed": FixedPoint(8, 4), "int8": IntFormat(8),
    "uint4": IntFormat(4, signed=False),
}
MODES = [m for m in Rounding]


def _values(fmt) -> torch.Tensor:
    edge = fp32_edge_values()
    scale = 2.0 ** -getattr(fmt, "fl", 0)
    grid = (np.arange(-300, 301, dtype=np.float32) * np.float32(scale) / 7).astype(np.float32)
    rnd = random_fp32(2000, seed=5, lo_exp=-140, hi_exp=20)
    wide = random_fp32(500, seed=6)
    return torch.from_numpy(np.concatenate([edge, grid, rnd, wide]).astype(np.float32))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_fp32_values_round_as_quantize(name: str, mode: Rounding) -> None:
    fmt = FORMATS[name]
    x = _values(fmt)
    words = random_words(x.numel(), 77, x.device)
    quantize = quantize_float if isinstance(fmt, FloatFormat) else quantize_fixed
    want = quantize(x, fmt, mode, words, 32)
    got = round_pair(x.double(), torch.zeros_like(x, dtype=torch.float64), fmt, mode, words)
    if mode is Rounding.STOCHASTIC:
        # quantize clamps the dropped-bit count at 40 (see kernels.reference.core); round_pair
        # truncates the exact remainder to 32 bits at any distance: compare where they agree.
        grid = 2.0 ** -getattr(fmt, "fl", 0) if not isinstance(fmt, FloatFormat) else \
            2.0 ** (max(fmt.emin, -149) - fmt.man)
        keep = ~(x.abs() < grid * 2.0**-16)
        got, want = got[keep], want[keep]
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    assert bool(same.all()), (name, mode, x[~same][:5].tolist(), got[~same][:5].tolist(),
                              want[~same][:5].tolist())


def test_two_sum_is_error_free() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5000, generator=g, dtype=torch.float64) * torch.exp2(
        torch.randint(-200, 200, (5000,), generator=g).double())
    b = torch.randn(5000, generator=g, dtype=torch.float64) * torch.exp2(
        torch.randint(-200, 200, (5000,), generator=g).double())
    s, e = two_sum(a, b)
    for x, y, hi, lo in zip(a.tolist(), b.tolist(), s.tolist(), e.tolist()):
        assert Fraction(hi) + Fraction(lo) == Fraction(x) + Fraction(y)
        assert hi == x + y
