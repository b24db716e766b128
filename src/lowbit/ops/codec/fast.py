"""Fast exact value <-> code paths for common formats; ``scalar`` is their specification.

Encoding (values on the format's grid, from ``quantize``):

* a format with the codes of a torch dtype (``fp16``, ``bf16``, ``e5m2``, ``e4m3fn``, the
  ``fnuz`` ones; saturation aside) is cast to it, which is exact, NaN made canonical;
* another float format whose values all lie in such a dtype (``e2m1fn``, ``e3m2fn``,
  ``e2m3fn`` in ``float8_e4m3fn``, ``e3m4`` in ``float16``...) is cast to it and the
  carrier's code mapped to the format's by a table;
* fixed point and integers of at most 16 bits: one multiply and an integer cast;
* other float formats: the code computed from the fp32 bits in a dozen integer operations,
  or the general path of ``scalar``.

Decoding is torch's widening cast for the dtypes above, else a table lookup for formats of at
most 16 bits: for 1, 2, 4 and 8 bits each packed byte indexes a table of its 8/b values, so
unpacking costs nothing more.  NaN codes are the
canonical ones of ``scalar`` on every path (the tests compare every code).
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple, Union

import torch

from ...formats import FixedPoint, FloatFormat, IntFormat
from ...formats.modes import Specials
from .bitstream import unpack_bits
from .scalar import (
    decode_general, encode_general, float_consts, fp32_exact, has_nan_code, nan_zero_code,
)

__all__ = ["encode_values", "decode_values", "decode_codes"]

_I32 = torch.int32
_NAN_SENTINEL = 0xFF  # a table's code for NaN in formats of at most 7 bits without a NaN code

# torch dtypes, with the FloatFormat of their codes and values
_NATIVE = (
    (torch.float8_e4m3fn, FloatFormat(4, 3, specials=Specials.FN)),
    (torch.float8_e5m2, FloatFormat(5, 2)),
    (torch.float8_e4m3fnuz, FloatFormat(4, 3, specials=Specials.FNUZ)),
    (torch.float8_e5m2fnuz, FloatFormat(5, 2, specials=Specials.FNUZ)),
    (torch.float16, FloatFormat(5, 10)),
    (torch.bfloat16, FloatFormat(8, 7)),
)
_CARRIERS = _NATIVE[:5]  # exact carriers of other formats' values (bf16's table is too big)
_DEVICE_TABLES: Dict[Tuple[str, object, torch.device], torch.Tensor] = {}


def _on(kind: str, fmt, device: torch.device, build) -> torch.Tensor:
    key = (kind, fmt, device)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = build(fmt).to(device)
    return _DEVICE_TABLES[key]


# -- encoding ----------------------------------------------------------------------------------
def _carrier_for(fmt: FloatFormat) -> Optional[int]:
    """Index in ``_CARRIERS`` of a dtype holding every value ``quantize`` gives for ``fmt``
    (its signed zeros, its Inf where it has one, NaN), or None."""
    for i, (_, c) in enumerate(_CARRIERS):
        if not fmt.fits_in(c) or fmt.exceeds_carrier or fmt.bits > 16:
            continue
        if fmt.has_neg_zero and not c.has_neg_zero:
            continue
        if fmt.has_inf and not c.has_inf:
            continue
        return i
    return None


def _native_dtype(fmt) -> Optional[torch.dtype]:
    """The torch dtype whose codes and values are ``fmt``'s (saturation aside), or None."""
    if not isinstance(fmt, FloatFormat):
        return None
    for dtype, f in _NATIVE:
        if (fmt.exp, fmt.man, fmt.bias, fmt.signed, fmt.subnormals, fmt.specials) == (
                f.exp, f.man, f.bias, True, True, f.specials):
            return dtype
    return None


def _encode_native(v: torch.Tensor, fmt: FloatFormat, dtype: torch.dtype) -> torch.Tensor:
    """The cast's bits (exact: ``v`` is on the grid).  ``fn`` and ``fnuz`` have one NaN code
    (per sign); an IEEE format's NaN is made canonical where the cast wrote another NaN code
    (torch keeps fp16 payloads, writes 0x7F for e5m2 and 0xFFFF for bf16)."""
    raw = v.to(dtype).view(torch.uint8 if dtype.itemsize == 1 else torch.int16)
    if fmt.specials is not Specials.IEEE:
        return raw
    inf = (2**fmt.exp - 1) << fmt.man
    nan = (raw & (inf | (2**fmt.man - 1))) > inf
    if bool(nan.any()):
        sign = torch.where(v.view(_I32) < 0, 1 << (fmt.bits - 1), 0)
        canon = torch.where(nan, sign | inf | (1 << (fmt.man - 1)), raw.to(_I32) & 0xFFFF)
        return canon.to(raw.dtype) if dtype.itemsize == 1 else canon
    return raw


@functools.lru_cache(maxsize=None)
def _encode_table(fmt: FloatFormat) -> torch.Tensor:
    """The table from carrier code to ``fmt`` code (carrier NaN codes to ``fmt``'s NaN code,
    or to ``_NAN_SENTINEL`` where ``fmt`` has none)."""
    dtype, _ = _CARRIERS[_carrier_for(fmt)]
    n = 2 ** (8 * dtype.itemsize)
    raw = torch.arange(n, dtype=torch.int32)
    vals = raw.to(torch.uint8 if n == 256 else torch.int16).view(dtype).float()
    table = encode_general(vals, fmt)
    back = decode_general(table, fmt)
    on_grid = (back == vals) & (back.signbit() == vals.signbit())  # the values fmt holds
    table = torch.where(on_grid, table, 0)
    nan = torch.isnan(vals)
    if has_nan_code(fmt):
        table = torch.where(nan, encode_general(vals, fmt), table)
    elif fmt.bits <= 7:
        table = torch.where(nan, _NAN_SENTINEL, table)
    return table.to(torch.uint8 if fmt.bits <= 8 else _I32)


def _encode_carried(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    dtype = _CARRIERS[_carrier_for(fmt)][0]
    raw = v.to(dtype).view(torch.uint8 if dtype.itemsize == 1 else torch.int16)
    index = raw.to(_I32) if dtype.itemsize == 1 else raw.to(_I32) & 0xFFFF
    table = _on("enc", fmt, v.device, _encode_table)
    return table.index_select(0, index.view(-1)).view(v.shape)


def _raise_nan(what: str) -> None:
    raise ValueError(f"{what}; pass nan='zero' to store it as zero (-0 where the format has "
                     "-0), or remove it")


def encode_values(v: torch.Tensor, fmt, nan: str, what: str,
                  shift: Union[int, torch.Tensor] = 0) -> torch.Tensor:
    """Codes of fp32 values ``v`` on ``fmt``'s grid (times ``2^shift``, which only the
    general path takes), uint8 or int32.  NaN in a format without a NaN code raises
    ``ValueError(what ...)``, or with ``nan="zero"`` becomes ``nan_zero_code(fmt)``."""
    sentinel = False
    if isinstance(shift, torch.Tensor):
        codes = encode_general(v, fmt, shift)
    elif _native_dtype(fmt) is not None:
        codes = _encode_native(v, fmt, _native_dtype(fmt))
    elif isinstance(fmt, FloatFormat) and _carrier_for(fmt) is not None:
        codes = _encode_carried(v, fmt)
        sentinel = not has_nan_code(fmt) and fmt.bits <= 7
    elif isinstance(fmt, (FixedPoint, IntFormat)) and fp32_exact(fmt) and fmt.bits <= 16:
        codes = _encode_int(v, fmt)
    elif isinstance(fmt, FloatFormat) and _float_fast(fmt):
        codes = _encode_float_fast(v, fmt)
    elif isinstance(fmt, FloatFormat) and fmt.exp == 8 and fmt.bias == 127 and fmt.signed \
            and fmt.specials is Specials.IEEE and fmt.man > 0:
        codes = _encode_fp32_layout(v, fmt)
    else:
        codes = encode_general(v, fmt)
    if has_nan_code(fmt):
        return codes
    # one reduction without a mask in the common case: a table's sentinel is above every
    # code, and a max over values is NaN when any is (torch's reductions propagate NaN)
    if (int(codes.max()) == _NAN_SENTINEL) if sentinel else bool(torch.isnan(v.amax())):
        if nan != "zero":
            _raise_nan(what)
        isnan = codes == _NAN_SENTINEL if sentinel else torch.isnan(v)
        codes = torch.where(isnan, nan_zero_code(fmt), codes)
    return codes


def _encode_int(v: torch.Tensor, fmt) -> torch.Tensor:
    """Fixed point and integers: ``k = v · 2^fl`` as an integer (exact), two's complement."""
    if not fmt.clamp and not bool((v.amax() <= fmt.max) & (v.amin() >= fmt.lowest)):
        bad = ~((v >= fmt.lowest) & (v <= fmt.max)) & ~torch.isnan(v)
        if bool(bad.any()):
            raise ValueError(
                f"{fmt!r} (clamp=False) cannot encode values outside [{fmt.lowest}, {fmt.max}] "
                f"in {fmt.bits} bits (the first is {v[bad].flatten()[0].item()}); use a "
                "clamping format (clamp=True) or a wider word length")
    k = v * 2.0 ** (-fmt.quantum_exp) if fmt.quantum_exp else v
    if fmt.bits <= 8:  # NaN gives an unspecified code; the caller replaces it
        if fmt.qmin >= 0:
            return k.to(torch.uint8)
        codes = k.to(torch.int8).view(torch.uint8)
        return codes if fmt.bits == 8 else codes & ((1 << fmt.bits) - 1)
    return k.to(_I32) & ((1 << fmt.bits) - 1)


def _float_fast(fmt: FloatFormat) -> bool:
    # 2^(man - emin) must be a normal fp32 power for the subnormal multiply
    return fp32_exact(fmt) and fmt.man - fmt.emin <= 127 and fmt.bits < 32


def _encode_float_fast(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The code from the fp32 bits: an element-normal value's code is its fp32 bits shifted
    and re-biased; an element-subnormal one's mantissa is ``|v| · 2^(man - emin)``, an exact
    integer."""
    top, mmask, sign_bit = float_consts(fmt)
    bits = v.view(_I32)
    a = bits & 0x7FFFFFFF
    emin = 1 - fmt.bias
    body = torch.where(a < (emin + 127) << 23,
                       (a.view(torch.float32) * 2.0 ** (fmt.man - emin)).to(_I32),
                       (a >> (23 - fmt.man)) - ((127 - fmt.bias) << fmt.man))
    if fmt.specials is Specials.IEEE:
        body = torch.where(a == 0x7F800000, top << fmt.man, body)
        nan_body = (top << fmt.man) | ((1 << (fmt.man - 1)) if fmt.man else 0)
        body = torch.where(a > 0x7F800000, nan_body, body)
    elif fmt.specials is Specials.FN:
        body = torch.where(a > 0x7F800000, (top << fmt.man) | mmask, body)
    if sign_bit:
        body = body | ((bits >> (32 - fmt.bits)) & sign_bit)
    if fmt.specials is Specials.FNUZ:  # NaN is the negative-zero code
        body = torch.where(a > 0x7F800000, sign_bit, body)
    return body


def _encode_fp32_layout(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """IEEE formats with fp32's exponent (fp32, tf32, bf16): the top ``bits`` of the fp32
    bits, NaN made canonical."""
    bits = v.view(_I32)
    code = bits >> (23 - fmt.man)
    if fmt.bits < 32:
        code = code & ((1 << fmt.bits) - 1)
        sign = (bits >> (32 - fmt.bits)) & (1 << (fmt.bits - 1))
    else:
        sign = bits & -(2**31)
    nan_code = (0xFF << fmt.man) | (1 << (fmt.man - 1))
    return torch.where((bits & 0x7FFFFFFF) > 0x7F800000, sign | nan_code, code)


# -- decoding ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _value_table(fmt) -> torch.Tensor:
    return decode_general(torch.arange(2**fmt.bits, dtype=_I32), fmt)


@functools.lru_cache(maxsize=None)
def _byte_table(fmt) -> torch.Tensor:
    """(256, 8 / bits) values of the codes packed in each byte, low bits first."""
    b = fmt.bits
    per = 8 // b
    byte = torch.arange(256, dtype=_I32)
    codes = torch.stack([(byte >> (b * i)) & ((1 << b) - 1) for i in range(per)], dim=1)
    return _value_table(fmt).index_select(0, codes.reshape(-1)).view(256, per)


def decode_codes(code: torch.Tensor, fmt) -> torch.Tensor:
    """fp32 values of int32 codes: a table lookup for formats of at most 16 bits."""
    if fmt.bits <= 16:
        table = _on("val", fmt, code.device, _value_table)
        return table.index_select(0, code.reshape(-1).to(_I32)).view(code.shape)
    if isinstance(fmt, FloatFormat) and fmt.exp == 8 and fmt.bias == 127 \
            and fmt.specials is Specials.IEEE and fmt.signed:
        return (code << (23 - fmt.man)).view(torch.float32)
    return decode_general(code, fmt)


def decode_values(data: torch.Tensor, fmt, n: int) -> torch.Tensor:
    """The ``n`` fp32 values packed in the uint8 stream ``data`` (flat)."""
    b = fmt.bits
    native = _native_dtype(fmt)
    if native is not None:  # torch's own widening cast is exact
        return data[: n * native.itemsize].view(native).float()
    if b == 8:
        return _on("val", fmt, data.device, _value_table).index_select(0, data.to(_I32))
    if b == 4:  # a table of value pairs, each pair one int64, so the lookup is 1-D
        table = _on("pair", fmt, data.device, lambda f: _byte_table(f).view(torch.int64)[:, 0])
        vals = table.index_select(0, data.to(_I32)).view(torch.float32)
        return vals[:n] if vals.numel() != n else vals
    if b in (1, 2):
        table = _on("byte", fmt, data.device, _byte_table)
        vals = table.index_select(0, data.to(_I32)).view(-1)
        return vals[:n] if vals.numel() != n else vals
    return decode_codes(unpack_bits(data, b, n), fmt)
