"""The one-pass CPU encode/decode kernels (``lowbit.ops.codec.fused``) against the general path.

The general path (``quantize``, then codes from its values; ``lowbit.ops.codec.block`` and
``fast``) is checked against independent oracles in ``test_codec.py`` (ml_dtypes, torch's
dtypes, hand-made codes, torchao's bytes), which now runs through the fused kernels as well;
here the fused kernels must give the general path's bytes, scale codes and tensor scale bit
for bit, for every rounding mode (stochastic with the same seed) on random fp32 bit patterns
and on edge values, and decode every stored byte as the general path does.
"""

from __future__ import annotations

from typing import Optional

import pytest
import torch

import lowbit.ops.codec as codec
from lowbit.ops import quantize as quantize_module
from lowbit.formats import BlockFormat, Rounding, get
from lowbit.ops.codec import Packed, decode, encode
from lowbit.ops.codec.fused import decode_fused, encode_fused

pytest.importorskip("numba")

NAN, INF = float("nan"), float("inf")
MODES = [m.value for m in Rounding]
# Formats the fused kernels serve (every one is checked to take them).
PRESETS = [
    "e4m3fn", "e5m2", "bf16", "fp16", "e4m3fnuz", "e5m2fnuz", "e4m3b11fnuz", "e4m3", "e3m4",
    "e3m2fn", "e2m3fn", "e2m1fn", "int8", "int4", "uint8", "uint4", "fixed<8,4>",
    "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4",
]
FUSED = PRESETS + [
    # odd widths (bit accumulator), unsigned, no subnormals, 16 bits, unclamped fixed point
    "e3m3", "e5m0", "e4m3fnu_sat", "e4m3fn_nosub", "e5m10b20", "fixed<12,6,symmetric>",
    "fixed<6,2,noclamp>", "int3", "uint7", "uint1",
    # blocks: whole rows, other rules, integer elements, float scales, one-level AMAX
    "block<e3m2fn,e8m0fnu,none,-1,rceil>", "block<int4,e8m0fnu,16,-1,even>",
    "block<e2m1fn,e4m3fnu_sat,16,-1,floor>", "block<e2m1fn,e4m3fnu_sat,16,-1,amax>",
    "block<fixed<7,3>,bf16,8,-1,floor>", "block<e4m3fn,e8m0fnu,32,-1,ceil>",
]
# Served by the general path (the fused functions must decline them).
GENERAL = ["fp32", "e8m0fnu", "fixed<25,10>", "e8m3fn", "bfp8",
           "block<e4m3fn,e8m0fnu,(4,8),(-2,-1),ceil>",
           "block<e2m1fn,e8m0fnu,32,0,floor>", "block<e3m2fn,e8m0fnu,8,-1,amax>",
           "block<e2m1fn,e8m0fnub160,32,-1,floor>"]


def _bits(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """int32 bit patterns with every NaN made one value (NaN payloads are not stored)."""
    if t is None or not t.is_floating_point():
        return t
    t = t.float()
    return torch.where(torch.isnan(t), torch.full_like(t, NAN), t).view(torch.int32)


def _equal(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _general(monkeypatch, fn, *args, **kw):
    """``fn`` with the fused kernels switched off (the general path), also where ``quantize``
    itself would take them (the AMAX rule and tiles on the CPU, ``_cpu_block``), so that the
    two paths stay independent."""
    with monkeypatch.context() as m:
        m.setattr(codec, "encode_fused", lambda *a: None)
        m.setattr(codec, "decode_fused", lambda *a: None)
        m.setattr(quantize_module, "_cpu_block", lambda *a: None)
        return fn(*args, **kw)


def _edge_data(shape, seed: int) -> torch.Tensor:
    """Random fp32 bit patterns mixed with normal values of all magnitudes, ±0, fp32
    subnormals, ±Inf, NaN of both signs and near-tie values; a NaN block, an Inf block and a
    zero block at the start of rows long enough."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for d in shape:
        n *= d
    raw = torch.randint(-2**31, 2**31 - 1, (n,), generator=g, dtype=torch.int32)
    wide = torch.randn(n, generator=g) * torch.exp2(torch.randint(-30, 30, (n,), generator=g)
                                                    .float())
    ties = torch.randint(-64, 64, (n,), generator=g).float() / 16 + 2.0**-10
    special = torch.tensor([0.0, -0.0, INF, -INF, NAN, -NAN, 1e-40, -1e-42, 2.0**-149, 448.0,
                            6.0, 3.4e38])[torch.randint(0, 12, (n,), generator=g)]
    pick = torch.randint(0, 8, (n,), generator=g)
    x = torch.where(pick < 2, raw.view(torch.float32), wide)
    x = torch.where(pick == 6, ties, torch.where(pick == 7, special, x)).view(shape)
    if len(shape) >= 2 and shape[-1] >= 48:
        rows = x.view(-1, shape[-1])
        rows[:, :48] = torch.randn(rows.shape[0], 48, generator=g)
        rows[0, :16] = NAN
        rows[0, 16] = INF
        rows[0, 32:48] = 0.0
    return x


def _check(monkeypatch, x: torch.Tensor, name: str, **opts) -> Packed:
    """encode through the fused kernels (asserting they ran) and through the general path:
    the same storage and the same decoded values."""
    fmt = get(name)
    rnd = Rounding.parse(opts.get("rounding", "nearest"), "rounding")
    want = _general(monkeypatch, encode, x, fmt, **opts)
    if rnd is Rounding.STOCHASTIC:
        seed = opts["seed"]
    else:
        seed = None
    rbits = opts.get("rbits") or 32
    assert encode_fused(x, fmt, rnd, rbits, seed, opts.get("nan", "raise")) is not None
    got = encode(x, fmt, **opts)
    assert torch.equal(got.codes, want.codes)
    assert _equal(got.scales, want.scales) and _equal(got.tensor_scale, want.tensor_scale)
    assert _equal(decode(got), _general(monkeypatch, decode, want))
    return got


def test_coverage():
    x = torch.randn(4, 64)
    for name in FUSED:
        fmt = get(name)
        assert encode_fused(x, fmt, Rounding.NEAREST, 32, None, "zero") is not None, name
        p = encode(x, fmt, nan="zero")
        assert decode_fused(p.codes, p.scales, p.tensor_scale, fmt, p.shape) is not None, name
    for name in GENERAL:
        assert encode_fused(x, get(name), Rounding.NEAREST, 32, None, "zero") is None, name


# every mode for the presets; the other formats share their code paths
CASES = [(n, m) for n in PRESETS for m in MODES] + [
    (n, m) for n in FUSED[len(PRESETS):] for m in ("nearest", "down", "stochastic")]


@pytest.mark.parametrize("name, rounding", CASES)
def test_encode_equals_general_path(monkeypatch, name, rounding):
    seed = 0x1234_5678_9ABC_DEF0 if rounding == "stochastic" else None
    nan = "raise" if name == "fixed<6,2,noclamp>" else "zero"
    if name == "fixed<6,2,noclamp>":  # values its 6 bits hold
        g = torch.Generator().manual_seed(3)
        x = torch.randint(-32, 32, (5, 37), generator=g).float() / 4
        x = x + torch.rand(5, 37, generator=g) / 8 - 1 / 16
        x = x.clamp(-7.9, 7.7)
    else:
        x = _edge_data((5, 97), seed=len(name) + 7 * MODES.index(rounding))
    _check(monkeypatch, x, name, rounding=rounding, seed=seed, nan=nan)


@pytest.mark.parametrize("shape", [(1,), (3,), (7,), (2, 5), (3, 16), (2, 33), (3, 1, 50)])
@pytest.mark.parametrize("name", ["e2m1fn", "e3m2fn", "int3", "e5m10b20", "mxfp4",
                                  "mxfp6_e3m2", "nvfp4", "mxfp8_e4m3"])
def test_odd_counts_and_ragged_blocks(monkeypatch, name, shape):
    """Odd element counts (half bytes, 6-bit groups cut short), ragged last blocks, rows whose
    codes do not end on a byte (the one-code-per-element path)."""
    x = _edge_data(shape, seed=sum(shape))
    for rounding, seed in (("nearest", None), ("stochastic", 99)):
        _check(monkeypatch, x, name, rounding=rounding, seed=seed, nan="zero")


@pytest.mark.parametrize("name", ["e4m3fn", "e2m1fn", "mxfp4", "mxfp6_e2m3", "nvfp4", "int8"])
def test_many_tasks(monkeypatch, name):
    """Enough elements for two parallel tasks (and Philox counters past one task's)."""
    x = torch.randn(4, 36000, generator=torch.Generator().manual_seed(1)) * 3
    x[2, 777] = INF
    _check(monkeypatch, x, name, rounding="stochastic", seed=2**63 + 5, nan="zero")
    _check(monkeypatch, x, name, rounding="up", nan="zero")
    if name != "nvfp4":  # its general path is the slow reference
        _check(monkeypatch, x, name, rounding="stochastic", seed=11, rbits=5, nan="zero")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(monkeypatch, dtype):
    x = (torch.randn(6, 64, generator=torch.Generator().manual_seed(4)) * 100).to(dtype)
    blocks = ("mxfp4",) if dtype == torch.bfloat16 else ()  # fp16 cannot hold 2^127 scales
    for name in ("e4m3fn", "e2m1fn", "int8") + blocks:
        p = _check(monkeypatch, x, name, rounding="stochastic", seed=3)
        assert decode(p).dtype == dtype


def test_nvfp4_tensor_scales(monkeypatch):
    """NVFP4's tensor scale at its floor (tiny tensors), an Inf in the tensor (p = Inf), NaN
    in the tensor (p = NaN: every element code 0), an all-zero tensor."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(16, 64, generator=g)
    x[0, :16] *= 1e-3
    for scaled in (x, x * 1e-35, x * 1e30, torch.zeros(4, 32)):
        for rounding, seed in (("nearest", None), ("stochastic", 5)):
            _check(monkeypatch, scaled, "nvfp4", rounding=rounding, seed=seed)
    for special in (INF, NAN):
        y = x.clone()
        y[3, 5] = special
        p = _check(monkeypatch, y, "nvfp4")
        assert torch.isnan(decode(p)).all()  # 0 · Inf where p = Inf, as quantize


@pytest.mark.parametrize("name", ["e2m1fn", "int4", "fixed<6,2,noclamp>",
                                  "block<e2m1fn,e4m3fnu_nonan,16,-1,amax>",
                                  "block<int4,e4m3fn_nonan,16,-1,floor>"])
def test_errors_as_the_general_path(monkeypatch, name):
    """Calls that must raise get the general path's error; nan="zero" is served fused."""
    x = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    x[1, 3] = NAN if "noclamp" not in name else 100.0
    with pytest.raises(ValueError) as fused_err:
        encode(x, name)
    with pytest.raises(ValueError) as general_err:
        _general(monkeypatch, encode, x, name)
    assert str(fused_err.value) == str(general_err.value)
    if "noclamp" not in name:
        _check(monkeypatch, x, name, nan="zero")


def _random_packed(name: str, shape, seed: int) -> Packed:
    """Storage holding every kind of byte: random codes, random scale codes (NaN among them),
    a random tensor scale."""
    fmt = get(name)
    g = torch.Generator().manual_seed(seed)
    ref = encode(torch.randn(shape, generator=g), fmt, nan="zero")
    codes = torch.randint(0, 256, ref.codes.shape, generator=g, dtype=torch.int32)
    bits = (fmt.element if isinstance(fmt, BlockFormat) else fmt).bits
    tail = (ref.numel * bits) % 8
    if tail:  # unused trailing bits stay zero
        codes[-1] &= (1 << tail) - 1
    scales, ts = ref.scales, ref.tensor_scale
    if scales is not None:
        top = min(2 ** fmt.scale.bits, 256)
        scales = torch.randint(0, top, scales.shape, generator=g).to(scales.dtype)
    if ts is not None:
        ts = torch.rand((), generator=g) * 1e-3
    return Packed(codes.to(torch.uint8), tuple(shape), fmt, scales, ts)


@pytest.mark.parametrize("name", FUSED)
def test_decode_equals_general_path(monkeypatch, name):
    one_row = (1, 7) if isinstance(get(name), BlockFormat) else (7,)  # (7,): one block
    for shape in ((5, 97), (3, 32), one_row):
        p = _random_packed(name, shape, seed=len(name))
        want = _general(monkeypatch, decode, p)
        assert decode_fused(p.codes, p.scales, p.tensor_scale, p.fmt, p.shape) is not None
        assert _equal(decode(p), want)


def test_thread_count_does_not_change_bytes():
    numba = pytest.importorskip("numba")
    x = torch.randn(3, 50000, generator=torch.Generator().manual_seed(8))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [encode(x, n, rounding="stochastic", seed=4) for n in ("e4m3fn", "mxfp4", "nvfp4")]
    finally:
        numba.set_num_threads(before)
    for p, n in zip(one, ("e4m3fn", "mxfp4", "nvfp4")):
        q = encode(x, n, rounding="stochastic", seed=4)
        assert torch.equal(p.codes, q.codes) and _equal(p.scales, q.scales)


def test_nvfp4_general_path_fast_and_reference_elements(monkeypatch):
    """The general path's two ways to NVFP4's element values (read back from quantize, or
    recomputed as the reference when P · s leaves fp32's normal range) still agree with
    quantize (moved here from test_codec: the fused kernels now serve NVFP4 by default)."""
    import lowbit as lb
    from lowbit.ops.codec import block

    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(12))
    x = x / x.abs().amax()
    x[0, :16] *= 1e-3
    calls = []
    orig = block._amax_elements_reference
    monkeypatch.setattr(block, "_amax_elements_reference",
                        lambda *a: calls.append(1) or orig(*a))
    for scale, used_reference in [(1.0, False), (1e-35, True)]:
        calls.clear()
        xs = x * scale
        got = _general(monkeypatch, lambda: decode(encode(xs, "nvfp4")))
        assert _equal(got, lb.quantize(xs, "nvfp4"))
        assert bool(calls) == used_reference


# -- the Triton kernels: in the interpreter on CPU tensors, compiled on CUDA (gpu) ---------------
TRITON = ["e4m3fn", "e5m2", "bf16", "fp16", "e4m3fnuz", "e3m4", "e3m2fn", "e2m1fn", "int8",
          "int4", "uint8", "fixed<8,4>", "e5m10b20", "mxfp8_e4m3", "mxfp8_e5m2",
          "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4", "block<int4,e8m0fnu,16,-1,even>",
          "block<e2m1fn,e4m3fnu_sat,16,-1,amax>", "block<e4m3fn,e8m0fnu,32,-1,ceil>"]


def _check_triton(monkeypatch, x: torch.Tensor, name: str, rounding: str = "nearest",
                  seed: Optional[int] = None, nan: str = "zero", rbits: int = 32) -> None:
    """The Triton kernels (interpreted on CPU tensors) against the general path on the CPU."""
    fmt = get(name)
    got = encode_fused(x, fmt, Rounding(rounding), rbits, seed, nan, triton=True)
    assert got is not None
    want = _general(monkeypatch, encode, x.cpu(), fmt, rounding=rounding, seed=seed, nan=nan,
                    rbits=rbits if rounding == "stochastic" else None)
    codes, scales, ts = (t.cpu() for t in got)
    assert torch.equal(codes, want.codes)
    if want.scales is not None:
        assert _equal(scales, want.scales)
    if want.tensor_scale is not None:
        assert _equal(ts, want.tensor_scale)
    stored = want.to(x.device)
    y = decode_fused(stored.codes, stored.scales, stored.tensor_scale, fmt, want.shape,
                     triton=True)
    assert y is not None and _equal(y.cpu(), _general(monkeypatch, decode, want))


@pytest.mark.parametrize("name", TRITON)
def test_triton_interpreter(monkeypatch, name):
    pytest.importorskip("triton")
    x = _edge_data((4, 64), seed=len(name))
    for i, rounding in enumerate(MODES):
        seed = 77 if rounding == "stochastic" else None
        _check_triton(monkeypatch, x if i % 2 else x * 1e-3, name, rounding, seed)


def test_triton_interpreter_edges(monkeypatch):
    pytest.importorskip("triton")
    for shape in ((1,), (3,), (7,), (5, 9)):  # partial bytes and 6-bit groups
        for name in ("e2m1fn", "e3m2fn", "int4", "fp16"):
            _check_triton(monkeypatch, _edge_data(shape, seed=3), name, "stochastic", 5)
    _check_triton(monkeypatch, _edge_data((2, 32), seed=1), "mxfp4", "stochastic", 9, rbits=3)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2))
    for special in (NAN, INF):  # NVFP4's tensor scale NaN (every code 0) or Inf
        y = x.clone()
        y[2, 9] = special
        _check_triton(monkeypatch, y, "nvfp4")
    _check_triton(monkeypatch, x * 1e-36, "nvfp4")  # the tensor scale's floor
    nan = x.clone()
    nan[0, 0] = NAN
    assert encode_fused(nan, get("e2m1fn"), Rounding.NEAREST, 32, None, "raise",
                        triton=True) is None  # the general path raises
    assert encode_fused(torch.tensor([100.0]), get("fixed<6,2,noclamp>"), Rounding.NEAREST, 32,
                        None, "raise", triton=True) is None
    ragged = torch.randn(3, 40)  # blocks of 32 that do not divide the rows: general path
    assert encode_fused(ragged, get("mxfp4"), Rounding.NEAREST, 32, None, "raise",
                        triton=True) is None


@pytest.mark.parametrize("name", ["e4m3fn", "e3m2fn", "mxfp4", "mxfp6_e2m3", "nvfp4"])
def test_triton_interpreter_decodes_every_byte(monkeypatch, name):
    pytest.importorskip("triton")
    p = _random_packed(name, (3, 64), seed=5)
    y = decode_fused(p.codes, p.scales, p.tensor_scale, p.fmt, p.shape, triton=True)
    assert _equal(y, _general(monkeypatch, decode, p))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("name", TRITON)
def test_triton_on_cuda(monkeypatch, name, rounding):
    """Compiled on CUDA, several programs: the general path's bytes on the CPU (the stream
    does not depend on the device), and the decoded values."""
    x = _edge_data((64, 4096), seed=len(name)).cuda()
    seed = 2**64 - 3 if rounding == "stochastic" else None
    _check_triton(monkeypatch, x, name, rounding, seed)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_on_cuda_through_encode(monkeypatch):
    """With the Triton kernels as CUDA's default, lowbit.encode/decode on CUDA tensors equal
    the CPU's (and torch.compile still traces the ops)."""
    from lowbit.ops.codec import fused

    monkeypatch.setattr(fused, "GPU_DEFAULT", True)
    x = torch.randn(256, 1024, generator=torch.Generator().manual_seed(6))
    for name in ("e4m3fn", "mxfp4", "nvfp4"):
        p = encode(x.cuda(), name, rounding="stochastic", seed=1)
        q = encode(x, name, rounding="stochastic", seed=1)
        assert torch.equal(p.codes.cpu(), q.codes) and _equal(decode(p).cpu(), decode(q))
