"""``lowbit.encode`` / ``lowbit.decode``: packed low-bit storage.

The oracle of the values is ``lowbit.quantize`` (decode(encode(x)) must equal it bit for bit);
the oracles of the codes are torch's own fp8/fp16/bf16 dtypes and ml_dtypes (every code of
every preset of <= 16 bits decoded by both), hand-computed codes and bytes, and torchao's packed
MXFP4/NVFP4 layouts (slow tier).
"""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.formats import (
    PRESETS, BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, get,
)
from lowbit.ops.codec import Packed, decode, encode
from lowbit.ops.codec.bitstream import pack_bits, packed_nbytes, unpack_bits
from lowbit.ops.codec.scalar import decode_general

NAN, INF = float("nan"), float("inf")

GENERIC = [
    # floats: odd widths, custom bias, no subnormals, unsigned, man=0, past fp32's range
    "e3m3", "e5m0", "e4m3fnu_sat", "e4m3fn_sat", "e4m3fn_nosub", "e8m3fn_nonan", "e8m3fn",
    "e5m10b20", "e2m2fn_nonan", "e3m3fn_nonan", "e6m3", "e4m8", "e2m1fnu_nonan", "e1m2fn_nonan",
    # fixed point and integers: 1..25 bits
    "fixed<8,4>", "fixed<3,1>", "fixed<12,6,symmetric>", "fixed<25,10>", "int2", "uint1",
    "int3", "uint7", "int25",
    # power-of-two scale formats
    "e5m0fnu", "e8m0fnu_sat",
    # blocks: whole tensor, other axes, 2-D tiles, whole-axis blocks, every rule, float and
    # fixed-point elements, float scales (power-of-two and AMAX)
    "bfp8", "block<e2m1fn,e8m0fnu,32,0,floor>", "block<e4m3fn,e8m0fnu,(4,8),(-2,-1),ceil>",
    "block<e3m2fn,e8m0fnu,none,-1,rceil>", "block<int4,e8m0fnu,16,-1,even>",
    "block<e2m1fn,e4m3fnu_sat,16,-1,floor>", "block<e2m1fn,e4m3fnu_sat,16,-1,amax>",
    "block<e4m3fn,e8m0fnu,none,(0,1),floor>", "block<fixed<7,3>,bf16,8,-1,floor>",
    "block<e3m2fn,e8m0fnu,8,-1,amax>",
    # an element past fp32's range: quantize gives the carrier's Inf for x / 2^k >= 2^128
    "block<e8m3fn_nonan,e8m0fnu,8,-1,floor>",
    # elements below fp32's exponent range and scales below 2^-149: the general integer paths
    "block<e8m2b140,e8m0fnu,16,-1,floor>", "block<e2m1fn,e8m0fnub160,32,-1,floor>",
    "block<e5m2,fp32,16,-1,amax,tensor>",
]
ALL = list(PRESETS) + GENERIC


def _element(fmt):
    return fmt.element if isinstance(fmt, BlockFormat) else fmt


def _has_nan_code(fmt) -> bool:
    if isinstance(fmt, ExpFormat):
        return True
    if isinstance(fmt, FloatFormat):
        return fmt.has_nan and not (fmt.has_inf and fmt.man == 0)
    return False


def _expected(fmt, q: torch.Tensor, nan: str) -> torch.Tensor:
    """quantize's result with the documented storage exceptions applied."""
    e = _element(fmt)
    if isinstance(e, (FixedPoint, IntFormat)):  # two's complement has no -0
        q = torch.where(q == 0, torch.zeros_like(q), q)
    if nan == "zero" and not _has_nan_code(fmt):
        zero = -0.0 if isinstance(e, FloatFormat) and e.has_neg_zero else 0.0
        q = torch.where(torch.isnan(q), torch.full_like(q, zero), q)
    return q


def _assert_bits_equal(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal bit for bit, any NaN matching any NaN."""
    assert got.shape == want.shape and got.dtype == want.dtype
    g, w = got.float(), want.float()
    nan = torch.isnan(g)
    assert torch.equal(nan, torch.isnan(w)), "NaN positions differ"
    gb, wb = g.view(torch.int32)[~nan], w.view(torch.int32)[~nan]
    bad = gb != wb
    assert not bool(bad.any()), (
        f"{int(bad.sum())} values differ, e.g. {g[~nan][bad][:4].tolist()} vs "
        f"{w[~nan][bad][:4].tolist()}")


def _data(shape=(24, 48), seed=0, specials=True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.exp2(torch.randint(-30, 30, shape[:1] + (1,) * (len(shape) - 1),
                                    generator=g).float())
    x = torch.randn(shape, generator=g) * rows
    if specials:
        edge = torch.tensor([0.0, -0.0, INF, -INF, NAN, 1e-40, -3e-39, 1.5e-45, 3.0e38,
                             -3.4e38, 1e6, -448.0, 464.0, 6.0, -7.0, 0.25])
        x[1, : edge.numel()] = edge  # row 1 holds the specials; other rows stay finite
    return x


def _nan_policy(fmt) -> str:
    return "raise" if _has_nan_code(fmt) or isinstance(fmt, BlockFormat) else "zero"


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_roundtrip_equals_quantize(name):
    fmt = get(name)
    x = _data()
    nan = _nan_policy(fmt)
    packed = encode(x, fmt, nan=nan)
    _assert_bits_equal(decode(packed), _expected(fmt, lb.quantize(x, fmt), nan))
    assert packed.codes.numel() == packed_nbytes(x.numel(), _element(fmt).bits)


@pytest.mark.parametrize("rounding", ["nearest", "nearest_away", "toward_zero", "up", "down",
                                      "odd", "stochastic"])
@pytest.mark.parametrize("name", ["e4m3fn", "e2m1fn", "e5m2", "fixed<8,4>", "e8m0fnu",
                                  "mxfp4", "mxint8", "nvfp4", "bfp8"])
def test_roundtrip_every_rounding_mode(name, rounding):
    fmt = get(name)
    x = _data(seed=3, specials=False)
    opts = dict(rounding=rounding)
    if rounding == "stochastic":
        opts.update(seed=2024, rbits=9)
    packed = encode(x, fmt, **opts)
    _assert_bits_equal(decode(packed), _expected(fmt, lb.quantize(x, fmt, **opts), "raise"))


@pytest.mark.parametrize("name", ["e4m3fn", "nvfp4", "mxfp6_e3m2"])
def test_unseeded_stochastic_uses_torch_generator(name):
    x = _data(seed=4, specials=False)
    torch.manual_seed(11)
    got = decode(encode(x, name, rounding="stochastic"))
    torch.manual_seed(11)
    _assert_bits_equal(got, lb.quantize(x, name, rounding="stochastic"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["e4m3fn", "e2m1fn", "e5m2", "int8", "mxfp4", "mxfp8_e4m3"])
def test_half_inputs_decode_to_their_dtype(name, dtype):
    x = _data(seed=5, specials=False)
    if dtype == torch.float16:
        if isinstance(get(name), BlockFormat):  # block results need fp32's exponent range
            with pytest.raises(ValueError, match="fp32"):
                encode(x.to(dtype), name)
            return
        x = x.clamp(-6e4, 6e4) * 1e-3
    x = x.to(dtype)
    got = decode(encode(x, name))
    assert got.dtype == dtype
    _assert_bits_equal(got, _expected(get(name), lb.quantize(x, name), "raise"))


def test_layouts_shapes_and_strides():
    x = _data((8, 6, 40), seed=6, specials=False)
    xt = x.transpose(0, 2)  # non-contiguous: codes follow the logical row-major order
    for name in ["e4m3fn", "e2m3fn", "mxfp4", "block<e2m1fn,e8m0fnu,(2,4),(0,1),floor>"]:
        p, pc = encode(xt, name), encode(xt.contiguous(), name)
        assert torch.equal(p.codes, pc.codes)
        _assert_bits_equal(decode(p), lb.quantize(xt, name))
    # 0-d, odd sizes, empty
    for name in ["e2m1fn", "e1m2fn_nonan", "int4", "mxfp4"]:
        for shape in [(), (1,), (3,), (7, 5), (0, 4)]:
            if name == "mxfp4" and shape == ():
                continue
            x = torch.randn(shape)
            p = encode(x, name)
            got = decode(p)
            assert got.shape == x.shape and p.codes.numel() == packed_nbytes(x.numel(), 4)
            if x.numel():
                _assert_bits_equal(got, _expected(get(name), lb.quantize(x, name), "raise"))


def test_requires_grad_input_is_not_tracked():
    x = torch.randn(64, requires_grad=True)
    p = encode(x, "e4m3fn")
    assert not p.codes.requires_grad
    _assert_bits_equal(decode(p), lb.quantize(x.detach(), "e4m3fn"))


# -- every code of small formats ---------------------------------------------------------------
def _all_codes(b: int) -> torch.Tensor:
    return torch.arange(2**b, dtype=torch.int32)


def _decode_codes(fmt, codes: torch.Tensor) -> torch.Tensor:
    return decode(Packed(pack_bits(codes, fmt.bits), (codes.numel(),), fmt))


TORCH_VIEWS = {
    "e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2,
    "e4m3fnuz": torch.float8_e4m3fnuz, "e5m2fnuz": torch.float8_e5m2fnuz,
    "e8m0fnu": torch.float8_e8m0fnu, "fp16": torch.float16, "bf16": torch.bfloat16,
}
ML_DTYPES = {
    "e4m3": ml_dtypes.float8_e4m3, "e3m4": ml_dtypes.float8_e3m4,
    "e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz, "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn, "e2m1fn": ml_dtypes.float4_e2m1fn,
}


@pytest.mark.parametrize("name", list(TORCH_VIEWS) + list(ML_DTYPES))
def test_every_code_decodes_as_the_reference_dtype(name):
    fmt = get(name)
    codes = _all_codes(fmt.bits)
    got = _decode_codes(fmt, codes)  # torch's own cast where a dtype exists: check the
    _assert_bits_equal(decode_general(codes, fmt), got)  # general path as well
    if name in TORCH_VIEWS:
        dt = TORCH_VIEWS[name]
        raw = codes.to(torch.int16 if dt.itemsize == 2 else torch.uint8)
        want = raw.view(dt).float()
    else:
        raw = codes.numpy().astype(np.uint8).view(ML_DTYPES[name])
        want = torch.from_numpy(raw.astype(np.float32))
    _assert_bits_equal(got, want)


@pytest.mark.parametrize("name", [n for n in ALL if _element(get(n)).bits <= 16])
def test_every_code_reencodes_to_itself(name):
    fmt = _element(get(name))
    codes = _all_codes(fmt.bits)
    vals = _decode_codes(fmt, codes)
    keep = torch.ones_like(codes, dtype=torch.bool)
    if isinstance(fmt, FixedPoint) and fmt.symmetric:  # -2^(wl-1) is outside the grid
        keep &= codes != 2 ** (fmt.bits - 1)
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:  # subnormal codes unused
        keep &= ~(((codes >> fmt.man) & (2**fmt.exp - 1) == 0) & (codes & (2**fmt.man - 1) != 0))
    if isinstance(fmt, FloatFormat) and (fmt.saturate or not fmt.has_inf):
        # Inf codes of saturating formats, and codes past fp32's range (Inf): never encoded
        keep &= ~torch.isinf(vals)
    codes, vals = codes[keep], vals[keep]
    nan = torch.isnan(vals)
    assert torch.equal(lb.quantize(vals[~nan], fmt), vals[~nan])  # every code is on the grid
    again = unpack_bits(encode(vals, fmt).codes, fmt.bits, vals.numel())
    assert torch.equal(again[~nan], codes[~nan])
    if nan.any():  # every NaN code comes back as the canonical NaN code of its sign
        assert torch.equal(again[nan], _canonical_nan(fmt, codes[nan]))


def _canonical_nan(fmt, codes: torch.Tensor) -> torch.Tensor:
    if isinstance(fmt, ExpFormat):
        return torch.full_like(codes, 2**fmt.bits - 1)
    if fmt.specials.value == "fnuz":
        return torch.full_like(codes, 1 << (fmt.bits - 1))
    sign = codes & (1 << (fmt.bits - 1)) if fmt.signed else torch.zeros_like(codes)
    ones = (2**fmt.exp - 1) << fmt.man
    body = ones | (2**fmt.man - 1 if fmt.specials.value == "fn" else 1 << (fmt.man - 1))
    return sign | body


# -- known codes and bytes ---------------------------------------------------------------------
def _bytes(x, fmt, **kw):
    return encode(torch.tensor(x, dtype=torch.float32), fmt, **kw).codes.tolist()


def test_known_codes():
    assert _bytes([448.0, NAN, -NAN, 2.0**-9, -0.0, 500.0], "e4m3fn") == \
        [0x7E, 0x7F, 0xFF, 0x01, 0x80, 0x7F]
    assert _bytes([INF, -INF, NAN, 57344.0, 1e6], "e5m2") == [0x7C, 0xFC, 0x7E, 0x7B, 0x7C]
    assert _bytes([NAN, -0.0, 240.0], "e4m3fnuz") == [0x80, 0x00, 0x7F]
    assert _bytes([6.0, 1.0], "e2m1fn") == [0x27]
    assert _bytes([1.0, -6.0], "e2m1fn") == [0xF2]  # element 0 in the low nibble
    assert _bytes([1.0, -6.0, 0.5], "e2m1fn") == [0xF2, 0x01]
    assert _bytes([1.0, 2.0**-127, 2.0**127, NAN, 0.0], "e8m0fnu") == [127, 0, 254, 255, 0]
    assert _bytes([1.0, -2.0], "fp16") == [0x00, 0x3C, 0x00, 0xC0]  # little-endian
    assert _bytes([-1.0], "bf16") == [0x80, 0xBF]
    assert _bytes([-1.0, INF], "fp32") == [0, 0, 0x80, 0xBF, 0, 0, 0x80, 0x7F]
    assert _bytes([-1.0, 127.0, -128.0, 300.0], "int8") == [0xFF, 0x7F, 0x80, 0x7F]
    assert _bytes([-8.0, 7.0], "int4") == [0x78]
    assert _bytes([255.0, -3.0], "uint8") == [0xFF, 0x00]
    assert _bytes([-0.5], "fixed<8,4>") == [0xF8]
    assert _bytes([1.0, -1.0, 0.0, 1.0], "int2") == [0b01_00_11_01]
    assert _bytes([448.0, 2.0**-9], "e4m3fnu_sat") == [0xFE, 0x00]  # UE4M3: 7-bit 0x7E, 0x01
    # a format past fp32's range stores the carrier's Inf as its max code, which decodes to Inf
    p = encode(torch.tensor([INF, -INF, 1.0]), "e8m3fn_nonan")
    assert unpack_bits(p.codes, 12, 3).tolist() == [0x7FF, 0xFFF, 0x3F8]
    assert decode(p).tolist() == [INF, -INF, 1.0]


def test_fp6_bit_order():
    # e2m3fn codes 0x01, 0x3F, 0x2A, 0x15 as one little-endian 24-bit stream: 0x56AFC1
    x = torch.tensor([0.125, -7.5, -1.25, 3.25])
    assert _bytes(x.tolist(), "e2m3fn") == [0xC1, 0xAF, 0x56]
    assert _bytes(x.tolist() + [0.125], "e2m3fn") == [0xC1, 0xAF, 0x56, 0x01]
    p = encode(x, "mxfp6_e2m3")  # scale 2^0: the same element bytes
    assert p.codes.tolist() == [0xC1, 0xAF, 0x56] and p.scales.tolist() == [127]


@pytest.mark.parametrize("b", list(range(1, 33)))
def test_bitstream_roundtrip_and_order(b):
    g = torch.Generator().manual_seed(b)
    n = 29
    codes = torch.randint(0, 2**b, (n,), generator=g, dtype=torch.int64)
    codes = torch.where(codes >= 2**31, codes - 2**32, codes).to(torch.int32)
    data = pack_bits(codes, b)
    assert data.dtype == torch.uint8 and data.numel() == -(-n * b // 8)
    assert torch.equal(unpack_bits(data, b, n), codes)
    stream = sum(int(c) % 2**b << (b * i) for i, c in enumerate(codes.tolist()))
    assert int.from_bytes(bytes(data.tolist()), "little") == stream


# -- blocks ------------------------------------------------------------------------------------
def test_nvfp4_storage_size_and_layout():
    x = _data((64, 128), seed=8, specials=False)
    p = encode(x, "nvfp4")
    assert p.codes.numel() == x.numel() // 2
    assert p.scales.shape == (64, 8) and p.scales.dtype == torch.uint8
    assert p.tensor_scale.shape == () and p.tensor_scale.dtype == torch.float32
    assert p.nbytes == x.numel() // 2 + x.numel() // 16 + 4
    assert torch.equal(p.tensor_scale, x.abs().amax() / (448.0 * 6.0))
    assert int(p.scales.max()) <= 0x7E  # UE4M3 codes: sign bit clear, finite


def test_mx_scales():
    x = torch.zeros(3, 64)
    x[0, :32], x[0, 32:] = 6.0, 1.0  # FLOOR: 2^(floor(log2 amax) - 2)
    x[1, 5], x[1, 40] = NAN, INF  # blocks holding NaN/Inf decode to NaN
    p = encode(x, "mxfp4")
    assert p.scales.shape == (3, 2) and p.scales.dtype == torch.uint8
    assert p.scales.tolist() == [[127, 125], [255, 255], [0, 0]]
    assert p.codes.view(3, 32)[0].tolist() == [0x77] * 16 + [0x66] * 16  # 6 = 1.5·4, 1 = 1·4
    assert p.nbytes == 3 * 64 // 2 + 6
    got = decode(p)
    assert torch.isnan(got[1]).all() and torch.equal(got[0], x[0]) and torch.equal(got[2], x[2])


def test_block_grid_shapes():
    x = torch.randn(5, 7, 9)
    cases = {"block<e2m1fn,e8m0fnu,(2,4),(0,1),floor>": (3, 2, 9),
             "block<e2m1fn,e8m0fnu,4,1,floor>": (5, 2, 9),
             "block<e2m1fn,e8m0fnu,none,(0,2),floor>": (1, 7, 1),
             "bfp8": (1, 1, 1)}
    for name, grid in cases.items():
        p = encode(x, name)
        assert tuple(p.scales.shape) == grid
        _assert_bits_equal(decode(p), _expected(get(name), lb.quantize(x, name), "raise"))
    assert encode(x, "bfp8").scales.dtype == torch.int32  # fp32 scale codes: bit patterns


def test_nvfp4_fast_and_reference_paths(monkeypatch):
    # the general path (the one-pass kernels are tested in test_codec_fast.py)
    monkeypatch.setattr(lb.ops.codec, "encode_fused", lambda *a, **k: None)
    from lowbit.ops.codec import block

    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(12))
    x = x / x.abs().amax()
    x[0, :16] *= 1e-3  # a block far below the tensor amax: a small block scale
    calls = []
    orig = block._amax_elements_reference

    def spy(*args):
        calls.append(1)
        return orig(*args)

    block._amax_elements_reference = spy
    try:
        for scale, used_reference in [(1.0, False), (1e-35, True)]:
            calls.clear()
            xs = x * scale  # tiny tensor and block scales: P · s leaves fp32's normal range
            _assert_bits_equal(decode(encode(xs, "nvfp4")), lb.quantize(xs, "nvfp4"))
            assert bool(calls) == used_reference
            opts = dict(rounding="stochastic", seed=5)
            _assert_bits_equal(decode(encode(xs, "nvfp4", **opts)),
                               lb.quantize(xs, "nvfp4", **opts))
    finally:
        block._amax_elements_reference = orig


def test_nvfp4_nan_and_inf():
    x = _data((4, 32), seed=9, specials=False)
    x[2, 3] = NAN
    p = encode(x, "nvfp4")
    assert torch.isnan(decode(p)).all()  # the tensor scale is NaN, as quantize gives
    _assert_bits_equal(decode(p), lb.quantize(x, "nvfp4"))
    fmt = BlockFormat("e2m1fn", scale="e4m3fnu_sat", block_size=16, scale_rule="amax")
    p = encode(x, fmt)
    assert p.scales[2, 0] == 0x7F  # the UE4M3 NaN code
    _assert_bits_equal(decode(p), lb.quantize(x, fmt))


# -- NaN in formats without a NaN code ---------------------------------------------------------
def test_nan_without_nan_code():
    x = torch.tensor([1.0, NAN, -NAN, 6.0])
    for name in ["e2m1fn", "e3m2fn", "int8", "fixed<8,4>", "e5m0"]:
        with pytest.raises(ValueError, match="no NaN code"):
            encode(x, name)
    assert _bytes(x.tolist(), "e2m1fn", nan="zero") == [0x82, 0x78]  # NaN -> -0 (0x8)
    assert _bytes(x.tolist(), "e3m2fn", nan="zero") == [0x0C, 0x08, 0x5A]  # 0x0C 0x20 0x20 0x16
    assert _bytes(x.tolist(), "int8", nan="zero") == [1, 0, 0, 6]
    assert decode(encode(x, "e2m1fn", nan="zero")).tolist() == [1.0, -0.0, -0.0, 6.0]
    # MX blocks keep NaN through the scale: no error, the block decodes to NaN
    assert torch.isnan(decode(encode(torch.full((32,), NAN), "mxfp4"))).all()


# -- errors ------------------------------------------------------------------------------------
def test_errors():
    x = torch.randn(16)
    with pytest.raises(ValueError, match="unknown format"):
        encode(x, "e4m3nope")
    with pytest.raises(TypeError):
        encode(x, 3)
    with pytest.raises(TypeError):
        encode([1.0], "e4m3fn")
    with pytest.raises(ValueError, match="float64"):
        encode(x.double(), "e4m3fn")
    with pytest.raises(TypeError):
        encode(x.to(torch.int32), "e4m3fn")
    with pytest.raises(ValueError, match="fp32"):
        encode(x.bfloat16(), "nvfp4")  # the fp32 tensor scale does not fit in bf16
    with pytest.raises(ValueError, match="nan must be"):
        encode(x, "e4m3fn", nan="keep")
    with pytest.raises(ValueError, match="rbits"):
        encode(x, "e4m3fn", rbits=8)
    with pytest.raises(ValueError, match="clamp=False"):
        encode(torch.tensor([100.0]), "fixed<6,2,noclamp>")
    with pytest.raises(ValueError, match="clamp=False"):
        encode(torch.tensor([-INF]), "fixed<6,2,noclamp>")
    p = encode(torch.tensor([7.75, -8.0, 0.25]), "fixed<6,2,noclamp>")  # in range: fine
    assert decode(p).tolist() == [7.75, -8.0, 0.25]
    with pytest.raises(TypeError, match="Packed"):
        decode(x)
    good = encode(torch.randn(4, 32), "mxfp4")
    with pytest.raises(ValueError, match="bytes"):
        dataclasses.replace(good, codes=good.codes[:-1])
    with pytest.raises(ValueError, match="scales"):
        dataclasses.replace(good, scales=None)
    with pytest.raises(ValueError, match="tensor_scale"):
        dataclasses.replace(good, tensor_scale=torch.ones(()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        good.shape = (8,)


# -- torchao's packed layouts (slow: importing torchao takes seconds) --------------------------
@pytest.mark.slow
def test_bytes_match_torchao():
    mx_tensor = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
    nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    x = _data((64, 128), seed=10, specials=False)
    x = x / x.abs().amax(dim=1, keepdim=True)  # block amax far from the e8m0 edges
    scale, data = mx_tensor.to_mx(x, torch.float4_e2m1fn_x2, 32)
    p = encode(x, "mxfp4")
    assert torch.equal(p.codes, data.view(torch.uint8).reshape(-1))
    assert torch.equal(p.scales, scale.view(torch.uint8).view(64, 4))
    scale, data = mx_tensor.to_mx(x, torch.float8_e4m3fn, 32)
    p = encode(x, "mxfp8_e4m3")
    assert torch.equal(p.codes, data.view(torch.uint8).reshape(-1))
    ts = nvfp4.per_tensor_amax_to_scale(x.abs().amax())
    scales, data = nvfp4.nvfp4_quantize(x, 16, per_tensor_scale=ts)
    p = encode(x, "nvfp4")
    assert torch.equal(p.tensor_scale, ts)
    assert torch.equal(p.codes, data.view(torch.uint8).reshape(-1))
    assert torch.equal(p.scales, scales.view(torch.uint8).view(64, 8))
