"""The CPU backend (numba kernels) is bit-identical to the reference backend.

Every scalar preset, every block preset and a set of generic formats (bias, no subnormals,
saturation, fnuz, unsigned, a beyond-fp32 exponent range, fixed point with and without clamp,
symmetric, negative ``fl``; block rules, ragged blocks, whole-tensor blocks) is rounded on both backends in every mode (stochastic with rbits 1, 7 and 32) and the
int32 bit patterns compared; NaN compares equal to NaN whatever its payload.  Inputs: random
fp32 bit patterns (every binade, subnormals, Inf, NaN and both zeros included) and "edge"
patterns whose low r bits are cleared, an exact tie, or a tie ± 1 ulp, for every r, so that
every format meets exact ties and on-grid values in every binade.

Compilation is the cost here (seconds per kernel family, once per machine thanks to numba's
on-disk cache); each family compiles once for all of its formats and modes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

import lowbit  # noqa: E402
from lowbit.formats import PRESETS, BlockFormat, IntFormat, Rounding, get  # noqa: E402
from lowbit.kernels import cpu  # noqa: E402
from lowbit.kernels.cpu import _scalar  # noqa: E402

SCALAR_PRESETS = [name for name, fmt in PRESETS.items() if not isinstance(fmt, BlockFormat)]
BLOCK_PRESETS = [name for name, fmt in PRESETS.items() if isinstance(fmt, BlockFormat)]
GENERIC_BLOCKS = [
    "bfp8",                                          # one block for the tensor (FLOOR)
    "block<e4m3fn,e8m0fnu,none,none,ceil>",
    "block<e4m3fn,e8m0fnu,16,-1,ceil>",
    "block<e2m1fn,e8m0fnu,32,-1,even>",
    "block<e5m2,e8m0fnu,32,-1,rceil>",
    "block<e4m3fnuz,e4m3fnu,8,-1,floor>",            # a float scale format
    "block<e4m3fn,e8m0fnu,64,-1,floor>",             # blocks longer than the rows: one per row
    "block<int8,e8m0fnu,none,-1,floor>",             # one block per row
    "block<fixed<8,4>,e8m0fnu,32,-1,rceil>",
    "block<fixed<6,2,noclamp>,e8m0fnu,32,-1,even>",
    "block<e8m3fn_nonan,e8m0fnu,8,-1,rceil>",        # element max beyond fp32: max_elem = Inf
    "block<e3m2fn,e8m0fnu,32,0,floor>",              # another axis: served by the reference
]
GENERIC = [
    "e5m2b11",                # non-default bias
    "e4m3b-3fn",              # negative bias: range far above 1
    "e4m3b20fn_sat",          # saturating fn with a large bias
    "e5m2_sat",               # saturating IEEE
    "e4m3fn_nosub",           # subnormals flushed
    "e2m1fn_nosub_nonan",     # flushed, no specials
    "e3m0",                   # no mantissa bits
    "e5m2fnuz_sat",
    "e4m3fnu",                # unsigned with NaN (UE4M3, NVFP4's block scale)
    "e3m2fnu_nonan",          # unsigned without NaN
    "e8m7fn_nonan",           # exp=8 beyond the fp32 carrier
    "e8m3b200fn_nonan",       # normal range starting below fp32's (the exact-exponent kernel)
    "e8m23b200",
    "e8m0fnub200",            # ExpFormat whose smallest value underflows fp32
    "e5m0fnub-3_sat",         # ExpFormat, saturating
    "fixed<8,4>",
    "fixed<8,4,noclamp>",
    "fixed<8,4,symmetric>",
    "fixed<8,-4>",            # negative fl: step 16
    "fixed<25,149>",          # step 2^-149
    "fixed<2,-126>",          # top of fp32's range
    "int24",
    "uint4",
]
FORMATS = SCALAR_PRESETS + GENERIC
DETERMINISTIC = [r for r in Rounding if r is not Rounding.STOCHASTIC]
SEED = 0xFEDC_BA98_7654_3210  # above 2^63: both key words and the sign bit of the int64 seed


def _bit_patterns(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    edge = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    r = rng.integers(1, 32, n).astype(np.uint32)
    low = (np.uint32(1) << r) - np.uint32(1)
    tie = np.uint32(1) << (r - np.uint32(1))
    kind = rng.integers(0, 4, n)
    edge = edge & ~low
    edge = np.where(kind == 1, edge | tie, edge)
    edge = np.where(kind == 2, edge | (tie + np.uint32(1)), edge)
    edge = np.where(kind == 3, edge | (tie - np.uint32(1)), edge)
    specials = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                         0x7F800001, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000,
                         0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000], dtype=np.uint32)
    bits = np.concatenate([specials, raw, edge]).view(np.int32)
    return torch.from_numpy(bits.copy()).view(torch.float32)


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return _bit_patterns(60_000, 1234)  # 120_015 values


def _same_bits(got: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, what: str) -> None:
    assert got.dtype == ref.dtype and got.shape == ref.shape, what
    g, r = got.view(torch.int32), ref.view(torch.int32)
    bad = (g != r) & ~(got.isnan() & ref.isnan())
    if bad.any():
        i = bad.nonzero().flatten()[:5].tolist()
        xb = [hex(v & 0xFFFFFFFF) for v in x.reshape(-1).view(torch.int32)[i].tolist()]
        pytest.fail(f"{what}: {int(bad.sum())} differ; at inputs {xb}: cpu "
                    f"{got.reshape(-1)[i].tolist()} vs reference {ref.reshape(-1)[i].tolist()}")


def _zeros_positive(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t == 0, torch.zeros_like(t), t)


def _compare(x, fmt, **kwargs):
    got = lowbit.quantize(x, fmt, backend="cpu", **kwargs)
    ref = lowbit.quantize(x, fmt, backend="reference", **kwargs)
    if isinstance(fmt, IntFormat) and not fmt.signed:
        # The reference's sign of a zero depends on the element's position for unsigned
        # ints (torch.maximum(-0.0, 0.0) differs between its vectorised body and its scalar
        # tail; tests/kernels/test_reference_fixed.py pins +0).  The CPU kernel gives +0.
        assert not torch.signbit(got[got == 0]).any()
        ref = _zeros_positive(ref)
    _same_bits(got, ref, x, f"{fmt!r} {kwargs}")
    return got


@pytest.mark.parametrize("rounding", [r.value for r in Rounding])
@pytest.mark.parametrize("name", FORMATS)
def test_bit_identical_to_reference(name, rounding, inputs):
    fmt = get(name)
    if rounding == "stochastic":
        for rbits in (1, 7, 32):
            _compare(inputs, fmt, rounding=rounding, rbits=rbits, seed=SEED)
    else:
        _compare(inputs, fmt, rounding=rounding)


@pytest.fixture(scope="module")
def block_inputs() -> list:
    # Rows of 37 (ragged blocks; > 2 parallel tasks of blocks), random bit patterns (NaN/Inf
    # blocks included) and normal values spread over the whole exponent range.
    raw = _bit_patterns(40_000, 99)[: 2000 * 37].view(2000, 37)
    gen = torch.Generator().manual_seed(5)
    scale = torch.exp2(torch.randint(-140, 120, (1000, 1), generator=gen).float())
    return [raw, torch.randn(1000, 37, generator=gen) * scale]


def _block_cases() -> list:
    """Every block format × mode; a layout the CPU backend hands to the reference (AMAX rule,
    blocks off the last axis) is checked in two modes only: the hand-over is all it does."""
    cases = []
    for name in BLOCK_PRESETS + GENERIC_BLOCKS:
        fmt = get(name)
        served = cpu._block.layout(fmt, (2, 37)) is not None and fmt.scale_rule.value != "amax"
        for r in Rounding:
            if served or r.value in ("nearest", "stochastic"):
                cases.append((name, r.value))
    return cases


@pytest.mark.parametrize("name, rounding", _block_cases())
def test_blocks_bit_identical_to_reference(name, rounding, block_inputs):
    fmt = get(name)
    seed = SEED if rounding == "stochastic" else None
    for x in block_inputs:
        _compare(x, fmt, rounding=rounding, seed=seed)
    _compare(block_inputs[1][:, :32].contiguous(), fmt, rounding=rounding, seed=seed)


def test_every_scalar_preset_is_covered():
    # The CPU backend serves every non-block preset (nothing falls back to the reference).
    for name in SCALAR_PRESETS:
        assert lowbit.kernels.dispatch.kernel_for(
            lowbit.kernels.dispatch.Backend.CPU, type(get(name)), torch.device("cpu")) in (
            cpu.quantize_float, cpu.quantize_exp, cpu.quantize_fixed)
    assert cpu._block.layout(get("mxfp8_e4m3"), (4, 64)) == (64, 32)  # fused, not the reference
    assert cpu._block.layout(get("bfp8"), (4, 64)) == (0, 0)


def test_comparison_catches_a_difference(inputs):
    # The comparison above is able to fail: a one-ulp change is found.
    got = lowbit.quantize(inputs, "e4m3fn", backend="cpu")
    bumped = (got.view(torch.int32) ^ 1).view(torch.float32)
    with pytest.raises(pytest.fail.Exception):
        _same_bits(bumped, got, inputs, "bumped")


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1023, _scalar.BLOCK + 3, _scalar.CHUNK + 5,
                               2 * _scalar.CHUNK + 1026])
def test_stream_positions_across_chunks(n):
    # Elements keep their logical index in the Philox stream across sub-blocks, chunks and
    # ragged ends (word n & 3 of counter n >> 2).
    x = torch.randn(n) * 3
    for fmt in ("e4m3fn", "fixed<8,4>", "e8m0fnu"):
        _compare(x, get(fmt), rounding="stochastic", rbits=13, seed=SEED)


def test_shapes_and_low_precision_inputs():
    x = torch.randn(3, 5, 7) * 100
    _compare(x, get("e5m2"))
    _compare(x.transpose(0, 2), get("e4m3fn"), rounding="stochastic", seed=7)  # not contiguous
    for dtype in (torch.bfloat16, torch.float16):
        xl = x.to(dtype)
        got = lowbit.quantize(xl, "e4m3fn", backend="cpu")
        ref = lowbit.quantize(xl, "e4m3fn", backend="reference")
        assert got.dtype == dtype
        assert torch.equal(got.view(torch.int16), ref.view(torch.int16))


def test_out_is_written_directly():
    x = torch.randn(1000) * 50
    fmt = get("e4m3fn")
    expected = cpu.quantize_float(x, fmt, Rounding.NEAREST, 32, None)
    out = torch.empty(1000)
    res = cpu.quantize_float(x, fmt, Rounding.NEAREST, 32, None, out=out)
    assert res is out and torch.equal(out, expected)
    y = x.clone()  # in place: each element is read before it is written
    cpu.quantize_float(y, fmt, Rounding.NEAREST, 32, None, out=y)
    assert torch.equal(y, expected)
    strided = torch.empty(2000)[::2]  # not contiguous: written through a copy
    res = cpu.quantize_float(x, fmt, Rounding.NEAREST, 32, None, out=strided)
    assert res is strided and torch.equal(strided, expected)
    overlap = torch.zeros(1500)
    overlap[500:] = x  # overlapping but not identical: must not read its own output
    res = cpu.quantize_float(overlap[500:], fmt, Rounding.NEAREST, 32, None, out=overlap[:1000])
    assert torch.equal(res, expected)


def test_thread_count_does_not_change_the_result():
    import numba

    x = torch.randn(3 * _scalar.CHUNK + 77)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = cpu.quantize_float(x, get("bf16"), Rounding.STOCHASTIC, 32, SEED)
    finally:
        numba.set_num_threads(before)
    assert torch.equal(one, cpu.quantize_float(x, get("bf16"), Rounding.STOCHASTIC, 32, SEED))


def test_kernels_reject_what_they_cannot_take():
    with pytest.raises(ValueError, match="contiguous fp32"):
        cpu.quantize_float(torch.zeros(4, dtype=torch.float64), get("bf16"),
                           Rounding.NEAREST, 32, None)


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def _env(**extra) -> dict:
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(lowbit.__file__))
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_lean_import_and_missing_numba():
    # `import lowbit` imports no numba; without numba the CPU module raises
    # ModuleNotFoundError for "numba" (dispatch tells a missing backend by that name).
    code = ("import sys, lowbit\n"
            "assert 'numba' not in sys.modules, 'numba imported'\n"
            "sys.modules['numba'] = None\n"
            "try:\n    import lowbit.kernels.cpu\n"
            "except ModuleNotFoundError as e:\n    print('missing', e.name)\n")
    res = _run_python(code, _env())
    assert res.returncode == 0 and res.stdout.strip() == "missing numba", res.stderr


def test_numba_cache_dir(tmp_path, monkeypatch):
    from lowbit.kernels.cpu import _env as env_mod

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert env_mod.configure_numba_cache() == str(tmp_path / "mine")  # the user's wins
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    import numba.core.config as numba_config

    monkeypatch.setattr(numba_config, "CACHE_DIR", "")
    path = env_mod.configure_numba_cache()
    assert path == str(tmp_path / "xdg" / "lowbit" / "numba") == os.environ["NUMBA_CACHE_DIR"]
    assert os.path.isdir(path) and numba_config.CACHE_DIR == path
