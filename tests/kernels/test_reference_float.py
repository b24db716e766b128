"""Zero-tolerance oracle tests of float rounding (reference backend).

Primary oracle: ``_scalar_oracles.FloatOracle``, the exact rounding onto a value set enumerated
code by code with Fractions, written from DESIGN.md (overflow per IEEE 754 §7.4 and the format's
specials).  Independent cross-checks: ml_dtypes ``astype`` (nearest-even, non-saturating; its
FP4/FP6 saturate and turn NaN into -0, so NaN is left out there), torch's casts (bf16/fp16 as
they are, fp8 after clamping to ±max), and gfloat's ``round_ndarray`` for the five IEEE modes
with and without OFP8 saturation.  Inputs: every value, every midpoint and midpoint ±1 fp32 ulp,
values beyond max, specials and fp32 subnormals (``float_grid_inputs``), and 1M random fp32.
"""

from __future__ import annotations

import dataclasses
import zlib

import ml_dtypes
import numpy as np
import pytest
import torch

import lowbit
from lowbit.formats import FloatFormat, get

from _backends import available_backends
from _scalar_oracles import (
    MODES, FloatSpec, assert_same, float_grid_inputs, float_oracle, fp32_edge_values,
    next_down32, next_up32, random_fp32, round_exp,
)

gfloat = pytest.importorskip("gfloat")

BACKENDS = available_backends(FloatFormat)  # every result is checked on each of them


@pytest.fixture(autouse=True)
def _quiet_numpy():
    # NaN (signalling ones included) and overflow in the oracles' numpy casts are expected.
    with np.errstate(invalid="ignore", over="ignore"):
        yield

# Named presets: the spec is written from the ml_dtypes/OCP definitions, not read from lowbit.
PRESET_SPECS = {
    "e4m3fn": FloatSpec(4, 3, 7, "fn"),
    "e5m2": FloatSpec(5, 2, 15, "ieee"),
    "e4m3fnuz": FloatSpec(4, 3, 8, "fnuz"),
    "e5m2fnuz": FloatSpec(5, 2, 16, "fnuz"),
    "e4m3b11fnuz": FloatSpec(4, 3, 11, "fnuz"),
    "e4m3": FloatSpec(4, 3, 7, "ieee"),
    "e3m4": FloatSpec(3, 4, 3, "ieee"),
    "e3m2fn": FloatSpec(3, 2, 3, "none", saturate=True),
    "e2m3fn": FloatSpec(2, 3, 1, "none", saturate=True),
    "e2m1fn": FloatSpec(2, 1, 1, "none", saturate=True),
    "bf16": FloatSpec(8, 7, 127, "ieee"),
    "fp16": FloatSpec(5, 10, 15, "ieee"),
}

# Generic formats: label -> spec (the lowbit format is built from the same fields).
GENERIC_SPECS = {
    "e3m2": FloatSpec(3, 2, 3, "ieee"),
    "e6m9": FloatSpec(6, 9, 31, "ieee"),
    "e5m10b13": FloatSpec(5, 10, 13, "ieee"),
    "e4m3_nosub": FloatSpec(4, 3, 7, "ieee", subnormals=False),
    "e4m3fn_nosub": FloatSpec(4, 3, 7, "fn", subnormals=False),
    "e2m1fn_nosub": FloatSpec(2, 1, 1, "none", subnormals=False, saturate=True),
    "e4m3b9": FloatSpec(4, 3, 9, "fn"),
    "e4m3fnu": FloatSpec(4, 3, 7, "fn", signed=False),        # NVFP4's UE4M3 block scale
    "e3m3fnu_nonan": FloatSpec(3, 3, 3, "none", signed=False, saturate=True),
    "e8m3_nonan": FloatSpec(8, 3, 127, "none", saturate=True),  # passes fp32's range
}

ALL_SPECS = {**PRESET_SPECS, **GENERIC_SPECS}

ML_DTYPES = {
    "e4m3fn": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz, "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4, "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn, "e2m1fn": ml_dtypes.float4_e2m1fn,
    "bf16": ml_dtypes.bfloat16, "fp16": np.float16,
}
ML_DTYPES_NAN_TO_ZERO = {"e3m2fn", "e2m3fn", "e2m1fn"}  # FP4/FP6: NaN -> -0 in ml_dtypes

TORCH_DTYPES = {
    "bf16": torch.bfloat16, "fp16": torch.float16,  # IEEE casts: compared without clamping
    "e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2,  # fp8: clamped to ±max first
    "e4m3fnuz": torch.float8_e4m3fnuz, "e5m2fnuz": torch.float8_e5m2fnuz,
}

GFLOAT_MODES = {
    "nearest": gfloat.RoundMode.TiesToEven, "nearest_away": gfloat.RoundMode.TiesToAway,
    "toward_zero": gfloat.RoundMode.TowardZero, "up": gfloat.RoundMode.TowardPositive,
    "down": gfloat.RoundMode.TowardNegative,
}


def lowbit_format(label: str, spec: FloatSpec) -> FloatFormat:
    """The lowbit format of a case: the preset by name, or built from the spec's fields."""
    if label in PRESET_SPECS:
        fmt = get(label)
        assert fmt == FloatFormat(spec.exp, spec.man, bias=spec.bias, specials=spec.specials)
        return dataclasses.replace(fmt, saturate=spec.saturate)
    return FloatFormat(spec.exp, spec.man, bias=spec.bias, specials=spec.specials,
                       subnormals=spec.subnormals, signed=spec.signed, saturate=spec.saturate)


def cases():
    """(label, spec) for every format and overflow policy ('none' formats always saturate)."""
    out = []
    for label, spec in ALL_SPECS.items():
        for sat in ([True] if spec.specials == "none" else [False, True]):
            out.append(pytest.param(label, dataclasses.replace(spec, saturate=sat),
                                    id=f"{label}-{'sat' if sat else 'nosat'}"))
    return out


def quantize(x: np.ndarray, fmt, mode: str = "nearest") -> torch.Tensor:
    """The reference backend's result, after checking that every other backend agrees."""
    xt = torch.from_numpy(np.ascontiguousarray(x))
    ref = lowbit.quantize(xt, fmt, rounding=mode, backend="reference")
    for b in available_backends(type(get(fmt)))[1:]:
        assert_same(lowbit.quantize(xt, fmt, rounding=mode, backend=b), ref, x,
                    f"backend {b} vs reference ({fmt!r}, {mode})")
    return ref


def gfloat_info(spec: FloatSpec):
    """gfloat's FormatInfo for a signed format with subnormals inside fp32's range."""
    nans = {"ieee": 2**spec.man - 1, "fn": 1, "fnuz": 0, "none": 0}[spec.specials]
    return gfloat.FormatInfo(
        f"e{spec.exp}m{spec.man}", k=1 + spec.exp + spec.man, precision=spec.man + 1,
        bias=spec.bias, is_signed=True,
        domain=gfloat.Domain.Extended if spec.specials == "ieee" else gfloat.Domain.Finite,
        has_nz=spec.specials != "fnuz", num_high_nans=nans, has_subnormals=True,
        is_twos_complement=False)


SAMPLE = 2048  # values kept from a 16-bit format's grid for its secondary checks


def grid(spec: FloatSpec, full: bool = True) -> np.ndarray:
    """The enumerated inputs of ``spec``: exhaustive, or (``full=False``) the sampled grid that
    still holds every value of the lowest and highest binades (equal for formats ≤ 8 bits)."""
    return float_grid_inputs(float_oracle(spec), None if full else SAMPLE)


def random_inputs(spec: FloatSpec, n: int, seed: int) -> np.ndarray:
    """Half random bit patterns over every binade, half inside the format's exponent range."""
    emin = 1 - spec.bias
    emax = 2**spec.exp - 1 - spec.bias
    return np.concatenate([
        random_fp32(n // 2, seed),
        random_fp32(n - n // 2, seed + 1, lo_exp=emin - spec.man - 3, hi_exp=emax + 2),
    ])


# -- the enumeration agrees with lowbit's derived constants ----------------------------------
@pytest.mark.parametrize("label", list(ALL_SPECS))
def test_constants_match_enumeration(label):
    spec = ALL_SPECS[label]
    fmt, oracle = lowbit_format(label, spec), float_oracle(spec)
    mags = oracle.values_frac
    if oracle.beyond:
        assert fmt.exceeds_carrier and fmt.max > float(oracle.max_frac)
    else:
        assert fmt.max == float(oracle.max_frac)
    assert fmt.min_subnormal == float(mags[1])
    normal = 2.0 ** (1 - spec.bias)
    assert fmt.min_normal == normal and normal in [float(v) for v in mags]
    assert fmt.eps == 2.0**-spec.man


# -- primary oracle: every deterministic mode on the enumerated grids -------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label, spec", cases())
def test_grid_all_modes_exact(label, spec, mode):
    """Exhaustive for every format without saturation (and every format ≤ 8 bits); the
    saturating twins of the 16-bit formats use the sampled grid, which keeps the top binades
    where saturation acts."""
    oracle = float_oracle(spec)
    x = grid(spec, full=not spec.saturate or spec.specials == "none")
    got = quantize(x, lowbit_format(label, spec), mode)
    assert got.dtype == torch.float32 and got.shape == x.shape
    assert_same(got, oracle(x, mode), x, f"({label}, {mode})")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", list(ALL_SPECS))
def test_random_all_modes_exact(label, mode):
    spec = ALL_SPECS[label]
    x = random_inputs(spec, 50_000, seed=zlib.crc32(label.encode()) % 1000)
    assert_same(quantize(x, lowbit_format(label, spec), mode), float_oracle(spec)(x, mode), x,
                f"({label}, {mode})")


def test_oracle_matches_documented_values():
    """The oracle itself, on values quoted in DESIGN.md and research/formats.md."""
    e4m3fn = float_oracle(PRESET_SPECS["e4m3fn"])
    x = np.array([464, 464.0001, 480, 1e9, -500, 0.5 * 2**-9, 0.75 * 2**-9], np.float32)
    exp = np.array([448, np.nan, np.nan, np.nan, np.nan, 0, 2**-9], np.float32)
    assert_same(e4m3fn(x, "nearest"), exp, x)
    fp4 = float_oracle(PRESET_SPECS["e2m1fn"])
    x = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 7, 100, -0.25], np.float32)
    assert_same(fp4(x, "nearest"), np.array([0, 1, 1, 2, 2, 4, 4, 6, 6, -0.0], np.float32), x)
    e5m2 = float_oracle(PRESET_SPECS["e5m2"])
    x = np.array([61439, 61440, -61440, 1e6], np.float32)
    assert_same(e5m2(x, "nearest"), np.array([57344, np.inf, -np.inf, np.inf], np.float32), x)
    assert_same(e5m2(x, "toward_zero"), np.array([57344, 57344, -57344, 57344], np.float32), x)
    assert_same(e5m2(x, "up"), np.array([np.inf, np.inf, -57344, np.inf], np.float32), x)
    assert_same(e5m2(x, "down"), np.array([57344, 57344, -np.inf, 57344], np.float32), x)


@pytest.mark.parametrize("fmt, x, expected", [
    ("e4m3fn", [464.0, 464.00003, 480.0, -1e6, float("inf")], [448.0, "nan", "nan", "nan", "nan"]),
    ("e4m3fn_sat", [464.00003, -1e6, float("inf"), float("-inf")], [448.0, -448.0, 448.0, -448.0]),
    ("e5m2", [61439.996, 61440.0, float("-inf")], [57344.0, float("inf"), float("-inf")]),
    ("e5m2_sat", [61440.0, float("-inf")], [57344.0, -57344.0]),
    ("e4m3fnuz", [-0.0, -1e-9, 248.0, 247.99998], [0.0, 0.0, "nan", 240.0]),
    ("e2m1fn", [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 1e30, float("-inf"), float("nan")],
     [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -6.0, "nan"]),
    ("e3m2fn", [float("nan"), -0.0, 30.0], ["nan", -0.0, 28.0]),
    ("bf16", [1.00390625, 1.01171875, (2 - 2**-8) * 2.0**127, (2 - 2**-8) * 2.0**127 - 2.0**104],
     [1.0, 1.015625, float("inf"), (2 - 2**-7) * 2.0**127]),
])
def test_documented_values(fmt, x, expected):
    """A few values worth reading: OFP8 overflow, fnuz zero, FP4 ties, NaN through 'none'."""
    exp = torch.tensor([float(v) for v in expected], dtype=torch.float32)
    got = quantize(np.array(x, dtype=np.float32), fmt)
    assert_same(got, exp, torch.tensor(x, dtype=torch.float32), fmt)


# -- independent oracles: 1M random values, nearest ----------------------------------------------
BEYOND_FP32 = {"e8m3_nonan"}
NO_EXTERNAL_ORACLE = {"e4m3_nosub", "e4m3fn_nosub", "e2m1fn_nosub", "e4m3fnu", "e3m3fnu_nonan",
                      "e8m3_nonan"}  # gfloat has no flush-to-zero, unsigned or >fp32 formats


def gfloat_applies(label: str, spec: FloatSpec) -> bool:
    return spec.signed and spec.subnormals and label not in BEYOND_FP32


@pytest.mark.parametrize("label", list(ALL_SPECS))
def test_random_nearest_cross_checks(label):
    """1M random fp32 inputs against the exact oracle and the independent oracles that share
    the format's semantics: ml_dtypes and torch where the dtype exists, else gfloat."""
    spec = ALL_SPECS[label]
    fmt = lowbit_format(label, spec)
    x = np.concatenate([random_inputs(spec, 1_000_000, seed=7), fp32_edge_values()])
    got = quantize(x, fmt)
    g = got.numpy()
    assert_same(got, float_oracle(spec)(x, "nearest"), x, "vs the exact oracle")
    independent = 0
    if label in ML_DTYPES:
        keep = ~np.isnan(x) if label in ML_DTYPES_NAN_TO_ZERO else np.ones(x.shape, bool)
        ref = x[keep].astype(ML_DTYPES[label]).astype(np.float32)
        assert_same(g[keep], ref, x[keep], "vs ml_dtypes")
        independent += 1
    if label in TORCH_DTYPES:
        xt = torch.from_numpy(x)
        if label not in ("bf16", "fp16"):  # fp8 casts: only inputs already within ±max
            keep = (xt.abs() <= fmt.max) | xt.isnan()
            xt, g_t = xt[keep], g[keep.numpy()]
        else:
            g_t = g
        assert_same(g_t, xt.to(TORCH_DTYPES[label]).float(), xt, "vs torch")
        independent += 1
    if label not in ML_DTYPES and gfloat_applies(label, spec):
        sub = x[:200_000]
        ref = gfloat.round_ndarray(gfloat_info(spec), sub.astype(np.float64),
                                   gfloat.RoundMode.TiesToEven, spec.saturate)
        assert_same(g[:200_000], ref.astype(np.float32), sub, "vs gfloat")
        independent += 1
    assert independent > 0 or label in NO_EXTERNAL_ORACLE


@pytest.mark.parametrize("label", list(ML_DTYPES))
def test_grid_nearest_vs_ml_dtypes(label):
    spec = PRESET_SPECS[label]
    x = grid(spec)
    if label in ML_DTYPES_NAN_TO_ZERO:
        x = x[~np.isnan(x)]
    assert_same(quantize(x, get(label)), x.astype(ML_DTYPES[label]).astype(np.float32), x)


@pytest.mark.parametrize("label", list(TORCH_DTYPES))
@pytest.mark.parametrize("sat", [False, True])
def test_grid_nearest_vs_torch(label, sat):
    fmt = dataclasses.replace(get(label), saturate=sat)
    x = torch.from_numpy(grid(PRESET_SPECS[label], full=not sat))
    if label not in ("bf16", "fp16"):
        x = x.clamp(-fmt.max, fmt.max)
    elif sat:  # torch's IEEE casts overflow to Inf; compare in range only
        x = x[x.abs() <= fmt.max]
    assert_same(quantize(x.numpy(), fmt), x.to(TORCH_DTYPES[label]).float(), x)


def _gfloat_cases():
    return [p for p in cases() if gfloat_applies(*p.values)]


@pytest.mark.parametrize("mode", list(GFLOAT_MODES))
@pytest.mark.parametrize("label, spec", _gfloat_cases())
def test_grid_vs_gfloat(label, spec, mode):
    """gfloat's round_ndarray with sat=True/False (OFP8 saturation) on the enumerated grid
    (sampled for the 16-bit formats: gfloat is slow)."""
    x = grid(spec, full=False)
    if spec.specials == "none":
        x = x[~np.isnan(x)]  # gfloat: no NaN in the format
    ref = gfloat.round_ndarray(gfloat_info(spec), x.astype(np.float64), GFLOAT_MODES[mode],
                               spec.saturate)
    assert_same(quantize(x, lowbit_format(label, spec), mode), ref.astype(np.float32), x)


# -- a format whose name collides with a preset ------------------------------------------------
def test_e3m2_fn_with_nan():
    """Not the NaN-less preset e3m2fn: max 24, overflow to NaN (quantize passes formats by
    name, so a name collision would round onto the preset)."""
    spec = FloatSpec(3, 2, 3, "fn")
    fmt = FloatFormat(3, 2, specials="fn")
    x = grid(spec)
    assert_same(quantize(x, fmt), float_oracle(spec)(x, "nearest"), x)


# -- fp32 and tf32 ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_fp32_is_identity(mode):
    x = np.concatenate([random_fp32(200_000, 3), fp32_edge_values()])
    got = quantize(x, "fp32", mode)
    assert np.array_equal(got.numpy().view(np.uint32)[~np.isnan(x)],
                          x.view(np.uint32)[~np.isnan(x)])
    assert np.isnan(got.numpy()[np.isnan(x)]).all()


def _tf32_bits(x: np.ndarray, mode: str) -> np.ndarray:
    """tf32 by integer arithmetic on fp32 bit patterns (an fp32 value with its 13 low mantissa
    bits rounded): nearest-even adds 0xFFF plus the kept LSB, toward-zero masks."""
    b = x.view(np.uint32).astype(np.uint64)
    if mode == "nearest":
        b = b + 0xFFF + ((b >> 13) & 1)
    b = (b & ~np.uint64(0x1FFF)).astype(np.uint32)
    out = b.view(np.float32).copy()
    out[np.isnan(x)] = np.nan
    return out


@pytest.mark.parametrize("mode", ["nearest", "toward_zero"])
def test_tf32_vs_bit_arithmetic(mode):
    x = np.concatenate([random_fp32(1_000_000, 5), fp32_edge_values()])
    assert_same(quantize(x, "tf32", mode), _tf32_bits(x, mode), x)


# -- e8m0fnu ----------------------------------------------------------------------------------
def _e8m0_inputs() -> np.ndarray:
    k = np.arange(-149, 128, dtype=np.float64)
    p = np.ldexp(1.0, k.astype(int)).astype(np.float32)
    ties = (1.5 * np.ldexp(1.0, np.arange(-149, 128))).astype(np.float32)
    base = np.concatenate([p, ties, np.float32(1.25) * p, np.float32(1.75) * p])
    base = base[np.isfinite(base) & (base > 0)]
    x = np.concatenate([base, next_up32(base), next_down32(base)])
    x = np.concatenate([x, -x, fp32_edge_values()])
    return np.unique(x.view(np.uint32)).view(np.float32)


@pytest.mark.parametrize("sat", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_e8m0_all_modes_exact(mode, sat):
    x = _e8m0_inputs()
    fmt = dataclasses.replace(get("e8m0fnu"), saturate=sat)
    assert_same(quantize(x, fmt, mode), round_exp(x, 8, 127, mode, sat), x)


def test_e8m0_vs_torch_positive_normals():
    """torch's float8_e8m0fnu cast: nearest on the mantissa with the implicit bit as the last
    kept digit (exact 1.5·2^k ties up), overflow and Inf/NaN to NaN."""
    x = np.abs(random_fp32(1_000_000, 11, lo_exp=-126, hi_exp=127))
    x = np.concatenate([x, _e8m0_inputs()])
    x = x[(x >= np.finfo(np.float32).tiny) | ~np.isfinite(x)]
    x = x[~np.signbit(x)]
    xt = torch.from_numpy(x)
    got = quantize(x, "e8m0fnu")
    assert_same(got, xt.to(torch.float8_e8m0fnu).float(), x, "vs torch")
    fin = np.isfinite(x)
    assert_same(got.numpy()[fin], x[fin].astype(ml_dtypes.float8_e8m0fnu).astype(np.float32),
                x[fin], "vs ml_dtypes")


def test_e8m0_design_behaviour():
    """DESIGN: sign ignored, 0 -> 2^-127, NaN/±Inf -> NaN, overflow -> NaN (or 2^127 when
    saturating); values below 2^-127 give 2^-127."""
    x = torch.tensor([0.0, -0.0, -3.0, 3.0, -0.75, 2.0**-140, -(2.0**-149), float("nan"),
                      float("inf"), float("-inf"), 1.5 * 2.0**127, 2.0**127, -(2.0**127)])
    exp = torch.tensor([2.0**-127, 2.0**-127, 4.0, 4.0, 1.0, 2.0**-127, 2.0**-127, float("nan"),
                        float("nan"), float("nan"), float("nan"), 2.0**127, 2.0**127])
    assert_same(quantize(x.numpy(), "e8m0fnu"), exp, x)
    sat = quantize(x.numpy(), "e8m0fnu_sat")
    exp_sat = exp.clone()
    exp_sat[8:11] = 2.0**127
    assert_same(sat, exp_sat, x)
    # torch agrees on zero, the sign, tiny values and the specials.  (It differs on fp32
    # subnormals in (2^-127, 1.5·2^-127), which it rounds up to 2^-126 from the raw mantissa
    # field; lowbit rounds by value, as test_e8m0_all_modes_exact checks.)
    assert_same(quantize(x.numpy(), "e8m0fnu"), x.to(torch.float8_e8m0fnu).float(), x, "vs torch")
