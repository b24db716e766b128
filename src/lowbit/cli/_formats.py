"""``lowbit formats``: every preset format's constants, how well each rounds one fixed tensor
under every rounding mode, and (``--plot NAMES``) PNG value grids.

The error tables: (a) the presets' derived constants, (b) the SQNR and the largest relative
error of every preset under every rounding mode, on one fixed-seed fp32 tensor.  Only
``lowbit.quantize`` and the format objects are used: the command is also a smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, TextIO

import numpy as np
import torch

from ..formats import PRESETS, BlockFormat, ExpFormat, FixedPoint, FloatFormat, Rounding, get
from ..ops.quantize import quantize
from ._common import CliError, table

__all__ = ["Score", "Grid", "make_input", "score", "formats_table", "report", "value_grid",
           "write_grids", "add_parser", "run"]

#: Length of a row of the demo tensor: 8 blocks of 32 for the MX formats, 16 for NVFP4.
ROW = 256
#: Row scales 2^u with u uniform in [LO, HI): channels whose magnitudes differ by 2^8.
LO, HI = -6.0, 2.0
#: Formats of at most this many bits have their every value drawn; wider ones a run of values.
ENUMERABLE_BITS = 10

_ABOUT_INPUT = """\
Rounding errors on one fp32 tensor x (seed {seed}): {rows} rows x {row} values, each row N(0,1)
times 2^u, u uniform in [{lo:g}, {hi:g}) per row: channels of different magnitude.  Scalar formats
round x as it is (unit scale: int formats clamp to their range, unsigned ones clip negatives to
0, e8m0fnu drops the sign); block formats choose one scale per block along a row.
SQNR = 10 log10(sum x^2 / sum (q-x)^2), 'exact' when q == x.  Stochastic rounding: seed {seed}.
"""


@dataclasses.dataclass(frozen=True)
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


def _cell(v: float, kind: str) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "exact" if v > 0 and kind == "sqnr" else ("inf" if v > 0 else "-inf")
    return f"{v:.2f}" if kind == "sqnr" else f"{v:.3g}"


def formats_table(names: Optional[Sequence[str]] = None) -> str:
    """(a) The derived constants of ``names`` (default: every preset)."""
    rows = []
    for name in PRESETS if names is None else names:
        fmt = get(name)
        rows.append([name, _family(fmt), f"{fmt.bits:g}", f"{fmt.max:.6g}",
                     _pow2(fmt.min_normal), _pow2(fmt.min_subnormal), _pow2(fmt.eps)])
    return table(["format", "family", "bits", "max", "min normal", "min subnormal", "eps"],
                 rows)


def report(size: int = 2**16, seed: int = 0,
           file: Optional[TextIO] = None) -> Dict[str, Dict[str, Score]]:
    """Print the constants and error tables to ``file`` (default: the current
    ``sys.stdout``); return ``{preset: {rounding mode: Score}}``."""
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
        out(title, "", table(["format", *modes], rows), "")
    out(f"({len(PRESETS)} presets x {len(modes)} rounding modes in "
        f"{time.perf_counter() - start:.1f} s)")
    return results


# -- value grids ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Grid:
    """What ``_plots.plot_value_grid`` draws for one format."""

    name: str
    title: str
    values: np.ndarray  # non-negative representable values, ascending
    values_title: str
    x: np.ndarray  # points of the positive range, ascending
    rel_spacing: np.ndarray  # ulp(x) / x at each point


def _round(x: torch.Tensor, fmt, mode: str) -> torch.Tensor:
    return quantize(x, fmt, rounding=mode).double()


def _spacing(x: torch.Tensor, fmt) -> torch.Tensor:
    """The gap between the two neighbours of each x in ``fmt`` (fp32's own where x is a
    value of the format and so is its fp32 successor)."""
    gap = _round(x, fmt, "up") - _round(x, fmt, "down")
    nxt = torch.nextafter(x, torch.tensor(math.inf))
    gap = torch.where(gap > 0, gap, _round(nxt, fmt, "up") - x.double())
    return torch.where(gap > 0, gap, nxt.double() - x.double())


def value_grid(name: str, points: int = 4096) -> Grid:
    """The grid of format ``name``; a block format shows its element format's grid (block
    scale 1).  Formats of ≤ ``ENUMERABLE_BITS`` bits list every non-negative value; wider ones
    64 consecutive values from 1."""
    fmt = get(name)
    title = f"{name}: {fmt.bits:g} bits, max {fmt.max:.6g}"
    if isinstance(fmt, BlockFormat):
        title += f"; the element grid {fmt.element!r} at block scale 1"
        fmt = fmt.element
    e_lo, e_hi = math.log2(fmt.min_subnormal), math.log2(fmt.max)
    # Midpoints of `points` equal steps in log2: never an end point, rarely a format value.
    x = torch.exp2(e_lo + (e_hi - e_lo) * (torch.arange(points, dtype=torch.float64) + 0.5)
                   / points).float()
    rel = (_spacing(x, fmt) / x.double()).numpy()
    if fmt.bits <= ENUMERABLE_BITS:
        # A log grid finer than the format's relative spacing puts a point in every gap, so
        # the neighbours of all points are all of the format's positive values.
        n = int(min(2**22, max(points, (e_hi - e_lo) * 2 ** (fmt.bits + 1))))
        dense = torch.exp2(torch.linspace(e_lo, e_hi, n, dtype=torch.float64)).float()
        both = torch.cat([_round(dense, fmt, "up"), _round(dense, fmt, "down"),
                          torch.zeros(1, dtype=torch.float64)])
        values = np.unique(both[(both >= 0) & (both <= fmt.max)].numpy())
        values_title = f"all {values.size} non-negative values"
    else:
        v = quantize(torch.ones(1), fmt).double()
        run = [v]
        for _ in range(63):
            run.append(_round(torch.nextafter(run[-1].float(), torch.tensor(math.inf)), fmt,
                              "up"))
        values = torch.cat(run).numpy()
        values_title = f"64 consecutive values from {values[0]:g}"
    return Grid(name, title, values, values_title, x.double().numpy(), rel)


def write_grids(names: Sequence[str], out_dir: str) -> List[str]:
    """``grid_<name>.png`` in ``out_dir`` for every format name."""
    from ._plots import plot_value_grid, safe_name

    return [plot_value_grid(value_grid(n), os.path.join(out_dir, f"grid_{safe_name(n)}.png"))
            for n in names]


# -- the command ---------------------------------------------------------------------------------
def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("formats", help="the format presets, their rounding errors, value grids",
                       description="Print every preset's constants and its rounding errors "
                       "under every mode; with --plot, write value grids of the named formats "
                       "instead of the error tables.")
    p.add_argument("--size", type=int, default=2**16,
                   help="values in the error tables' tensor, a multiple of 256 (default 65536)")
    p.add_argument("--seed", type=int, default=0, help="input and stochastic seed (default 0)")
    p.add_argument("--plot", nargs="+", metavar="NAME", help="formats to draw (any format name)")
    p.add_argument("--out", default=os.path.join("runs", "formats"),
                   help="folder of the plots (default runs/formats)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.plot:
        try:
            report(size=args.size, seed=args.seed)
        except ValueError as err:  # a bad --size: one line, not a traceback
            raise CliError(str(err)) from None
        return 0
    for name in args.plot:
        try:
            get(name)
        except (TypeError, ValueError) as err:
            raise CliError(f"--plot {name}: {err}") from None
    print(formats_table(args.plot), "", sep="\n")
    for path in write_grids(args.plot, args.out):
        print(f"wrote {path}")
    return 0
