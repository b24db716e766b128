"""The group pack of ``lowbit.kernels.pack``: an independent numpy oracle for the reference,
every backend bit-identical to the reference, unbiasedness, storage size, masks."""

from __future__ import annotations

import math
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch

from lowbit.kernels.pack import (
    BITS, PackedGroups, group_nbytes, pack_groups, pack_mask, unpack_groups, unpack_mask,
)
from lowbit.kernels.philox import random_words

_PATTERNS = np.arange(1 << 16, dtype=np.uint16)
_FINITE = np.unique(_PATTERNS[(_PATTERNS >> 7) & 0xFF != 0xFF].view(ml_dtypes.bfloat16)
                    .astype(np.float64))  # every finite bf16 value, ascending


# -- an independent oracle of the contract (numpy scalars, ml_dtypes' bf16 value set) ----------
def _bf16_bits(v: float) -> int:
    return int(np.array([v], dtype=ml_dtypes.bfloat16).view(np.uint16)[0])


def _directed(v: float, up: bool) -> float:
    """v rounded onto the bf16 value set toward +Inf / -Inf (±Inf past the largest)."""
    if up:
        i = np.searchsorted(_FINITE, v, side="left")
        return float(_FINITE[i]) if i < len(_FINITE) else math.inf
    i = np.searchsorted(_FINITE, v, side="right") - 1
    return float(_FINITE[i]) if i >= 0 else -math.inf


@np.errstate(all="ignore")  # Inf and NaN arithmetic is part of the contract
def _oracle(x: np.ndarray, bits: int, gs: int, seed: int):
    n = x.size
    words = random_words(n, seed, torch.device("cpu")).numpy()
    L = (1 << bits) - 1
    q, los, his = [], [], []
    for start in range(0, n, gs):
        g = x[start:start + gs].astype(np.float32)
        if not np.all(np.isfinite(g)):
            lo = hi = math.nan
        else:
            lo = _directed(float(g.min()) + 0.0, up=False) + 0.0
            hi = _directed(float(g.max()) + 0.0, up=True) + 0.0
        los.append(lo)
        his.append(hi)
        span = np.float32(np.float32(hi) - np.float32(lo))
        ok = bool(0 < span < np.inf)
        scale = np.float32(np.float32(L) / span) if ok else np.float32(0)
        for i, v in enumerate(g):
            if not ok:
                q.append(0)
                continue
            t = np.float32(np.float32(v - np.float32(lo)) * scale)
            whole = np.float32(math.floor(t))
            u = np.float32((int(words[start + i]) >> 8) * 2.0 ** -24)
            q.append(min(int(whole) + int(u < np.float32(t - whole)), L))
    stream = np.zeros(-(-n * bits // 8) * 8, dtype=np.uint8)
    for i, c in enumerate(q):
        for b in range(bits):
            stream[i * bits + b] = (c >> b) & 1
    codes = np.packbits(stream, bitorder="little")
    return codes, los, his, q


@np.errstate(all="ignore")
def _decode_oracle(q, los, his, bits, gs):
    L = np.float32((1 << bits) - 1)
    out = []
    for i, c in enumerate(q):
        lo, hi = np.float32(los[i // gs]), np.float32(his[i // gs])
        step = np.float32(np.float32(hi - lo) / L)
        out.append(np.float32(lo + np.float32(np.float32(c) * step)))
    return np.array(out, dtype=np.float32)


def _cases():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(203, generator=g) * 3
    x[5:9] = 0.0  # zeros, with a -0 among them
    x[7] = -0.0
    x[40:56] = 1.5  # a constant group (group size 8 and 16)
    x[100] = 3.39e38  # above bf16's largest finite value: the upper bound rounds to +Inf
    x[120] = 1e-40  # subnormal
    nan = x.clone()
    nan[17] = float("nan")
    nan[150] = float("inf")
    return {"random": x, "nonfinite": nan}


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("gs", [8, 16])
@pytest.mark.parametrize("case", ["random", "nonfinite"])
def test_reference_matches_oracle(bits, gs, case):
    x = _cases()[case]
    p = pack_groups(x, bits=bits, group_size=gs, seed=0xDEADBEEF12345, backend="reference")
    codes, los, his, q = _oracle(x.numpy(), bits, gs, 0xDEADBEEF12345)
    np.testing.assert_array_equal(p.codes.numpy(), codes)
    lo_bits = p.lo.view(torch.int16).numpy().view(np.uint16)
    hi_bits = p.hi.view(torch.int16).numpy().view(np.uint16)
    for g, (lo, hi) in enumerate(zip(los, his)):
        if math.isnan(lo):
            assert lo_bits[g] == hi_bits[g] == 0x7FC0
        else:
            assert (lo_bits[g], hi_bits[g]) == (_bf16_bits(lo), _bf16_bits(hi))
    y = unpack_groups(p, backend="reference").numpy()
    want = _decode_oracle(q, los, his, bits, gs)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(y[ok].view(np.uint32), want[ok].view(np.uint32))


def _inputs():
    g = torch.Generator().manual_seed(2)
    out = {
        "tail": (torch.randn(1000, generator=g), 256),
        "one": (torch.tensor([0.25]), 8),
        "bf16_3d": (torch.randn(3, 77, 5, generator=g).bfloat16(), 64),
        "fp16": (torch.randn(4096, generator=g).half() * 100, 256),
        "noncontig": (torch.randn(40, 33, generator=g).t(), 16),
        "special": (_cases()["nonfinite"], 8),
        "wide": (torch.randn(3 * 4096 + 5, generator=g), 4096),
    }
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    fa, fb = a.float().reshape(-1), b.float().reshape(-1)
    assert torch.equal(torch.isnan(fa), torch.isnan(fb))
    ok = ~torch.isnan(fa)
    assert torch.equal(fa[ok].view(torch.int32), fb[ok].view(torch.int32))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("name", list(_inputs()))
def test_backends_bit_identical(backend, bits, name):
    if backend == "triton":
        pytest.importorskip("triton")
    x, gs = _inputs()[name]
    ref = pack_groups(x, bits=bits, group_size=gs, seed=77, backend="reference")
    got = pack_groups(x, bits=bits, group_size=gs, seed=77, backend=backend)
    assert torch.equal(got.codes, ref.codes)
    assert torch.equal(got.lo.view(torch.int16), ref.lo.view(torch.int16))
    assert torch.equal(got.hi.view(torch.int16), ref.hi.view(torch.int16))
    _same(unpack_groups(ref, backend=backend), unpack_groups(ref, backend="reference"))


def test_empty():
    for backend in ("reference", "cpu"):
        p = pack_groups(torch.empty(0, 3), bits=2, seed=1, backend=backend)
        assert p.codes.numel() == 0 and p.lo.numel() == 0
        assert unpack_groups(p, backend=backend).shape == (0, 3)


@pytest.mark.parametrize("bits", BITS)
def test_unbiased(bits):
    """S copies of one tensor are S independent draws (same groups, distinct stream indices):
    each element's mean decode is within 5 standard errors (sd <= step/2) of the input."""
    S, gs = 2000, 256
    x = torch.randn(2 * gs, generator=torch.Generator().manual_seed(3)) * 2
    p = pack_groups(x.repeat(S), bits=bits, group_size=gs, seed=99, backend="cpu")
    y = unpack_groups(p, backend="cpu").view(S, -1).double()
    lo = p.lo[:2].double().repeat_interleave(gs)
    step = (p.hi[:2].double().repeat_interleave(gs) - lo) / ((1 << bits) - 1)
    slack = 4 * torch.finfo(torch.float32).eps * x.abs().max()  # fp32 decode roundings
    err = (y.mean(0) - x.double()).abs()
    assert torch.all(err <= 5 * step / (2 * math.sqrt(S)) + slack)
    # only the two neighbours of t = (x - lo) / step appear
    t = (x.double() - lo) / step
    k = torch.round((y - lo) / step)
    assert torch.all((k >= torch.floor(t) - 1e-4) & (k <= torch.ceil(t) + 1e-4))
    # and the global mean error is far below one step
    assert abs((y.mean(0) - x.double()).mean()) <= 5 * step.max() / (2 * math.sqrt(S * x.numel()))


def test_values_stay_in_bounds():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(4)) * 1e3
    p = pack_groups(x, bits=2, group_size=256, seed=5)
    lo = p.lo.float().repeat_interleave(256)
    hi = p.hi.float().repeat_interleave(256)
    assert torch.all((lo <= x) & (x <= hi))
    y = unpack_groups(p)
    assert torch.all((lo <= y) & (y <= hi * (1 + 1e-6)))


@pytest.mark.parametrize("bits,bound", [(1, 0.071), (2, 0.135), (4, 0.26), (8, 0.51)])
def test_storage_bytes(bits, bound):
    """Bytes actually held against bf16 (2 bytes per element), group 256."""
    x = torch.randn(64, 1024).bfloat16()
    p = pack_groups(x, bits=bits, group_size=256, seed=0)
    assert p.codes.numel() == x.numel() * bits // 8 and p.lo.numel() == x.numel() // 256
    assert p.nbytes == group_nbytes(x.numel(), bits, 256)
    assert p.nbytes / (2 * x.numel()) <= bound
    assert group_nbytes(1001, 2, 256) == 251 + 16


def test_seed():
    x = torch.randn(4096)
    a = pack_groups(x, bits=2, seed=1)
    b = pack_groups(x, bits=2, seed=1)
    c = pack_groups(x, bits=2, seed=2)
    assert torch.equal(a.codes, b.codes) and not torch.equal(a.codes, c.codes)
    torch.manual_seed(5)
    d = pack_groups(x, bits=2)
    torch.manual_seed(5)
    assert pack_groups(x, bits=2).seed == d.seed


def test_offload_copy_round_trip():
    p = pack_groups(torch.randn(300), bits=4, group_size=8, seed=3)
    q = p.to(torch.device("cpu"))
    assert isinstance(q, PackedGroups)
    _same(unpack_groups(q), unpack_groups(p))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
def test_mask_round_trip_and_layout(n):
    m = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    codes = pack_mask(m)
    want = np.packbits(m.numpy().astype(np.uint8), bitorder="little")
    np.testing.assert_array_equal(codes.numpy(), want)
    assert torch.equal(unpack_mask(codes, (n,)), m)
    m2 = m[: n - n % 4].view(-1, 4) if n >= 4 else m.view(-1, 1)
    assert torch.equal(unpack_mask(pack_mask(m2), tuple(m2.shape)), m2)


@pytest.mark.parametrize("kwargs,err", [
    (dict(bits=3), ValueError), (dict(bits=True), ValueError), (dict(bits=2, group_size=12),
                                                                ValueError),
    (dict(bits=2, group_size=4), ValueError), (dict(bits=2, backend="gpu"), ValueError),
    (dict(bits=2, seed=-1), ValueError),
])
def test_validation(kwargs, err):
    with pytest.raises(err):
        pack_groups(torch.randn(10), **kwargs)


def test_type_validation():
    with pytest.raises(TypeError, match="x must be"):
        pack_groups(torch.arange(10), bits=2)
    with pytest.raises(TypeError, match="m must be"):
        pack_mask(torch.arange(10))
    with pytest.raises(TypeError, match="PackedGroups"):
        unpack_groups(torch.zeros(3))


def test_import_is_lean():
    code = ("import sys, lowbit.kernels.pack, lowbit.act; "
            "assert 'triton' not in sys.modules and 'numba' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('triton', 'numba')))")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_compiled_bit_identical(bits, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = (torch.randn(3 * 4096 + 77, generator=torch.Generator().manual_seed(6)) * 10).to(dtype)
    ref = pack_groups(x, bits=bits, group_size=256, seed=11, backend="reference")
    got = pack_groups(x.cuda(), bits=bits, group_size=256, seed=11, backend="triton")
    assert torch.equal(got.codes.cpu(), ref.codes)
    assert torch.equal(got.lo.cpu().view(torch.int16), ref.lo.view(torch.int16))
    assert torch.equal(got.hi.cpu().view(torch.int16), ref.hi.view(torch.int16))
    on_gpu = PackedGroups(got.codes, got.lo, got.hi, bits, 256, ref.shape, dtype, 11)
    _same(unpack_groups(on_gpu, backend="triton").cpu(), unpack_groups(ref))
