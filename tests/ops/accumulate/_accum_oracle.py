"""An exact, sequential oracle of simulated accumulation, written from DESIGN.md ("Number-format
semantics", "Accumulation") and ``lowbit.ops.accumulate``'s documented contract, in Python
``fractions`` (nothing here imports lowbit; the Philox stream comes from ``_scalar_oracles``).

Values are ``Val``: an exact ``Fraction`` with a sign bit (so -0 exists), or ±Inf / NaN.  A
format is described by its fields only (``FloatSpec``, ``FixedSpec``); its range, grid and
specials are derived here.  ``round_val`` rounds an exact value once; ``gemm`` runs the
accumulation of one output element by element and step by step.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Callable, List, Optional, Sequence, Union

from _scalar_oracles import philox4x32

TWO = Fraction(2)
FP32_MAX = Fraction((2**24 - 1) * 2**104)
CARRIER_QMIN = -149  # 2^-149: the fp32 carrier's step; no grid is finer
MODES = ("nearest", "nearest_away", "toward_zero", "up", "down", "odd", "stochastic")


@dataclasses.dataclass(frozen=True)
class Val:
    q: Optional[Fraction]  # None: Inf or NaN
    neg: bool = False
    nan: bool = False

    @staticmethod
    def of(x: float) -> "Val":
        if math.isnan(x):
            return Val(None, False, True)
        neg = math.copysign(1.0, x) < 0
        return Val(None, neg) if math.isinf(x) else Val(Fraction(x), neg)

    def to_float(self) -> float:
        if self.nan:
            return math.nan
        if self.q is None:
            return -math.inf if self.neg else math.inf
        if self.q == 0:
            return -0.0 if self.neg else 0.0
        out = float(self.q)
        assert Fraction(out) == self.q, f"{self.q} is not a float64"
        return out


NAN = Val(None, False, True)


def mul(a: Val, b: Val) -> Val:
    neg = a.neg != b.neg
    if a.nan or b.nan:
        return NAN
    if a.q is None or b.q is None:
        other = b if a.q is None else a
        return NAN if other.q == 0 else Val(None, neg)
    return Val(a.q * b.q, neg)


def add(a: Val, b: Val) -> Val:
    """Exact sum; an exact zero is -0 only when both terms are -0 (IEEE 754 §6.3, nearest)."""
    if a.nan or b.nan:
        return NAN
    if a.q is None or b.q is None:
        if a.q is None and b.q is None and a.neg != b.neg:
            return NAN
        return a if a.q is None else b
    q = a.q + b.q
    return Val(q, (a.neg and b.neg) if q == 0 else q < 0)


def neg(a: Val) -> Val:
    return a if a.nan else Val(a.q if a.q is None else -a.q, not a.neg)


@dataclasses.dataclass(frozen=True)
class FloatSpec:
    exp: int
    man: int
    bias: int
    specials: str = "ieee"  # ieee | fn | fnuz | none
    subnormals: bool = True
    signed: bool = True
    saturate: bool = False

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def max(self) -> Fraction:
        top = 2**self.exp - 1
        ieee_top = self.specials == "ieee" or (self.specials == "fn" and self.man == 0)
        field = top - 1 if ieee_top else top
        man = 2**self.man - 2 if self.specials == "fn" and self.man > 0 else 2**self.man - 1
        return TWO ** (field - self.bias) * (1 + Fraction(man, 2**self.man))

    @property
    def beyond(self) -> bool:
        return self.max > FP32_MAX

    @property
    def top(self) -> Fraction:
        """The largest value the fp32 carrier holds (the format's max unless beyond)."""
        return (2 - TWO**-self.man) * TWO**127 if self.beyond else self.max

    @property
    def neg_zero(self) -> bool:
        return self.signed and self.specials != "fnuz"

    def grid(self, x: Fraction) -> int:
        e = math.floor(math.log2(x))  # corrected below: log2 of a Fraction may be off by one
        while TWO**e > x:
            e -= 1
        while TWO ** (e + 1) <= x:
            e += 1
        if self.subnormals:
            q = max(e, self.emin) - self.man
        else:
            q = self.emin if e < self.emin else e - self.man
        return max(q, CARRIER_QMIN)


@dataclasses.dataclass(frozen=True)
class FixedSpec:
    step_exp: int  # grid 2^step_exp
    qmin: int
    qmax: int


Spec = Union[FloatSpec, FixedSpec]


def _up(k: int, r: Fraction, negative: bool, mode: str, word: Optional[int]) -> bool:
    if mode == "nearest":
        return r > Fraction(1, 2) or (r == Fraction(1, 2) and k % 2 == 1)
    if mode == "nearest_away":
        return r >= Fraction(1, 2)
    if mode == "toward_zero":
        return False
    if mode == "up":
        return r > 0 and not negative
    if mode == "down":
        return r > 0 and negative
    if mode == "odd":
        return r > 0 and k % 2 == 0
    assert mode == "stochastic" and word is not None
    return math.floor(r * 2**32) + word >= 2**32


def round_val(x: Val, spec: Spec, mode: str, word: Optional[int] = None) -> Val:
    """``x`` rounded once onto ``spec`` (the result is an fp32 value or a special)."""
    if isinstance(spec, FixedSpec):
        return _round_fixed(x, spec, mode, word)
    if x.nan:
        return NAN
    if x.q is None:
        if spec.beyond or (spec.specials == "ieee" and not spec.saturate):
            out = x
        elif spec.saturate:
            out = Val(-spec.top if x.neg else spec.top, x.neg)
        else:
            return NAN
    elif x.q == 0:
        out = x
    else:
        a = abs(x.q)
        q = spec.grid(a)
        k = math.floor(a / TWO**q)
        k += _up(k, a / TWO**q - k, x.neg, mode, word)
        v = k * TWO**q
        if v > spec.top:
            v = _overflow(spec, mode, x.neg)
        if v is not None:
            out = Val(-v if x.neg else v, x.neg)
        elif spec.specials == "ieee" or spec.beyond:
            out = Val(None, x.neg)
        else:
            return NAN
    if not spec.signed and out.neg and not (out.q == 0):
        return NAN if spec.specials != "none" else Val(Fraction(0))
    if not spec.neg_zero and out.q == 0:
        return Val(Fraction(0))
    return out


def _overflow(spec: FloatSpec, mode: str, negative: bool) -> Optional[Fraction]:
    """IEEE 754 §7.4: None means the overflow value (Inf or NaN), else the magnitude kept."""
    if spec.saturate and not spec.beyond:
        return spec.top
    if mode in ("toward_zero", "odd") or (mode == "up" and negative) or (
            mode == "down" and not negative):
        return spec.top
    return None


def _round_fixed(x: Val, spec: FixedSpec, mode: str, word: Optional[int]) -> Val:
    lo, hi = spec.qmin * TWO**spec.step_exp, spec.qmax * TWO**spec.step_exp
    if x.nan:
        return NAN
    if x.q is None:
        return Val(lo if x.neg else hi, x.neg and lo < 0)
    a = abs(x.q)
    k = math.floor(a / TWO**spec.step_exp)
    k += _up(k, a / TWO**spec.step_exp - k, x.neg, mode, word)
    v = -k * TWO**spec.step_exp if x.neg else k * TWO**spec.step_exp
    v = min(max(v, lo), hi)
    negative = x.neg if v == 0 else v < 0
    return Val(v, negative and spec.qmin < 0)


# ---------------------------------------------------------------------------------------------
# The accumulation of one output
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Acc:
    """An accumulation: formats as specs, roundings as mode names (documented semantics)."""

    acc: Spec
    acc_mode: str = "nearest"
    mul: Optional[Spec] = None
    mul_mode: str = "nearest"
    chunk: Optional[int] = None
    chunk_acc: Optional[Spec] = None  # None with chunk: acc
    chunk_mode: Optional[str] = None  # None: acc_mode
    compensated: bool = False


def stream_word(seed: int, t: int, slot: int) -> int:
    """The documented word of rounding event (step t, slot): element 8t + slot of the stream,
    i.e. word slot & 3 of Philox on counter 2t + (slot >> 2)."""
    ctr = 2 * t + (slot >> 2)
    key = (seed & 0xFFFFFFFF, seed >> 32)
    return philox4x32((ctr & 0xFFFFFFFF, ctr >> 32, 0, 0), key)[slot & 3]


def dot(a: Sequence[float], b: Sequence[float], spec: Acc,
        word: Callable[[int, int], Optional[int]] = lambda k, slot: None) -> Val:
    """One output: ``a`` a row of A, ``b`` a column of B; ``word(k, slot)`` the random word."""
    s, c = Val(Fraction(0)), Val(Fraction(0))
    kdim = len(a)
    for k in range(kdim):
        p = mul(Val.of(a[k]), Val.of(b[k]))
        if spec.mul is not None:
            p = round_val(p, spec.mul, spec.mul_mode, word(k, 0))
        if spec.compensated:
            y = round_val(add(p, neg(c)), spec.acc, spec.acc_mode, word(k, 3))
            t = round_val(add(s, y), spec.acc, spec.acc_mode, word(k, 1))
            z = round_val(add(t, neg(s)), spec.acc, spec.acc_mode, word(k, 4))
            c = round_val(add(z, neg(y)), spec.acc, spec.acc_mode, word(k, 5))
            s = t
        elif spec.chunk is not None:
            c = round_val(add(c, p), spec.chunk_acc or spec.acc, spec.chunk_mode or spec.acc_mode,
                          word(k, 1))
            if (k + 1) % spec.chunk == 0 or k == kdim - 1:
                s = round_val(add(s, c), spec.acc, spec.acc_mode, word(k, 2))
                c = Val(Fraction(0))
        else:
            s = round_val(add(s, p), spec.acc, spec.acc_mode, word(k, 1))
    return s


def gemm(a: List[List[List[float]]], b: List[List[List[float]]], spec: Acc,
         seed: Optional[int] = None) -> List[List[List[float]]]:
    """``a`` (B, M, K) and ``b`` (B, K, N) as nested lists; the (B, M, N) result as floats."""
    batch, m, kdim, n = len(a), len(a[0]), len(a[0][0]), len(b[0][0])
    out = []
    for bi in range(batch):
        rows = []
        for i in range(m):
            row = []
            for j in range(n):
                base = ((bi * m + i) * n + j) * kdim

                def word(k, slot, base=base):
                    return None if seed is None else stream_word(seed, base + k, slot)

                col = [b[bi][k][j] for k in range(kdim)]
                row.append(dot(a[bi][i], col, spec, word).to_float())
            rows.append(row)
        out.append(rows)
    return out


def spec_of(fmt) -> Spec:
    """The oracle's description of a lowbit format, from its defining fields only."""
    if fmt is None:
        return None
    if hasattr(fmt, "man"):
        return FloatSpec(fmt.exp, fmt.man, fmt.bias, str(fmt.specials), fmt.subnormals,
                         fmt.signed, fmt.saturate)
    if hasattr(fmt, "wl"):
        return FixedSpec(-fmt.fl, -(2 ** (fmt.wl - 1)) + int(fmt.symmetric), 2 ** (fmt.wl - 1) - 1)
    if fmt.signed:
        return FixedSpec(0, -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1)
    return FixedSpec(0, 0, 2**fmt.bits - 1)
