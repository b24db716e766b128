"""Exact rounding oracles for the scalar formats, written from DESIGN.md's number-format
semantics and independent of ``lowbit``'s source (nothing here imports lowbit).

* ``FloatOracle``: a float format is described by its fields (``FloatSpec``); its value set is
  enumerated code by code as ``fractions.Fraction``; every neighbour, midpoint and last-digit
  parity is computed with Fractions and then stored as float64 only after checking that the
  float64 holds it exactly.  Rounding an fp32 input then needs nothing but exact comparisons
  (an fp32 value is exact in float64), so the vectorised oracle is exact.
* ``round_exp``: power-of-two scale formats (OCP E8M0), with the sign ignored as torch does.
* ``round_fixed``: fixed point and integers, one ``Fraction`` per element.
* ``philox4x32``: Philox4x32-10 on Python ints (Salmon et al., SC'11).

The tests import this module as ``_scalar_oracles`` (pytest puts ``tests/`` on ``sys.path``
because ``tests/conftest.py`` sits in a directory without ``__init__.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from fractions import Fraction
from typing import List, Optional, Tuple

import numpy as np

MODES = ("nearest", "nearest_away", "toward_zero", "up", "down", "odd")
FP32_MAX = Fraction((2**24 - 1) * 2**104)  # (2 - 2^-23) · 2^127
TWO = Fraction(2)


def _exact_f64(values) -> np.ndarray:
    """float64 array of Fractions, asserting that every conversion is exact."""
    out = np.array([float(v) for v in values], dtype=np.float64)
    for v, f in zip(values, out):
        assert Fraction(float(f)) == v, f"{v} is not exact in float64"
    return out


# ---------------------------------------------------------------------------------------------
# Floats
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FloatSpec:
    """A float format by its fields.  ``specials``: 'ieee' (top exponent = Inf/NaN), 'fn' (only
    the all-ones exponent and mantissa is NaN), 'fnuz' (NaN at the -0 code, no -0), 'none'."""

    exp: int
    man: int
    bias: int
    specials: str = "ieee"
    subnormals: bool = True
    signed: bool = True
    saturate: bool = False

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def has_neg_zero(self) -> bool:
        return self.signed and self.specials != "fnuz"


def _codes(spec: FloatSpec):
    """Yield (value, parity) of every finite non-negative code, enumerated from the fields."""
    top, mtop = 2**spec.exp - 1, 2**spec.man - 1
    for field in range(top + 1):
        scale = TWO ** (max(field, 1) - spec.bias)  # 2^(1 - bias) for subnormals
        hidden = 2**spec.man if field else 0
        for m in range(mtop + 1):
            if spec.specials == "ieee" and field == top:
                continue  # Inf (m = 0) and NaN
            if spec.specials == "fn" and field == top and m == mtop:
                continue  # the NaN code
            if field == 0 and m and not spec.subnormals:
                continue
            v = Fraction(hidden + m, 2**spec.man) * scale
            # The last significand digit: the integer significand is m (subnormal) or
            # 2^man + m (normal); both have m's parity.
            yield v, (m & 1) == 1, field, m


class FloatOracle:
    """Round fp32 arrays onto ``spec`` exactly, for every deterministic rounding mode."""

    def __init__(self, spec: FloatSpec):
        self.spec = spec
        codes = sorted(_codes(spec), key=lambda c: c[0])
        # A format past fp32's range keeps the values fp32 holds; beyond, fp32's overflow.
        self.beyond = codes[-1][0] > FP32_MAX
        codes = [c for c in codes if c[0] <= FP32_MAX]
        vmax, _, fmax, mmax = codes[-1]
        # The value above max on the format's grid with an unbounded exponent range (IEEE 754
        # §7.4 judges overflow there): the next code, or the next binade's first one.
        ulp = TWO ** (max(fmax, 1) - spec.bias - spec.man)
        above = (vmax + ulp, ((mmax + 1) & 1) == 1 and mmax + 1 < 2**spec.man)
        values = [c[0] for c in codes] + [above[0]]
        parity = [c[1] for c in codes] + [above[1]]
        self.values_frac = values[:-1]
        self.max_frac = vmax
        self.grid = _exact_f64(values)
        self.mids = _exact_f64([(a + b) / 2 for a, b in zip(values[:-1], values[1:])])
        self.lo_odd = np.array(parity[:-1])
        self.hi_odd = np.array(parity[1:])
        if not spec.subnormals:
            # The flush gap (0, 2^emin) is one step of 2^emin: 0 is its even end, 2^emin its
            # odd end (ties go to 0, round-to-odd gives 2^emin).
            self.lo_odd[0], self.hi_odd[0] = False, True
        self.vmax = float(vmax)

    @property
    def overflow_value(self) -> float:
        s = self.spec
        if self.beyond:
            return math.inf  # fp32's own overflow
        if s.saturate:
            return self.vmax
        return math.inf if s.specials == "ieee" else math.nan

    @property
    def inf_value(self) -> float:
        """What +Inf becomes."""
        s = self.spec
        if self.beyond or (s.specials == "ieee" and not s.saturate):
            return math.inf
        if s.saturate:
            return self.vmax
        return math.nan

    def magnitudes(self) -> np.ndarray:
        """The finite non-negative values (fp32-representable ones) as float64."""
        return self.grid[:-1].copy()

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):  # sNaN inputs, NaN compares
            return self._round(np.asarray(x, dtype=np.float32), mode)

    def _round(self, x: np.ndarray, mode: str) -> np.ndarray:
        neg = np.signbit(x)
        nan, inf = np.isnan(x), np.isinf(x)
        a = np.where(nan | inf, 0.0, np.abs(x.astype(np.float64)))
        n = len(self.grid)
        g = np.clip(np.searchsorted(self.grid, a, side="right") - 1, 0, n - 2)
        lo, hi, mid = self.grid[g], self.grid[g + 1], self.mids[g]
        lo_odd = self.lo_odd[g]
        exact = lo == a
        top = a > self.vmax
        if mode == "nearest":
            up = (a > mid) | ((a == mid) & lo_odd)
        elif mode == "nearest_away":
            up = a >= mid
        elif mode == "toward_zero":
            up = np.zeros_like(exact)
        elif mode == "up":
            up = ~neg
        elif mode == "down":
            up = neg.copy()
        elif mode == "odd":
            up = ~lo_odd
        else:
            raise ValueError(mode)
        up &= ~exact
        if mode in ("toward_zero", "odd"):
            up &= ~top  # never overflow: ±max
        r = np.where(up, hi, lo)
        r = np.where(exact, a, r)
        r = np.where(top & up, self.overflow_value, r)
        res = np.where(neg, -r, r)
        if not self.spec.has_neg_zero:
            res = np.where(res == 0, 0.0, res)
        res = np.where(inf, np.where(neg, -self.inf_value, self.inf_value), res)
        if not self.spec.signed:
            bad = neg & ~nan & (res != 0)
            res = np.where(bad, math.nan if self.spec.has_nan else 0.0, res)
        res = np.where(nan, math.nan, res)
        return res.astype(np.float32)


@functools.lru_cache(maxsize=None)
def float_oracle(spec: FloatSpec) -> FloatOracle:
    return FloatOracle(spec)


def next_up32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.nextafter(x, np.float32(np.inf))


def next_down32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.nextafter(x, np.float32(-np.inf))


def fp32_edge_values() -> np.ndarray:
    """±0, ±Inf, NaN, fp32 subnormals, min normal, max."""
    sub = np.array([1, 2, 3, 5, 0x3FFFFF, 0x400000, 0x400001, 0x7FFFFF], np.uint32).view(np.float32)
    fin = np.finfo(np.float32)
    vals = np.concatenate([
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, fin.tiny, fin.max, 1.0], np.float32),
        sub,
    ])
    return np.concatenate([vals, -vals])


def float_grid_inputs(oracle: FloatOracle, sample: Optional[int] = None) -> np.ndarray:
    """Every representable value, every midpoint and midpoint ±1 fp32 ulp, values beyond max
    (the midpoint above max ±1 ulp, 2·max, ...), specials and fp32 subnormals; both signs.

    With ``sample``, a format with more values keeps only the values of its lowest and highest
    binades (subnormals, the normal boundary, max) and ``sample`` others drawn at random (with
    the gaps on both sides of each): the cheap grid for the 16-bit formats' extra checks."""
    key = (oracle.spec, sample)
    if key not in _GRID_CACHE:
        _GRID_CACHE[key] = _grid_inputs(oracle, sample)
    return _GRID_CACHE[key].copy()


_GRID_CACHE: dict = {}


def _grid_inputs(oracle: FloatOracle, sample: Optional[int]) -> np.ndarray:
    n = len(oracle.grid) - 1  # finite values; grid[n] is the value above max
    idx = np.arange(n)
    if sample is not None and n > 4 * sample:
        edge = 2 ** (oracle.spec.man + 2)
        rng = np.random.default_rng(n)
        idx = np.unique(np.concatenate([
            idx[:edge], idx[-edge:], rng.choice(n, size=sample, replace=False)]))
    vals = oracle.grid[idx]
    gaps = np.unique(np.concatenate([idx, np.maximum(idx - 1, 0)]))
    mids = oracle.mids[gaps]  # includes the midpoint between max and the value above it
    above = oracle.grid[-1]
    extra = [above, 2 * oracle.vmax, 4 * oracle.vmax, above + (above - oracle.vmax)]
    v32 = vals.astype(np.float32)
    assert np.array_equal(v32.astype(np.float64), vals)
    m32 = mids.astype(np.float32)
    assert np.array_equal(m32.astype(np.float64), mids), "midpoints must be exact in fp32"
    e32 = np.array(extra, np.float64)
    e32 = e32[e32 <= float(FP32_MAX)].astype(np.float32)
    parts = [v32, next_up32(v32), next_down32(v32), m32, next_up32(m32), next_down32(m32),
             e32, next_up32(e32), next_down32(e32)]
    pos = np.concatenate(parts)
    pos = pos[np.isfinite(pos) & (pos >= 0)]
    x = np.concatenate([pos, -pos, fp32_edge_values()])
    return np.unique(x.view(np.uint32)).view(np.float32)


def random_fp32(n: int, seed: int, lo_exp: Optional[int] = None,
                hi_exp: Optional[int] = None) -> np.ndarray:
    """``n`` fp32 values: random bit patterns over all binades (NaN, Inf and subnormals
    included), or with the biased exponent field drawn from [lo_exp, hi_exp] when given."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    if lo_exp is not None:
        lo_f = min(max(lo_exp + 127, 0), 254)
        hi_f = min(max(hi_exp + 127, lo_f), 254)
        field = rng.integers(lo_f, hi_f + 1, size=n)
        bits = (bits & np.uint32(0x807FFFFF)) | (field.astype(np.uint32) << np.uint32(23))
    return bits.view(np.float32)


# ---------------------------------------------------------------------------------------------
# Power-of-two scale formats (E8M0)
# ---------------------------------------------------------------------------------------------
def round_exp(x: np.ndarray, bits: int, bias: int, mode: str, saturate: bool = False) -> np.ndarray:
    """Round onto {2^k : -bias <= k <= 2^bits - 2 - bias}, sign ignored (torch's e8m0fnu
    cast): the implicit bit is the last kept digit, so a tie 1.5·2^k (odd digit) rounds up
    under both nearest modes and round-to-odd keeps 2^k; inputs below 2^-bias (0 included)
    give 2^-bias; NaN, ±Inf and overflow give NaN (overflow: 2^emax when saturating;
    ±Inf: 2^emax too)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _round_exp(np.asarray(x, np.float32), bits, bias, mode, saturate)


def _round_exp(x, bits, bias, mode, saturate):
    emin, emax = -bias, 2**bits - 2 - bias
    a = np.abs(x.astype(np.float64))
    fin = np.isfinite(a)
    a_f = np.where(fin & (a > 0), a, 1.0)
    _, ex = np.frexp(a_f)
    lo = np.ldexp(1.0, ex - 1)  # 2^floor(log2 a), exact
    exact = lo == a_f
    if mode in ("nearest", "nearest_away"):
        up = a_f >= 1.5 * lo
    elif mode == "up":
        up = np.ones_like(exact)
    elif mode in ("toward_zero", "down", "odd"):
        up = np.zeros_like(exact)
    else:
        raise ValueError(mode)
    r = np.where(up & ~exact, 2 * lo, lo)
    r = np.where(a_f < 2.0**emin, 2.0**emin, r)
    r = np.where(fin & (a == 0), 2.0**emin, r)
    top = 2.0**emax
    over = r > top
    r = np.where(over, top if saturate else np.nan, r)
    r = np.where(np.isinf(a), top if saturate else np.nan, r)
    r = np.where(np.isnan(a), np.nan, r)
    return r.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Fixed point and integers
# ---------------------------------------------------------------------------------------------
def round_int(a: Fraction, mode: str) -> int:
    """Round a Fraction to an integer by ``mode``."""
    fl, ce = math.floor(a), math.ceil(a)
    if fl == ce:
        return fl
    if mode == "nearest":
        return round(a)  # Fraction.__round__ rounds half to even
    if mode == "nearest_away":
        k = math.floor(abs(a) + Fraction(1, 2))
        return k if a > 0 else -k
    if mode == "toward_zero":
        return math.trunc(a)
    if mode == "up":
        return ce
    if mode == "down":
        return fl
    if mode == "odd":
        return fl if fl % 2 else ce
    raise ValueError(mode)


def round_fixed(x: float, fl: int, qmin: Optional[int], qmax: Optional[int], mode: str,
                zero_sign_follows_input: bool = True) -> float:
    """Round ``x`` onto k·2^-fl with k clamped to [qmin, qmax] (None: unbounded).  A zero
    result carries the input's sign (IEEE 754 roundToIntegral) when
    ``zero_sign_follows_input`` and the range has negative values; otherwise it is +0."""
    if math.isnan(x):
        return math.nan
    if math.isinf(x):
        if qmin is None:
            return x
        return float(Fraction(qmax if x > 0 else qmin) / TWO**fl)
    k = round_int(Fraction(x) * TWO**fl, mode)
    if qmin is not None:
        k = min(max(k, qmin), qmax)
    v = Fraction(k) / TWO**fl
    if abs(v) > FP32_MAX:  # unbounded grid past fp32's range: fp32's overflow
        return math.copysign(math.inf, k)
    out = float(v)
    assert Fraction(out) == v
    if k == 0:
        negative_ok = zero_sign_follows_input and (qmin is None or qmin < 0)
        return math.copysign(0.0, x) if negative_ok else 0.0
    return out


# ---------------------------------------------------------------------------------------------
# Philox4x32-10
# ---------------------------------------------------------------------------------------------
_M0, _M1, _W0, _W1, _MASK = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF


def philox4x32(ctr: Tuple[int, int, int, int], key: Tuple[int, int], rounds: int = 10):
    """Philox4x32 (Random123's philox4x32_R) on Python ints."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = _M0 * c0, _M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & _MASK, p1 & _MASK, \
            ((p0 >> 32) ^ c3 ^ k1) & _MASK, p0 & _MASK
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return c0, c1, c2, c3


def element_words(n: int, seed: int) -> List[int]:
    """The 32-bit words of logical elements 0..n-1 under lowbit's documented layout:
    element i uses word i & 3 of counter (i >> 2 mod 2^32, i >> 34, 0, 0), key = seed."""
    key = (seed & _MASK, (seed >> 32) & _MASK)
    out = []
    for c in range((n + 3) // 4):
        out.extend(philox4x32((c & _MASK, c >> 32, 0, 0), key))
    return out[:n]


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------
def assert_same(got, expected, x, what: str = "") -> None:
    """Bit-exact comparison of fp32 results (the sign of zero counts; every NaN is equal)."""
    g = np.asarray(got.numpy() if hasattr(got, "numpy") else got, np.float32).ravel()
    e = np.asarray(expected, np.float32).ravel()
    xs = np.asarray(x.numpy() if hasattr(x, "numpy") else x, np.float32).ravel()
    assert g.shape == e.shape == xs.shape, (g.shape, e.shape, xs.shape)
    gn, en = np.isnan(g), np.isnan(e)
    bad = (gn != en) | (~gn & ~en & (g.view(np.uint32) != e.view(np.uint32)))
    if bad.any():
        idx = np.flatnonzero(bad)[:12]
        lines = [f"  x={xs[i]!r:>16} ({xs[i:i+1].view(np.uint32)[0]:08x})  got={g[i]!r}  "
                 f"expected={e[i]!r}" for i in idx]
        raise AssertionError(f"{bad.sum()} of {xs.size} results differ {what}:\n"
                             + "\n".join(lines))
