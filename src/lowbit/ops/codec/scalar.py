"""Value <-> code maps of the scalar formats, in vectorised torch integer ops.

``encode_*`` take fp32 values that lie on the format's grid (results of ``lowbit.quantize``),
times ``2^shift`` for the elements of power-of-two-scaled blocks, and return int32 codes (the
unsigned ``fmt.bits``-bit pattern; for 32-bit formats the int32 of the same bits).  They read
the exact fp32 bits, so nothing is rounded here.  ``decode_*`` are their inverses: they build
``k · 2^q`` with at most one fp32 rounding, which never happens for codes written by
``encode_*``.  NaN in a format without a NaN code is left to the caller (its code here is
unspecified).  ``lowbit.ops.codec.fast`` holds faster paths for common formats; these are the
general ones (and the specification the fast paths are tested against).

Codes:

* ``FloatFormat``: sign bit (when ``signed``) above ``exp`` exponent-field bits above ``man``
  mantissa bits, IEEE 754 §3.4.  ±Inf: the Inf code (``ieee``), or the ±max code where the
  format's range passes fp32's: every code whose exponent ``field - bias`` passes fp32's
  (>= 128) decodes to ±Inf, as the carrier does (also for block elements, whose rounding
  ``quantize`` bounds by fp32's range before the scale applies).  NaN: ``ieee``: exponent
  all ones, mantissa ``1 << (man-1)`` (quiet), with the NaN's sign; ``fn``: all ones, with
  the NaN's sign; ``fnuz``: ``1 << (bits-1)`` (0x80 for 8 bits).
* ``ExpFormat``: ``E + bias`` for ``2^E``; NaN is all ones.
* ``FixedPoint`` / ``IntFormat``: the integer ``k`` of ``k · 2^-fl`` in ``bits``-bit two's
  complement (unsigned for ``IntFormat(signed=False)``).  A zero is +0: two's complement has
  no -0, so the -0 that ``quantize`` keeps for a small negative input decodes as +0.
"""

from __future__ import annotations

from typing import Union

import torch

from ...formats import ExpFormat, FixedPoint, FloatFormat, IntFormat
from ...formats.modes import Specials

__all__ = [
    "fp32_parts", "compose_exact", "encode_float", "decode_float", "encode_exp", "decode_exp",
    "encode_fixed", "decode_fixed", "has_nan_code", "nan_zero_code", "fp32_exact", "pow2",
    "float_consts", "decode_general", "encode_general",
]

Shift = Union[int, torch.Tensor]
_I32 = torch.int32
_NAN = float("nan")


def fp32_parts(v: torch.Tensor):
    """``(neg, e, sig, zero, nonfinite, nan)`` of an fp32 tensor, all int32/bool.

    For a finite non-zero ``v``: ``|v| = sig · 2^(e - 23)`` with ``2^23 <= sig < 2^24``
    (fp32 subnormals are normalised too), so ``e = floor(log2 |v|)``.
    """
    bits = v.view(_I32)
    neg = bits < 0
    a = bits & 0x7FFFFFFF
    sub = a < 0x00800000  # zero or fp32 subnormal: scale by 2^64 (exact) to normalise
    an = torch.where(sub, (a.view(torch.float32) * 2.0**64).view(_I32), a)
    e = (an >> 23) - 127
    e = torch.where(sub, e - 64, e)
    sig = (an & 0x7FFFFF) | 0x800000
    return neg, e, sig, a == 0, a >= 0x7F800000, a > 0x7F800000


def pow2(q: torch.Tensor) -> torch.Tensor:
    """fp32 ``2^q`` for integer ``q`` in [-149, 127] (subnormal powers included)."""
    q = q.to(_I32)
    normal = (q + 127) << 23
    sub = torch.ones_like(q) << (q + 149).clamp(0, 22)
    return torch.where(q >= -126, normal, sub).view(torch.float32)


def compose_exact(k: torch.Tensor, q: Shift, lo: int = -126, hi: int = 127) -> torch.Tensor:
    """fp32 ``k · 2^q`` for integer ``k`` (|k| < 2^25) and any integer ``q``, rounded once.

    ``lo, hi`` bound ``q`` when the caller knows them: inside [-126, 127] one exact product
    suffices.  Otherwise ``k · 2^clamp(q)`` is exact (a normal number or ±Inf past the
    range) and a second factor ``2^(q - clamp(q))`` rounds once, to fp32's subnormals or 0.
    """
    kf = k.to(torch.float32)
    if not isinstance(q, torch.Tensor):
        q = torch.tensor(q, dtype=_I32, device=k.device)
    q = q.to(_I32)
    q1 = q.clamp(-126, 127)
    out = kf * ((q1 + 127) << 23).view(torch.float32)
    if lo < -126 or hi > 127:
        out = out * pow2((q - q1).clamp(-149, 127))
    return out


def has_nan_code(fmt) -> bool:
    """True when ``fmt`` has an encoding for NaN."""
    if isinstance(fmt, ExpFormat):
        return True
    if isinstance(fmt, FloatFormat):
        return fmt.specials is not Specials.NONE and not (
            fmt.specials is Specials.IEEE and fmt.man == 0)
    return False


def nan_zero_code(fmt) -> int:
    """The code ``nan="zero"`` stores for NaN: -0 where the format has it (ml_dtypes' FP4/FP6
    convention), else 0."""
    if isinstance(fmt, FloatFormat) and fmt.has_neg_zero:
        return _i32(1 << (fmt.bits - 1))
    return 0


def _i32(code: int) -> int:
    """A 32-bit code as the int32 with the same bits."""
    return code - 2**32 if code >= 2**31 else code


# -- FloatFormat ------------------------------------------------------------------------------
def float_consts(fmt: FloatFormat):
    top = 2**fmt.exp - 1
    mmask = 2**fmt.man - 1
    sign_bit = 1 << (fmt.exp + fmt.man) if fmt.signed else 0
    return top, mmask, sign_bit


def _max_body(fmt: FloatFormat) -> int:
    top, mmask, _ = float_consts(fmt)
    if fmt.specials is Specials.IEEE or (fmt.specials is Specials.FN and fmt.man == 0):
        return ((top - 1) << fmt.man) | mmask
    if fmt.specials is Specials.FN:
        return (top << fmt.man) | (mmask - 1)
    return (top << fmt.man) | mmask


def _with_sign(code: torch.Tensor, neg: torch.Tensor, sign_bit: int) -> torch.Tensor:
    if not sign_bit:
        return code
    if sign_bit == 1 << 31:
        return torch.where(neg, code | -(2**31), code)
    return code | (neg.to(_I32) << (sign_bit.bit_length() - 1))


def encode_float(v: torch.Tensor, fmt: FloatFormat, shift: Shift = 0) -> torch.Tensor:
    """Codes of fp32 values ``v`` on the grid of ``fmt`` times ``2^shift``."""
    top, mmask, sign_bit = float_consts(fmt)
    neg, e, sig, zero, nonfinite, nan = fp32_parts(v)
    e = e - shift if isinstance(shift, int) else e - shift.to(_I32)
    emin = 1 - fmt.bias
    normal = e >= emin
    field = torch.where(normal, e + fmt.bias, 0)
    m_normal = (sig >> (23 - fmt.man)) & mmask
    m_sub = sig >> (23 - fmt.man + emin - e).clamp(0, 31)
    body = (field << fmt.man) | torch.where(normal, m_normal, m_sub)
    body = torch.where(zero, 0, body)
    if fmt.specials is Specials.IEEE:
        inf_body = top << fmt.man
        nan_body = inf_body | (1 << (fmt.man - 1) if fmt.man else 0)
    else:  # an Inf result only comes from the carrier's overflow: the ±max code
        inf_body = _max_body(fmt)
        nan_body = (top << fmt.man) | mmask
    body = torch.where(nonfinite, inf_body, body)
    body = torch.where(nan, nan_body, body)
    code = _with_sign(body, neg, sign_bit)
    if fmt.specials is Specials.FNUZ:
        code = torch.where(nan, _i32(1 << (fmt.bits - 1)), torch.where(zero, 0, code))
    return code


def decode_float(code: torch.Tensor, fmt: FloatFormat, shift: Shift = 0) -> torch.Tensor:
    """fp32 values of int32 ``code`` (times ``2^shift``)."""
    top, mmask, sign_bit = float_consts(fmt)
    m = code & mmask
    field = (code >> fmt.man) & top
    full = torch.where(field > 0, m | (1 << fmt.man), m)
    q = field.clamp(min=1) - (fmt.bias + fmt.man)
    if isinstance(shift, torch.Tensor):
        q, lo, hi = q + shift.to(_I32), -(2**31), 2**31
    else:
        q = q + shift
        lo, hi = 1 - fmt.bias - fmt.man + shift, top - fmt.bias - fmt.man + shift
    mag = compose_exact(full, q, lo, hi)
    if fmt.exceeds_carrier:
        # Element exponents past fp32's are never written but as the carrier's ±Inf (block
        # elements too: their rounding is bounded by fp32's range before the scale applies).
        mag = torch.where(field - fmt.bias >= 128, float("inf"), mag)
    neg = ((code >> (fmt.exp + fmt.man)) & 1) == 1 if sign_bit else None
    if neg is not None:
        mag = torch.where(neg, -mag, mag)
    if fmt.specials is Specials.IEEE:
        is_inf, is_nan = (field == top) & (m == 0), (field == top) & (m != 0)
        mag = torch.where(is_inf, mag * float("inf"), mag)  # ±Inf: mag is ±2^(emax+1)
    elif fmt.specials is Specials.FN:
        is_nan = (field == top) & (m == mmask)
    elif fmt.specials is Specials.FNUZ:
        is_nan, neg = code == _i32(1 << (fmt.bits - 1)), None
    else:
        return mag
    nan = torch.full_like(mag, _NAN)
    return torch.where(is_nan, nan if neg is None else torch.where(neg, -nan, nan), mag)


# -- ExpFormat ---------------------------------------------------------------------------------
def encode_exp(v: torch.Tensor, fmt: ExpFormat) -> torch.Tensor:
    """Codes of positive powers of two ``v`` (or NaN) in ``fmt``."""
    _, e, _, _, _, nan = fp32_parts(v)
    top = 2**fmt.bits - 1
    return torch.where(nan, top, (e + fmt.bias).clamp(0, top - 1))


def decode_exp(code: torch.Tensor, fmt: ExpFormat) -> torch.Tensor:
    top = 2**fmt.bits - 1
    v = compose_exact(torch.ones_like(code), code - fmt.bias, -fmt.bias, top - 1 - fmt.bias)
    return torch.where(code == top, _NAN, v)


# -- FixedPoint / IntFormat --------------------------------------------------------------------
def encode_fixed(v: torch.Tensor, fmt: Union[FixedPoint, IntFormat],
                 shift: Shift = 0) -> torch.Tensor:
    """Two's complement codes of ``v = k · 2^(quantum_exp + shift)``.

    Raises:
        ValueError: a value (or ±Inf) outside ``[qmin, qmax]`` steps, which only an unclamped
            ``FixedPoint`` produces: ``wl`` bits cannot hold it.
    """
    neg, e, sig, zero, nonfinite, nan = fp32_parts(v)
    q = fmt.quantum_exp + (shift.to(_I32) if isinstance(shift, torch.Tensor) else shift)
    t = (e - 23 - q).to(torch.int64)
    sig = sig.to(torch.int64)
    k = torch.where(t >= 0, sig << t.clamp(0, 40), sig >> (-t).clamp(0, 40))
    k = torch.where(zero | nan, 0, k)
    k = torch.where(neg, -k, k)
    if fmt.clamp:  # ±Inf only comes from a block value past fp32's range: the extreme code
        k = torch.where(nonfinite & ~nan, torch.where(neg, fmt.qmin, fmt.qmax), k)
    else:
        bad = (nonfinite & ~nan) | (k > fmt.qmax) | (k < fmt.qmin)
        if bool(bad.any()):
            raise ValueError(
                f"{fmt!r} (clamp=False) cannot encode values outside [{fmt.lowest}, {fmt.max}] "
                f"in {fmt.bits} bits (the first is {v[bad].flatten()[0].item()}); use a "
                "clamping format (clamp=True) or a wider word length")
    return (k & ((1 << fmt.bits) - 1)).to(_I32)


def decode_fixed(code: torch.Tensor, fmt: Union[FixedPoint, IntFormat],
                 shift: Shift = 0) -> torch.Tensor:
    k = code
    if fmt.qmin < 0:  # sign-extend
        k = code - (((code >> (fmt.bits - 1)) & 1) << fmt.bits)
    if isinstance(shift, torch.Tensor):
        return compose_exact(k, shift.to(_I32) + fmt.quantum_exp, -(2**31), 2**31)
    q = fmt.quantum_exp + shift
    return compose_exact(k, q, q, q)


def fp32_exact(fmt) -> bool:
    """True when every finite value of ``fmt`` is an fp32 number that the fast paths reach
    by exact fp32 products: a float format's normals are fp32 normals (``emin >= -126``) and
    nothing passes fp32's range; a fixed-point step ``2^-fl`` is an fp32 normal power."""
    if isinstance(fmt, FloatFormat):
        return not fmt.exceeds_carrier and fmt.emin >= -126
    if isinstance(fmt, ExpFormat):
        return -149 <= fmt.emin and fmt.emax <= 127
    return -126 <= -fmt.quantum_exp <= 127


def _encode_exp(v: torch.Tensor, fmt: ExpFormat, shift: Shift = 0) -> torch.Tensor:
    return encode_exp(v, fmt)  # powers of two are never shifted


def _decode_exp(code: torch.Tensor, fmt: ExpFormat, shift: Shift = 0) -> torch.Tensor:
    return decode_exp(code, fmt)


# One codec per format family: (encode, decode), each ``fn(tensor, fmt, shift)``.
_CODECS = {
    FloatFormat: (encode_float, decode_float),
    ExpFormat: (_encode_exp, _decode_exp),
    FixedPoint: (encode_fixed, decode_fixed),
    IntFormat: (encode_fixed, decode_fixed),
}


def encode_general(v: torch.Tensor, fmt, shift: Shift = 0) -> torch.Tensor:
    """Codes of any scalar format by the general paths above (``shift``: not ExpFormat)."""
    return _CODECS[type(fmt)][0](v, fmt, shift)


def decode_general(code: torch.Tensor, fmt, shift: Shift = 0) -> torch.Tensor:
    """Values of any scalar format's codes by the general paths above."""
    return _CODECS[type(fmt)][1](code, fmt, shift)
