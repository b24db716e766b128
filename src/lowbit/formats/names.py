"""Preset formats, their names, and the grammar that ``repr`` writes and ``get`` reads.

Grammar (case-insensitive; ``get(repr(fmt)) == fmt`` for every format):

* Float: ``e{E}m{M}[b{BIAS}][fn|fnuz][u][_sat|_nosat][_nosub][_nonan][_float]``, after ml_dtypes:
  ``b`` gives a non-default bias, ``fn`` = no Inf with NaN at all-ones, ``fnuz`` = no Inf, no
  -0, NaN at 0x80, ``u`` = unsigned, no suffix = IEEE-like (Inf and NaN).  ``_nonan`` after
  ``fn`` removes the NaN too (``specials="none"``); ``_sat``/``_nosat`` are written only when
  they differ from the default (saturating only for ``none``); ``_nosub`` flushes subnormals.
  As in ml_dtypes, the presets ``e3m2fn``, ``e2m3fn`` and ``e2m1fn`` have no NaN (they are
  ``fn_nonan``); any other ``…fn`` name has the NaN code.  A trailing ``_float`` means "read
  this with the float grammar": ``repr`` adds it where the plain name would be a preset, an
  alias or a power-of-two name (``e3m2fn_float`` has the NaN code, ``e8m0_float`` is IEEE-like).
* Power-of-two scale: ``e{E}m0fnu[b{BIAS}][_sat]`` (``ExpFormat``), e.g. ``e8m0fnu``.
* Fixed point: ``fixed<WL,FL[,noclamp][,symmetric]>``; integers ``int{B}`` / ``uint{B}``.
* Blocks: a preset name, ``bfp{WL}`` (QPyTorch's whole-tensor block floating point), or
  ``block<ELEMENT,SCALE,SIZE,AXIS,RULE[,tensor]>`` where SIZE and AXIS are an int, ``none``
  or a parenthesised tuple such as ``(16,16)``.

Aliases (accepted by ``get``, never written by ``repr``): ``float32``, ``float16``, ``half``,
``bfloat16``, ``e8m0`` (= ``e8m0fnu``), ``ue4m3`` (= ``e4m3fnu``, NVFP4's block scale),
``fp4`` (= ``e2m1fn``).
"""

from __future__ import annotations

import re
import sys
from typing import Dict, List, Union

from .block import BlockFormat
from .fixed import FixedPoint, IntFormat
from .floats import ExpFormat, FloatFormat
from .modes import ScaleRule, Specials

__all__ = ["Format", "get", "name_of", "PRESETS", "preset_names"]

Format = Union[FloatFormat, ExpFormat, FixedPoint, IntFormat, BlockFormat]

_FN, _FNUZ, _NONE = Specials.FN, Specials.FNUZ, Specials.NONE


def _mx(element: Union[FloatFormat, FixedPoint]) -> BlockFormat:
    return BlockFormat(element, scale=ExpFormat(8), block_size=32, axis=-1)


def _bfp(wl: int) -> BlockFormat:
    # QPyTorch's block floating point: one shared exponent floor(log2 amax) for the tensor and
    # a symmetric wl-bit grid with step 2^(e + 2 - wl) (emax_elem = wl - 2 for these ints).
    return BlockFormat(
        FixedPoint(wl, 0, symmetric=True), scale=FloatFormat(8, 23), block_size=None, axis=None
    )


#: Every named preset, in display order.
PRESETS: Dict[str, Format] = {
    "fp32": FloatFormat(8, 23),
    "tf32": FloatFormat(8, 10),
    "bf16": FloatFormat(8, 7),
    "fp16": FloatFormat(5, 10),
    "e5m2": FloatFormat(5, 2),
    "e4m3fn": FloatFormat(4, 3, specials=_FN),
    "e4m3fnuz": FloatFormat(4, 3, specials=_FNUZ),
    "e5m2fnuz": FloatFormat(5, 2, specials=_FNUZ),
    "e4m3b11fnuz": FloatFormat(4, 3, bias=11, specials=_FNUZ),
    "e4m3": FloatFormat(4, 3),
    "e3m4": FloatFormat(3, 4),
    "e3m2fn": FloatFormat(3, 2, specials=_NONE),
    "e2m3fn": FloatFormat(2, 3, specials=_NONE),
    "e2m1fn": FloatFormat(2, 1, specials=_NONE),
    "e8m0fnu": ExpFormat(8),
    "int8": IntFormat(8),
    "int4": IntFormat(4),
    "uint8": IntFormat(8, signed=False),
    "uint4": IntFormat(4, signed=False),
    "mxfp8_e4m3": _mx(FloatFormat(4, 3, specials=_FN, saturate=True)),
    "mxfp8_e5m2": _mx(FloatFormat(5, 2, saturate=True)),
    "mxfp6_e3m2": _mx(FloatFormat(3, 2, specials=_NONE)),
    "mxfp6_e2m3": _mx(FloatFormat(2, 3, specials=_NONE)),
    "mxfp4": _mx(FloatFormat(2, 1, specials=_NONE)),
    "mxint8": _mx(FixedPoint(8, 6, symmetric=True)),
    "nvfp4": BlockFormat(
        FloatFormat(2, 1, specials=_NONE),
        scale=FloatFormat(4, 3, signed=False, specials=_FN, saturate=True),
        block_size=16,
        axis=-1,
        scale_rule=ScaleRule.AMAX,
        tensor_scale=True,
    ),
}

_ALIASES: Dict[str, str] = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "e8m0": "e8m0fnu",
    "ue4m3": "e4m3fnu",
    "fp4": "e2m1fn",
}

_NAME_OF_PRESET = {fmt: name for name, fmt in PRESETS.items()}


def preset_names() -> List[str]:
    """Names of all presets, in display order."""
    return list(PRESETS)


# -- writing names ----------------------------------------------------------------------------
def _float_name(f: FloatFormat) -> str:
    default_bias = 2 ** (f.exp - 1) - 1 + (f.specials is _FNUZ)
    name = f"e{f.exp}m{f.man}" + (f"b{f.bias}" if f.bias != default_bias else "")
    name += {Specials.IEEE: "", _FN: "fn", _FNUZ: "fnuz", _NONE: "fn"}[f.specials]
    name += "" if f.signed else "u"
    if f.saturate != (f.specials is _NONE):
        name += "_sat" if f.saturate else "_nosat"
    name += "" if f.subnormals else "_nosub"
    name += "_nonan" if f.specials is _NONE else ""
    # A generic name can coincide with a preset, an alias or a power-of-two name (e3m2fn is
    # NaN-less as a preset; e8m0 is an alias of e8m0fnu): "_float" marks the plain grammar.
    if name in PRESETS or name in _ALIASES or _EXP_RE.fullmatch(name):
        name += "_float"
    return name


def _tuple_name(v: object) -> str:
    if v is None:
        return "none"
    if isinstance(v, tuple):
        return "(" + ",".join(str(i) for i in v) + ")"
    return str(v)


def name_of(fmt: Format) -> str:
    """The canonical name of ``fmt``: its preset name, else the grammar above."""
    if fmt in _NAME_OF_PRESET:
        return _NAME_OF_PRESET[fmt]
    if isinstance(fmt, FloatFormat):
        return _float_name(fmt)
    if isinstance(fmt, ExpFormat):
        bias = f"b{fmt.bias}" if fmt.bias != 2 ** (fmt.bits - 1) - 1 else ""
        return f"e{fmt.bits}m0fnu{bias}" + ("_sat" if fmt.saturate else "")
    if isinstance(fmt, FixedPoint):
        opts = ("" if fmt.clamp else ",noclamp") + (",symmetric" if fmt.symmetric else "")
        return f"fixed<{fmt.wl},{fmt.fl}{opts}>"
    if isinstance(fmt, IntFormat):
        return f"{'' if fmt.signed else 'u'}int{fmt.bits}"
    if isinstance(fmt.element, FixedPoint) and fmt == _bfp(fmt.element.wl):
        return f"bfp{fmt.element.bits}"
    parts = [name_of(fmt.element), name_of(fmt.scale), _tuple_name(fmt.block_size),
             _tuple_name(fmt.axis), fmt.scale_rule.value] + (["tensor"] if fmt.tensor_scale else [])
    return "block<" + ",".join(parts) + ">"


# -- reading names ----------------------------------------------------------------------------
_FLOAT_RE = re.compile(r"e(\d+)m(\d+)(?:b(-?\d+))?(fnuz|fn)?(u)?((?:_[a-z]+)*)")
_EXP_RE = re.compile(r"e(\d+)m0fnu(?:b(-?\d+))?((?:_[a-z]+)*)")
_INT_RE = re.compile(r"(u?)int(\d+)")


def _split_top(text: str) -> List[str]:
    """Split on commas that are not inside <> or ()."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "<(" 
        depth -= ch in ">)"
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _parse_opt_tuple(text: str, what: str) -> object:
    if text == "none":
        return None
    try:
        if text.startswith("("):
            return tuple(int(v) for v in text[1:-1].split(","))
        return int(text)
    except ValueError:
        raise ValueError(f"bad {what} {text!r} in a block name") from None


def _parse_float(m: "re.Match[str]", name: str) -> FloatFormat:
    exp, man, bias, spec, unsigned, opts = m.groups()
    tokens = [t for t in opts.split("_") if t]
    unknown = set(tokens) - {"sat", "nosat", "nosub", "nonan"}
    if unknown or len(tokens) != len(set(tokens)) or {"sat", "nosat"} <= set(tokens):
        raise ValueError(f"unknown or repeated options {opts!r} in format name {name!r}")
    specials = {None: Specials.IEEE, "fn": _FN, "fnuz": _FNUZ}[spec]
    if "nonan" in tokens:
        if specials is not _FN:
            raise ValueError(f"'_nonan' needs the 'fn' suffix in {name!r}")
        specials = _NONE
    saturate = True if "sat" in tokens else False if "nosat" in tokens else None
    return FloatFormat(int(exp), int(man), bias=None if bias is None else int(bias),
                       signed=unsigned is None, subnormals="nosub" not in tokens,
                       specials=specials, saturate=saturate)


def _parse_block(inner: str, name: str) -> BlockFormat:
    parts = _split_top(inner)
    if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "tensor"):
        raise ValueError(
            f"block name {name!r} must be block<ELEMENT,SCALE,SIZE,AXIS,RULE[,tensor]>"
        )
    return BlockFormat(get(parts[0]), scale=get(parts[1]),
                       block_size=_parse_opt_tuple(parts[2], "block size"),
                       axis=_parse_opt_tuple(parts[3], "axis"), scale_rule=parts[4],
                       tensor_scale=len(parts) == 6)


def _parse_fixed(inner: str, name: str) -> FixedPoint:
    parts = [p.strip() for p in inner.split(",")]
    opts = set(parts[2:])
    if len(parts) < 2 or not opts <= {"noclamp", "symmetric"} or len(opts) != len(parts) - 2:
        raise ValueError(f"fixed-point name {name!r} must be fixed<WL,FL[,noclamp][,symmetric]>")
    try:
        wl, fl = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"fixed-point name {name!r} needs integer WL and FL") from None
    return FixedPoint(wl, fl, clamp="noclamp" not in opts, symmetric="symmetric" in opts)


def _parse(name: str) -> Format:
    if name.endswith("_float") and (m := _FLOAT_RE.fullmatch(name[: -len("_float")])):
        return _parse_float(m, name)
    key = _ALIASES.get(name, name)
    if key in PRESETS:
        return PRESETS[key]
    if m := _EXP_RE.fullmatch(key):
        bits, bias, opts = m.groups()
        if opts not in ("", "_sat"):
            raise ValueError(f"unknown options {opts!r} in format name {name!r}")
        return ExpFormat(int(bits), bias=None if bias is None else int(bias), saturate=bool(opts))
    if m := _FLOAT_RE.fullmatch(key):
        return _parse_float(m, name)
    if m := _INT_RE.fullmatch(key):
        return IntFormat(int(m.group(2)), signed=not m.group(1))
    if m := re.fullmatch(r"bfp(\d+)", key):
        return _bfp(int(m.group(1)))
    if key.startswith("fixed<") and key.endswith(">"):
        return _parse_fixed(key[6:-1], name)
    if key.startswith("block<") and key.endswith(">"):
        return _parse_block(key[6:-1], name)
    raise ValueError(
        f"unknown format name {name!r}; presets are {', '.join(PRESETS)}, or use the grammar "
        "eXmY[bN][fn|fnuz][u][_sat|_nosat][_nosub][_nonan], fixed<WL,FL>, intN, uintN, bfpN, "
        "block<...> (see lowbit.formats.names)"
    )


def get(fmt: Union[str, Format]) -> Format:
    """Return the format named ``fmt`` (a preset, alias or grammar name); a format object is
    returned unchanged.

    Raises:
        TypeError: ``fmt`` is neither a string nor a format.
        ValueError: the name is unknown or its parameters are invalid.
    """
    if isinstance(fmt, (FloatFormat, ExpFormat, FixedPoint, IntFormat, BlockFormat)):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a format object or a format name; got {type(fmt).__name__}")
    key = fmt.strip().lower()
    found = _PARSED.get(key)
    if found is None:
        found = _parse(key)
        if not _compiling():  # torch.compile guards on the dict: never change it mid-trace
            _PARSED[key] = found
    return found


def _compiling() -> bool:
    torch = sys.modules.get("torch")  # formats/ never imports torch itself
    return torch is not None and bool(torch.compiler.is_compiling())


# Formats are immutable, so a parsed name can be shared; a plain dict (not lru_cache) keeps
# torch.compile's tracing of ``get`` free of warnings.  Presets and aliases are parsed up
# front, so tracing a call that names one reads the dict and never writes it.
_PARSED: Dict[str, Format] = {}
_PARSED.update({name.lower(): fmt for name, fmt in PRESETS.items()})
_PARSED.update({alias.lower(): _parse(alias.lower()) for alias in _ALIASES})
