"""Format dataclasses, presets, derived constants and the name grammar."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest

from lowbit.formats import (
    PRESETS, BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, Specials, get, name_of,
    preset_names,
)

# Every preset that names an ml_dtypes (or numpy) type, and that type.
FINFO_TYPES = {
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz,
    "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4,
    "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn,
    "e2m1fn": ml_dtypes.float4_e2m1fn,
    "e8m0fnu": ml_dtypes.float8_e8m0fnu,
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "fp32": np.float32,
}


def _finfo(dtype):
    return np.finfo(dtype) if dtype in (np.float16, np.float32) else ml_dtypes.finfo(dtype)


@pytest.mark.parametrize("name", sorted(FINFO_TYPES))
def test_derived_constants_match_finfo(name):
    fmt = get(name)
    fi = _finfo(FINFO_TYPES[name])
    assert fmt.bits == fi.bits
    assert fmt.max == float(fi.max)
    assert fmt.min_normal == float(fi.smallest_normal)
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.man == fi.nmant
    assert fmt.exp == fi.nexp


def test_finfo_table_covers_every_named_float_preset():
    floats = {n for n, f in PRESETS.items() if isinstance(f, (FloatFormat, ExpFormat))}
    assert floats - set(FINFO_TYPES) == {"tf32"}  # no numpy/ml_dtypes type for tf32


def test_tf32_constants():
    f = get("tf32")
    assert (f.exp, f.man, f.bias, f.bits) == (8, 10, 127, 19)
    assert f.max == (2 - 2.0**-10) * 2.0**127
    assert f.min_normal == 2.0**-126 and f.min_subnormal == 2.0**-136 and f.eps == 2.0**-10


@pytest.mark.parametrize("name, fields", [
    ("e4m3fn", dict(exp=4, man=3, bias=7, specials=Specials.FN, saturate=False)),
    ("e4m3fnuz", dict(exp=4, man=3, bias=8, specials=Specials.FNUZ, saturate=False)),
    ("e5m2fnuz", dict(exp=5, man=2, bias=16, specials=Specials.FNUZ, saturate=False)),
    ("e4m3b11fnuz", dict(exp=4, man=3, bias=11, specials=Specials.FNUZ, saturate=False)),
    ("e4m3", dict(exp=4, man=3, bias=7, specials=Specials.IEEE, saturate=False)),
    ("e5m2", dict(exp=5, man=2, bias=15, specials=Specials.IEEE, saturate=False)),
    ("e3m2fn", dict(exp=3, man=2, bias=3, specials=Specials.NONE, saturate=True)),
    ("e2m1fn", dict(exp=2, man=1, bias=1, specials=Specials.NONE, saturate=True)),
    ("fp16", dict(exp=5, man=10, bias=15, specials=Specials.IEEE, saturate=False)),
])
def test_preset_fields(name, fields):
    f = get(name)
    for k, v in fields.items():
        assert getattr(f, k) == v, k
    assert f.signed and f.subnormals


def test_special_flags():
    assert get("e5m2").has_inf and get("e5m2").has_nan and get("e5m2").has_neg_zero
    assert not get("e4m3fn").has_inf and get("e4m3fn").has_nan and get("e4m3fn").has_neg_zero
    assert not get("e4m3fnuz").has_inf and get("e4m3fnuz").has_nan
    assert not get("e4m3fnuz").has_neg_zero
    assert not get("e2m1fn").has_inf and not get("e2m1fn").has_nan and get("e2m1fn").has_neg_zero
    assert not get("e4m3fnu").has_neg_zero


def test_nosub_and_unsigned_constants():
    f = FloatFormat(4, 3, subnormals=False)
    assert f.min_subnormal == f.min_normal == 2.0**-6
    u = get("ue4m3")
    assert u == FloatFormat(4, 3, signed=False, specials="fn")
    assert u.bits == 7 and u.max == 448.0


def test_fixed_and_int_constants():
    f = FixedPoint(8, 4)
    assert (f.bits, f.qmax, f.qmin, f.max, f.lowest, f.eps) == (8, 127, -128, 127 / 16, -8.0, 1 / 16)
    s = FixedPoint(8, 4, symmetric=True)
    assert s.qmin == -127 and s.lowest == -127 / 16
    assert (get("int8").qmin, get("int8").qmax) == (-128, 127)
    assert (get("uint4").qmin, get("uint4").qmax) == (0, 15)
    assert FixedPoint(8, -2).eps == 4.0 and FixedPoint(8, -2).max == 127 * 4.0


def test_e8m0_constants():
    f = get("e8m0fnu")
    assert isinstance(f, ExpFormat)
    assert (f.bits, f.bias, f.emin, f.emax) == (8, 127, -127, 127)
    assert get("e8m0") == f


# -- names round-trip -------------------------------------------------------------------------
GENERIC = [
    FloatFormat(4, 3, bias=9),
    FloatFormat(4, 3, bias=-3),
    FloatFormat(4, 3, bias=0),
    FloatFormat(5, 2, bias=17, specials="fnuz"),
    FloatFormat(4, 3, bias=7, specials="fnuz"),
    FloatFormat(4, 3, subnormals=False),
    FloatFormat(4, 3, specials="fn", saturate=True),
    FloatFormat(5, 2, saturate=True),
    FloatFormat(4, 3, specials="fnuz", saturate=True),
    FloatFormat(4, 3, specials="none"),
    FloatFormat(8, 3, specials="none"),
    FloatFormat(8, 23, specials="none"),
    FloatFormat(3, 2, specials="fn"),  # max 24 and a NaN code: not the NaN-less preset
    FloatFormat(2, 3, specials="fn"),
    FloatFormat(2, 1, specials="fn"),
    FloatFormat(2, 1, specials="none", subnormals=False),
    FloatFormat(4, 3, signed=False),
    FloatFormat(4, 3, signed=False, specials="fn", saturate=True),
    FloatFormat(4, 3, signed=False, specials="none"),
    FloatFormat(6, 9),
    FloatFormat(5, 10, bias=13),
    FloatFormat(1, 0, specials="none"),
    FloatFormat(1, 3, specials="fn"),
    FloatFormat(8, 0),  # not the alias e8m0 (= e8m0fnu)
    FloatFormat(7, 0),
    FloatFormat(3, 4, bias=5, subnormals=False, specials="fn", saturate=True),
    FloatFormat(5, 0, signed=False, specials="fn"),  # not ExpFormat(5) ('e5m0fnu')
    FloatFormat(8, 0, signed=False, specials="fn"),
    ExpFormat(8, saturate=True),
    ExpFormat(6, bias=10),
    ExpFormat(4),
    FixedPoint(8, 4),
    FixedPoint(8, -2),
    FixedPoint(16, 149),
    FixedPoint(8, 4, clamp=False),
    FixedPoint(8, 4, symmetric=True),
    FixedPoint(25, 0, clamp=False, symmetric=True),
    IntFormat(16),
    IntFormat(2),
    IntFormat(1, signed=False),
    IntFormat(24, signed=False),
    BlockFormat(FixedPoint(8, 0, symmetric=True), scale=FloatFormat(8, 23), block_size=None,
                axis=None),  # bfp8
    BlockFormat(FixedPoint(6, 0, symmetric=True), scale=FloatFormat(8, 23), block_size=None,
                axis=None),  # bfp6
    BlockFormat(FloatFormat(4, 3, specials="fn"), scale=ExpFormat(8), block_size=32, axis=-1),
    BlockFormat(IntFormat(8), scale=FloatFormat(8, 23), block_size=(16, 16), axis=(-2, -1),
                scale_rule="amax"),
    BlockFormat(FloatFormat(2, 1, specials="none"), scale=FloatFormat(4, 3, signed=False,
                specials="fn", saturate=True), block_size=16, axis=-1, scale_rule="amax",
                tensor_scale=True),
    BlockFormat(FixedPoint(8, 6), scale=ExpFormat(8), block_size=None, axis=(0, 1),
                scale_rule="ceil"),
    BlockFormat(FloatFormat(5, 2), scale=ExpFormat(8), block_size=None, axis=1,
                scale_rule="rceil"),
    BlockFormat(IntFormat(4), scale=FloatFormat(5, 10), block_size=None, axis=None,
                scale_rule="even"),
    BlockFormat(FloatFormat(8, 23), scale=ExpFormat(8), block_size=32, axis=-1),  # 32-bit elements
]


@pytest.mark.parametrize("name", preset_names())
def test_preset_repr_is_its_name_and_round_trips(name):
    fmt = PRESETS[name]
    assert repr(fmt) == name == str(fmt) == name_of(fmt)
    assert get(repr(fmt)) == fmt
    assert get(name.upper()) == fmt  # names are case-insensitive
    assert get(fmt) is fmt


def _id(fmt) -> str:
    try:
        return repr(fmt)
    except Exception:  # a repr that raises is itself under test
        return f"{type(fmt).__name__}-unnamed"


@pytest.mark.parametrize("fmt", GENERIC, ids=_id)
def test_generic_round_trip(fmt):
    name = repr(fmt)
    back = get(name)
    assert type(back) is type(fmt)
    assert back == fmt, name
    assert hash(back) == hash(fmt)
    assert repr(back) == name


@pytest.mark.parametrize("name, expected", [
    ("e4m3b9", FloatFormat(4, 3, bias=9)),
    ("e4m3fn_sat", FloatFormat(4, 3, specials="fn", saturate=True)),
    ("e5m2_sat", FloatFormat(5, 2, saturate=True)),
    ("e4m3fnuz_sat", FloatFormat(4, 3, specials="fnuz", saturate=True)),
    ("e4m3_nosub", FloatFormat(4, 3, subnormals=False)),
    ("e4m3fn_nonan", FloatFormat(4, 3, specials="none")),
    ("e4m3fnu", FloatFormat(4, 3, specials="fn", signed=False)),
    ("e4m3fnu_sat", FloatFormat(4, 3, specials="fn", signed=False, saturate=True)),
    ("e5m2fn", FloatFormat(5, 2, specials="fn")),
    ("e6m9", FloatFormat(6, 9)),
    ("e5m10b13", FloatFormat(5, 10, bias=13)),
    ("e4m3_nosat", FloatFormat(4, 3)),
    ("e8m0fnu_sat", ExpFormat(8, saturate=True)),
    ("fixed<8,4>", FixedPoint(8, 4)),
    ("fixed<8,4,noclamp,symmetric>", FixedPoint(8, 4, clamp=False, symmetric=True)),
    ("fixed<8,4,symmetric,noclamp>", FixedPoint(8, 4, clamp=False, symmetric=True)),
    ("fixed<8,-2>", FixedPoint(8, -2)),
    ("int16", IntFormat(16)),
    ("uint3", IntFormat(3, signed=False)),
    ("float32", FloatFormat(8, 23)),
    ("float16", FloatFormat(5, 10)),
    ("half", FloatFormat(5, 10)),
    ("bfloat16", FloatFormat(8, 7)),
    ("fp4", FloatFormat(2, 1, specials="none")),
    ("  E4M3FN ", FloatFormat(4, 3, specials="fn")),
])
def test_grammar_parses(name, expected):
    got = get(name)
    assert type(got) is type(expected) and got == expected


def test_grammar_writes_documented_suffixes():
    assert repr(FloatFormat(4, 3, bias=9)) == "e4m3b9"
    assert repr(FloatFormat(4, 3, specials="fn", saturate=True)) == "e4m3fn_sat"
    assert repr(FloatFormat(4, 3, subnormals=False)) == "e4m3_nosub"
    assert repr(FloatFormat(4, 3, specials="none")) == "e4m3fn_nonan"
    assert repr(FloatFormat(4, 3, specials="fn", signed=False)) == "e4m3fnu"
    assert repr(FixedPoint(8, 4, clamp=False)) == "fixed<8,4,noclamp>"
    assert repr(IntFormat(8, signed=False)) == "uint8"
    assert repr(PRESETS["mxfp4"]) == "mxfp4"


# -- dataclass behaviour ----------------------------------------------------------------------
ALL_FORMATS = list(PRESETS.values()) + [f for f in GENERIC if not hasattr(f, "marks")]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=_id)
def test_hashable_and_equal_by_value(fmt):
    again = dataclasses.replace(fmt)
    assert again == fmt and again is not fmt
    assert hash(again) == hash(fmt)
    assert {fmt: 1}[again] == 1
    assert len({fmt, again}) == 1


@pytest.mark.parametrize("fmt", [PRESETS["e4m3fn"], PRESETS["e8m0fnu"], PRESETS["int8"],
                                 FixedPoint(8, 4), PRESETS["mxfp4"]], ids=repr)
def test_frozen(fmt):
    field = dataclasses.fields(fmt)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fmt, field, getattr(fmt, field))


def test_distinct_formats_differ():
    assert FloatFormat(4, 3) != FloatFormat(4, 3, specials="fn")
    assert FloatFormat(4, 3, bias=7) == FloatFormat(4, 3)  # the default bias is resolved
    assert FloatFormat(4, 3, specials="fnuz") == FloatFormat(4, 3, bias=8, specials="fnuz")
    assert FloatFormat(4, 3, specials="none") == FloatFormat(4, 3, specials="none", saturate=True)
    assert FloatFormat(4, 3, specials="fn") != FloatFormat(4, 3, specials="fn", saturate=True)
    assert FloatFormat(4, 3, specials="fn").specials is Specials.FN  # strings become enums


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, exc, param", [
    (dict(exp=0, man=3), ValueError, "exp"),
    (dict(exp=9, man=3), ValueError, "exp"),
    (dict(exp=4.0, man=3), TypeError, "exp"),
    (dict(exp=True, man=3), TypeError, "exp"),
    (dict(exp="4", man=3), TypeError, "exp"),
    (dict(exp=4, man=-1), ValueError, "man"),
    (dict(exp=4, man=24), ValueError, "man"),
    (dict(exp=4, man=3.0), TypeError, "man"),
    (dict(exp=4, man=None), TypeError, "man"),
    (dict(exp=4, man=3, bias=-127), ValueError, "bias"),
    (dict(exp=4, man=3, bias=2**4 + 151), ValueError, "bias"),
    (dict(exp=4, man=3, bias=7.0), TypeError, "bias"),
    (dict(exp=4, man=3, bias=False), TypeError, "bias"),
    (dict(exp=4, man=3, specials="inf"), ValueError, "specials"),
    (dict(exp=4, man=3, specials="FN"), ValueError, "specials"),
    (dict(exp=4, man=3, specials=None), ValueError, "specials"),
    (dict(exp=4, man=3, specials=1), ValueError, "specials"),
    (dict(exp=4, man=3, saturate="yes"), TypeError, "saturate"),
    (dict(exp=4, man=3, saturate=1), TypeError, "saturate"),
    (dict(exp=4, man=3, signed=1), TypeError, "signed"),
    (dict(exp=4, man=3, subnormals=None), TypeError, "subnormals"),
    (dict(exp=4, man=3, specials="none", saturate=False), ValueError, "saturate"),
    (dict(exp=4, man=3, specials="fnuz", signed=False), ValueError, "signed"),
    (dict(exp=1, man=0), ValueError, "exp"),  # ieee e1m0: no finite normal number
    (dict(exp=1, man=0, specials="fn"), ValueError, "exp"),
])
def test_float_format_validation(kwargs, exc, param):
    with pytest.raises(exc, match=param):
        FloatFormat(**kwargs)


def test_bias_range_is_inclusive():
    FloatFormat(4, 3, bias=-126)
    FloatFormat(4, 3, bias=2**4 + 150)


@pytest.mark.parametrize("ctor, exc, param", [
    (lambda: ExpFormat(1), ValueError, "bits"),
    (lambda: ExpFormat(9), ValueError, "bits"),
    (lambda: ExpFormat(8.0), TypeError, "bits"),
    (lambda: ExpFormat(8, bias=-127), ValueError, "bias"),
    (lambda: ExpFormat(8, saturate=None), TypeError, "saturate"),
    (lambda: FixedPoint(1, 0), ValueError, "wl"),
    (lambda: FixedPoint(26, 0), ValueError, "wl"),
    (lambda: FixedPoint(8.0, 0), TypeError, "wl"),
    (lambda: FixedPoint(8, 150), ValueError, "fl"),
    (lambda: FixedPoint(8, -121), ValueError, "fl"),
    (lambda: FixedPoint(8, "4"), TypeError, "fl"),
    (lambda: FixedPoint(8, 4, clamp=1), TypeError, "clamp"),
    (lambda: FixedPoint(8, 4, symmetric="no"), TypeError, "symmetric"),
    (lambda: IntFormat(1), ValueError, "bits"),
    (lambda: IntFormat(26), ValueError, "bits"),
    (lambda: IntFormat(25, signed=False), ValueError, "bits"),
    (lambda: IntFormat(0, signed=False), ValueError, "bits"),
    (lambda: IntFormat(8.0), TypeError, "bits"),
    (lambda: IntFormat(8, signed=None), TypeError, "signed"),
])
def test_other_format_validation(ctor, exc, param):
    with pytest.raises(exc, match=param):
        ctor()


def test_range_edges_are_valid():
    FixedPoint(2, 0), FixedPoint(25, 0), FixedPoint(8, 149), FixedPoint(8, -120)
    IntFormat(2), IntFormat(25), IntFormat(1, signed=False), IntFormat(24, signed=False)
    ExpFormat(2), ExpFormat(8)


@pytest.mark.parametrize("name, fragment", [
    (n, n) for n in [
        "foo", "e4m3xyz", "e4m3fn_sat_sat", "e4m3_sat_nosat", "e4m3_nonan", "e4m3fnuz_nonan",
        "e4m3_bogus", "e4m3b", "e4m3fnuu", "em3", "e4m", "e8m0fnu_nosub", "fixed<8>",
        "fixed<a,b>", "fixed<8,4,bogus>", "fixed<8,4,noclamp,noclamp>", "int", "uintx", "bfp",
        "block<e4m3fn,e8m0fnu,32>", "block<e4m3fn,e8m0fnu,32,-1,floor,bogus>", "", "mxfp9",
    ]
] + [
    ("block<e4m3fn,e8m0fnu,x,-1,floor>", "'x'"),          # the offending part is named
    ("block<foo,e8m0fnu,32,-1,floor>", "'foo'"),
    ("block<e4m3fn,e8m0fnu,32,-1,nearest>", "scale_rule"),
])
def test_unknown_names(name, fragment):
    with pytest.raises(ValueError) as info:
        get(name)
    assert fragment in str(info.value).lower()


@pytest.mark.parametrize("name, param", [
    ("e9m3", "exp"), ("e4m24", "man"), ("e5m2b300", "bias"), ("e4m3fnuzu", "signed"),
    ("fixed<1,0>", "wl"), ("fixed<8,200>", "fl"), ("int1", "bits"), ("uint25", "bits"),
    ("e1m0", "exp"),
])
def test_invalid_parameters_in_names(name, param):
    with pytest.raises(ValueError, match=param):
        get(name)


@pytest.mark.parametrize("bad", [42, 4.0, None, b"e4m3fn", FloatFormat])
def test_get_rejects_non_names(bad):
    with pytest.raises(TypeError, match="fmt"):
        get(bad)
