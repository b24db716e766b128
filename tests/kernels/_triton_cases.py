"""Shared cases of the Triton kernel tests (``test_triton.py`` on CPU tensors in Triton's
interpreter, ``test_gpu.py`` on CUDA): the formats swept, inputs that reach every branch of the
rounding, and the zero-tolerance comparison with the reference backend."""

from __future__ import annotations

from typing import Dict, List

import torch

from lowbit.formats import (
    PRESETS, BlockFormat, ExpFormat, FixedPoint, FloatFormat, Format, IntFormat, Rounding,
)

MODES: List[str] = [m.value for m in Rounding]

#: Every scalar preset.
SCALAR_PRESETS: Dict[str, Format] = {
    name: fmt for name, fmt in PRESETS.items() if not isinstance(fmt, BlockFormat)
}

#: Generic formats: every parameter and special kind the kernels read at run time.
GENERIC: Dict[str, Format] = {
    "e4m3_bias9": FloatFormat(4, 3, bias=9),
    "e5m2_nosub": FloatFormat(5, 2, subnormals=False),
    "e4m3fn_nosub_sat": FloatFormat(4, 3, specials="fn", subnormals=False, saturate=True),
    "e4m3fn_sat": FloatFormat(4, 3, specials="fn", saturate=True),
    "e5m2_sat": FloatFormat(5, 2, saturate=True),
    "e3m2fnuz": FloatFormat(3, 2, specials="fnuz"),
    "e4m3fnu": FloatFormat(4, 3, specials="fn", signed=False, saturate=True),
    "e5m2u": FloatFormat(5, 2, signed=False),
    "e2m1fnu_nonan": FloatFormat(2, 1, specials="none", signed=False),
    "e8m7fn_nonan": FloatFormat(8, 7, specials="none"),  # range beyond the fp32 carrier
    "e8m3_bias140": FloatFormat(8, 3, bias=140),  # grid below fp32's normals
    "e8m23_sat": FloatFormat(8, 23, saturate=True),
    "e5m10_bias30_nosub": FloatFormat(5, 10, bias=30, subnormals=False),
    "e3m0fn": FloatFormat(3, 0, specials="fn"),
    "e1m2_nonan": FloatFormat(1, 2, specials="none"),
    "e5m2_bias_neg3": FloatFormat(5, 2, bias=-3),
    "e8m0fnu_sat": ExpFormat(8, saturate=True),
    "e5m0fnu_bias3": ExpFormat(5, bias=3),
    "e8m0fnu_bias200": ExpFormat(8, bias=200),
    "fixed8_4": FixedPoint(8, 4),
    "fixed8_4_noclamp": FixedPoint(8, 4, clamp=False),
    "fixed8_4_symmetric": FixedPoint(8, 4, symmetric=True),
    "fixed25_0": FixedPoint(25, 0),
    "fixed12_neg100": FixedPoint(12, -100),
    "fixed6_neg122": FixedPoint(6, -122),
    "fixed16_140": FixedPoint(16, 140),
    "fixed16_140_noclamp": FixedPoint(16, 140, clamp=False),
    "int25": IntFormat(25),
    "uint24": IntFormat(24, signed=False),
    "uint1": IntFormat(1, signed=False),
}

#: Formats for the rbits sweep.
RBITS_FORMATS: Dict[str, Format] = {
    "e4m3fn": PRESETS["e4m3fn"], "bf16": PRESETS["bf16"], "e8m0fnu": PRESETS["e8m0fnu"],
    "fixed8_4": GENERIC["fixed8_4"], "int8": PRESETS["int8"],
}

FP32_SPECIALS = [0.0, -0.0, float("inf"), float("-inf"), 1e-45, -1e-45, 1.1754942e-38,
                 -1.1754942e-38, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 1.0, -1.0]
NAN_PATTERNS = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FBFFFFF]


def _grid(fmt: Format, m: int, g: torch.Generator) -> torch.Tensor:
    """``m`` values on, halfway between and a quarter between the format's grid points, over
    its whole range and a little beyond, both signs (float64, exact)."""
    if isinstance(fmt, (FixedPoint, IntFormat)):
        top = max(fmt.qmax, -fmt.qmin) + 4
        k = torch.randint(-top, top + 1, (m,), generator=g).double()
        frac = torch.randint(0, 4, (m,), generator=g).double() / 4
        return (k + frac) * 2.0 ** fmt.quantum_exp
    lo, hi = max(fmt.emin - fmt.man - 3, -152), min(fmt.emax + 3, 130)
    e = torch.randint(lo, hi + 1, (m,), generator=g).double()
    bits = fmt.man + 2
    frac = torch.randint(0, 2**bits, (m,), generator=g).double() / 2**bits
    sign = torch.where(torch.rand(m, generator=g) < 0.5, -1.0, 1.0).double()
    return sign * (1 + frac) * torch.pow(2.0, e)


def probe(fmt: Format, n: int = 4099, seed: int = 0) -> torch.Tensor:
    """fp32 inputs: every kind of fp32 bit pattern (uniform random bits, specials, NaNs with
    payloads, subnormals) and, around the format's grid, exact grid points, midpoints, quarter
    points and their fp32 neighbours.  ``n`` is deliberately not a multiple of 4."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.tensor(FP32_SPECIALS, dtype=torch.float32),
             torch.tensor([p - 2**32 if p >= 2**31 else p for p in NAN_PATTERNS],
                          dtype=torch.int32).view(torch.float32)]
    m = (n - sum(p.numel() for p in parts)) // 3
    parts.append(torch.randint(-(2**31), 2**31, (m,), generator=g, dtype=torch.int64)
                 .to(torch.int32).view(torch.float32))
    grid = _grid(fmt, m, g).float()
    nudge = torch.randint(-1, 2, (m,), generator=g, dtype=torch.int32)
    parts += [grid, (grid.view(torch.int32) + nudge).view(torch.float32)]
    x = torch.cat(parts)
    scale = float(fmt.max) if fmt.max < 1e38 else 1e38
    return torch.cat([x, (torch.randn(n - x.numel(), generator=g) * scale).float()])


def assert_same(actual: torch.Tensor, expected: torch.Tensor, fmt: Format, what: str) -> None:
    """Bit-identical, except that NaNs need only be NaN (payload and sign free).

    One deliberate difference: an unsigned integer format gives +0 where the reference may give
    -0.  The reference clamps with ``torch.maximum(v, +0.0)``, whose choice between -0 and +0
    depends on torch's vectorisation (position in the tensor); the kernels always give +0."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    # fp16/bf16 widen to fp32 exactly, so comparing fp32 patterns compares theirs.
    a, e = actual.detach().cpu().float(), expected.detach().cpu().float()
    if isinstance(fmt, IntFormat) and not fmt.signed:
        e = torch.where(e == 0, torch.zeros_like(e), e)
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    bad = (nan_a != nan_e) | (~nan_e & (a.view(torch.int32) != e.view(torch.int32)))
    if bad.any():
        i = bad.nonzero()[:8].flatten()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {a.numel()} differ; first at {i.tolist()}: "
            f"got {a.flatten()[i].tolist()}, expected {e.flatten()[i].tolist()}")


#: Block formats: every preset, each scale rule with float and integer elements on blocks that
#: are not a power of two (padded tiles), a fixed-point element, whole-row and whole-tensor
#: blocks, the AMAX rule with and without a tensor scale, and layouts the kernel leaves to the
#: reference (other axis, 2-D tiles).
def _block_formats() -> Dict[str, Format]:
    from lowbit.formats import get

    fmts: Dict[str, Format] = {n: f for n, f in PRESETS.items() if isinstance(f, BlockFormat)}
    fmts["bfp8"] = get("bfp8")
    fp4 = FloatFormat(2, 1, specials="none")
    for rule in ("floor", "ceil", "even", "rceil", "amax"):
        fmts[f"fp4_{rule}_24"] = BlockFormat(fp4, scale="e8m0fnu", block_size=24, scale_rule=rule)
        fmts[f"int8_{rule}_16"] = BlockFormat(IntFormat(8), scale="e8m0fnu", block_size=16,
                                              scale_rule=rule)
    fmts["fixed_ceil_8"] = BlockFormat(FixedPoint(6, 3, symmetric=True), scale="e8m0fnu",
                                       block_size=8, scale_rule="ceil")
    fmts["e4m3_row"] = BlockFormat(FloatFormat(4, 3, specials="fn"), scale="e8m0fnu",
                                   block_size=None, axis=-1)
    fmts["e4m3_fp32scale"] = BlockFormat(FloatFormat(4, 3, specials="fn"), scale="fp32",
                                         block_size=32)
    fmts["e5m2_ue4m3_amax_tensor"] = BlockFormat(FloatFormat(5, 2), scale="ue4m3", block_size=32,
                                                 scale_rule="amax", tensor_scale=True)
    fmts["fp4_whole_amax"] = BlockFormat(fp4, scale="ue4m3", block_size=None, axis=None,
                                         scale_rule="amax")
    fmts["int4_whole_rceil"] = BlockFormat(IntFormat(4), scale="e8m0fnu", block_size=None,
                                           axis=None, scale_rule="rceil")
    fmts["fp4_axis0"] = BlockFormat(fp4, scale="e8m0fnu", block_size=4, axis=0)
    fmts["fp4_tiles"] = BlockFormat(fp4, scale="e8m0fnu", block_size=(2, 8), axis=(0, 1))
    return fmts


BLOCK_FORMATS: Dict[str, Format] = _block_formats()


def block_probe(shape: tuple, specials: bool, seed: int = 0) -> torch.Tensor:
    """Values whose magnitude changes every 8 elements over fp32's whole range (so blocks hold
    mixed binades and their scales hit both ends of the scale range), an all-zero run, a run of
    fp32 subnormals and, with ``specials``, a NaN and an Inf in separate runs."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for d in shape:
        n *= d
    runs = -(-n // 8)
    e = torch.randint(-150, 126, (runs,), generator=g).double().repeat_interleave(8)[:n]
    x = (torch.randn(n, generator=g, dtype=torch.float64) * torch.pow(2.0, e)).float()
    x[8:16] = 0.0
    x[24:32] = torch.randint(-(2**23) + 1, 2**23, (8,), generator=g).to(torch.int32).view(
        torch.float32)
    if specials:
        x[41] = float("nan")
        x[83] = float("-inf")
    return x.view(shape)
