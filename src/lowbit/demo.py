"""``python -m lowbit demo``: every preset format, and how well each rounds one fixed tensor.

Prints two things: (a) a table of the presets' derived constants, (b) the SQNR and the largest
relative error of every preset under every rounding mode, on one fixed-seed fp32 tensor.
Only ``lowbit.quantize`` and the format objects are used: the demo is also a smoke test.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, TextIO

import torch

from . import quantize
from .formats import PRESETS, BlockFormat, ExpFormat, FixedPoint, FloatFormat, Rounding

__all__ = ["Score", "make_input", "score", "run"]

#: Length of a row of the demo tensor: 8 blocks of 32 for the MX formats, 16 for NVFP4.
ROW = 256
#: Row scales 2^u with u uniform in [LO, HI): channels whose magnitudes differ by 2^8.
LO, HI = -6.0, 2.0

_ABOUT_INPUT = """\
Rounding errors on one fp32 tensor x (seed {seed}): {rows} rows x {row} values, each row N(0,1)
times 2^u, u uniform in [{lo:g}, {hi:g}) per row: channels of different magnitude.  Scalar formats
round x as it is (unit scale: int formats clamp to their range, unsigned ones clip negatives to
0, e8m0fnu drops the sign); block formats choose one scale per block along a row.
SQNR = 10 log10(sum x^2 / sum (q-x)^2), 'exact' when q == x.  Stochastic rounding: seed {seed}.
"""


@dataclass(frozen=True)
class Score:
    """Error of one (format, rounding) pair. ``sqnr_db`` is +inf when the result is exact."""

    sqnr_db: float
    max_rel_err: float


def make_input(size: int, seed: int = 0) -> torch.Tensor:
    """``size // ROW`` rows of N(0, 1) values, row ``i`` scaled by ``2^u_i``, u_i ~ U[LO, HI).

    Per-row scales mimic the channels of a weight or activation tensor: a format must cover
    eight binades of scale plus the Gaussian's own spread, and block formats (one scale per
    block along the row) can show what their per-block scale buys.
    """
    if size < ROW or size % ROW:
        raise ValueError(f"size must be a positive multiple of {ROW}; got {size}")
    gen = torch.Generator().manual_seed(seed)
    rows = size // ROW
    scale = torch.exp2(torch.empty(rows, 1).uniform_(LO, HI, generator=gen))
    return torch.randn(rows, ROW, generator=gen) * scale


def score(x: torch.Tensor, q: torch.Tensor) -> Score:
    """SQNR = 10·log10(Σx² / Σ(q-x)²) in dB, and max |q-x|/|x| over x ≠ 0, in float64."""
    x64, err = x.double(), (q.double() - x.double())
    noise = float(err.square().sum())  # NaN or Inf when a value overflowed to a special
    sqnr = math.inf if noise == 0 else 10 * math.log10(float(x64.square().sum()) / noise)
    nz = x64 != 0
    rel = float((err[nz].abs() / x64[nz].abs()).max()) if bool(nz.any()) else 0.0
    return Score(sqnr, rel)


def _family(fmt: object) -> str:
    if isinstance(fmt, BlockFormat):
        return "block"
    return {FloatFormat: "float", ExpFormat: "exp", FixedPoint: "fixed"}.get(type(fmt), "int")


def _pow2(v: float) -> str:
    """``2^k`` for exact powers of two (min normal, subnormal and eps always are), else %.6g."""
    m, e = math.frexp(v)
    return f"2^{e - 1}" if m == 0.5 else f"{v:.6g}"


def _cell(v: float, fmt: str) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "exact" if v > 0 and fmt == "sqnr" else ("inf" if v > 0 else "-inf")
    return f"{v:.2f}" if fmt == "sqnr" else f"{v:.3g}"


def _table(headers: Sequence[str], rows: List[Sequence[str]]) -> str:
    """Plain text: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def formats_table() -> str:
    """(a) Every preset with its derived constants."""
    rows = []
    for name, fmt in PRESETS.items():
        rows.append([name, _family(fmt), f"{fmt.bits:g}", f"{fmt.max:.6g}",
                     _pow2(fmt.min_normal), _pow2(fmt.min_subnormal), _pow2(fmt.eps)])
    return _table(["format", "family", "bits", "max", "min normal", "min subnormal", "eps"],
                  rows)


def run(size: int = 2**16, seed: int = 0,
        file: Optional[TextIO] = None) -> Dict[str, Dict[str, Score]]:
    """Print the demo to ``file`` (default: the current ``sys.stdout``); return
    ``{preset: {rounding mode: Score}}``."""
    file = sys.stdout if file is None else file
    start = time.perf_counter()

    def out(*lines: str) -> None:
        print(*lines, sep="\n", file=file)

    x = make_input(size, seed)  # first: a bad size fails before anything is printed
    out("lowbit format presets (block formats: bits include the scale's share per element)", "",
        formats_table(), "")

    results: Dict[str, Dict[str, Score]] = {}
    for name in PRESETS:
        results[name] = {}
        for mode in Rounding:
            # Stochastic rounding takes the fixed seed; the other modes refuse a seed.
            kw = {"seed": seed} if mode is Rounding.STOCHASTIC else {}
            results[name][mode.value] = score(x, quantize(x, name, rounding=mode, **kw))

    modes = [m.value for m in Rounding]
    out(_ABOUT_INPUT.format(seed=seed, rows=x.shape[0], row=ROW, lo=LO, hi=HI))
    for title, key, kind in (("SQNR (dB), higher is better", "sqnr_db", "sqnr"),
                             ("max relative error |q-x|/|x|, lower is better", "max_rel_err",
                              "rel")):
        rows = [[name] + [_cell(getattr(results[name][m], key), kind) for m in modes]
                for name in PRESETS]
        out(title, "", _table(["format", *modes], rows), "")
    out(f"({len(PRESETS)} presets x {len(modes)} rounding modes in "
        f"{time.perf_counter() - start:.1f} s)")
    return results
