"""The Triton kernels compiled for CUDA, against the reference computed on the CPU (the
specification), at zero tolerance: every scalar and block preset × every rounding mode on large
tensors, generic formats, random-bit counts, the CPU/GPU identity of stochastic rounding for one
seed, Triton's own Philox, the current stream, compile counts and a tensor of 2^31 + 4099
elements.  Marked ``gpu``; skipped without CUDA.

Run on the GPU machine: ``PYTHONPATH=src python -m pytest -q -m gpu tests/kernels/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import lowbit  # noqa: E402
from lowbit.formats import FixedPoint, FloatFormat, get  # noqa: E402
from lowbit.kernels import philox  # noqa: E402
from lowbit.kernels.reference import quantize_block, quantize_float  # noqa: E402
from lowbit.kernels.triton import _launch  # noqa: E402
from lowbit.kernels.triton._jit.core import _philox  # noqa: E402

from _triton_cases import (  # noqa: E402
    BLOCK_FORMATS, GENERIC, MODES, RBITS_FORMATS, SCALAR_PRESETS, assert_same, block_probe,
    probe,
)

CUDA = torch.device("cuda")
SEED = 0x243F6A8885A308D3


def _check(x: torch.Tensor, fmt, mode: str, what: str, **kw) -> None:
    """Triton on CUDA == the reference on the CPU, bit for bit."""
    if mode == "stochastic":
        kw.setdefault("seed", SEED)
    want = lowbit.quantize(x, fmt, rounding=mode, backend="reference", **kw)
    got = lowbit.quantize(x.to(CUDA), fmt, rounding=mode, backend="triton", **kw)
    assert got.is_cuda
    assert_same(got, want, fmt, what)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(SCALAR_PRESETS))
def test_scalar_presets(name: str, mode: str) -> None:
    fmt = SCALAR_PRESETS[name]
    _check(probe(fmt, n=2**20 + 3), fmt, mode, f"{name} {mode}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(GENERIC))
def test_generic_formats(name: str, mode: str) -> None:
    fmt = GENERIC[name]
    _check(probe(fmt, n=2**18 + 1, seed=1), fmt, mode, f"{name} {mode}")


@pytest.mark.parametrize("rbits", [1, 7, 32])
@pytest.mark.parametrize("name", list(RBITS_FORMATS))
def test_random_bit_counts(name: str, rbits: int) -> None:
    fmt = RBITS_FORMATS[name]
    _check(probe(fmt, n=2**18 + 5, seed=rbits), fmt, "stochastic", f"{name} {rbits}",
           rbits=rbits)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(BLOCK_FORMATS))
def test_block_formats(name: str, mode: str) -> None:
    fmt = BLOCK_FORMATS[name]
    for shape, specials in (((512, 1024), False), ((300, 1000), True), ((257, 13), False)):
        _check(block_probe(shape, specials), fmt, mode, f"{name} {mode} {shape}")


@pytest.mark.parametrize("fmt", ["e4m3fn", "fixed<8,4>", "mxfp4", "nvfp4"])
def test_stochastic_identity_cpu_gpu(fmt: str) -> None:
    """One seed, one result: the reference and the interpreter on the CPU, Triton on CUDA,
    and ``backend="auto"`` (Triton) on CUDA; unseeded calls after ``torch.manual_seed`` too."""
    x = block_probe((64, 96), False, seed=7)
    runs = [lowbit.quantize(x, fmt, rounding="stochastic", seed=SEED, backend=b)
            for b in ("reference", "triton")]
    runs += [lowbit.quantize(x.to(CUDA), fmt, rounding="stochastic", seed=SEED, backend=b)
             for b in ("triton", "auto")]
    for r in runs[1:]:
        assert_same(r, runs[0], get(fmt), "stochastic identity")
    torch.manual_seed(3)
    a = lowbit.quantize(x, fmt, rounding="stochastic", backend="reference")
    torch.manual_seed(3)
    b = lowbit.quantize(x.to(CUDA), fmt, rounding="stochastic", backend="triton")
    assert_same(b, a, get(fmt), "unseeded")


@triton.jit
def _randint4x_vs_philox(out_ptr, seed, k0, k1, start, BLOCK: tl.constexpr):
    c = start + tl.arange(0, BLOCK).to(tl.int64)
    a0, a1, a2, a3 = tl.randint4x(seed, c)
    b0, b1, b2, b3 = _philox(c, k0.to(tl.uint32), k1.to(tl.uint32))
    same = (a0 == b0) & (a1 == b1) & (a2 == b2) & (a3 == b3)
    tl.store(out_ptr + tl.arange(0, BLOCK), same.to(tl.int32))


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 5, 2**64 - 1])
def test_philox_is_triton_randint4x(seed: int) -> None:
    for start in (0, 2**32 - 3, 2**40):
        out = torch.zeros(1024, dtype=torch.int32, device=CUDA)
        _randint4x_vs_philox[(1,)](out, seed, seed & 0xFFFFFFFF, seed >> 32, start, BLOCK=1024)
        assert bool(out.all())


@pytest.mark.parametrize("start", [0, 2**31 - 5, 2**34 - 7])
def test_stream_words(start: int) -> None:
    n = 4099
    out = torch.empty(n, dtype=torch.int64, device=CUDA)
    _launch.kernel(CUDA, "scalar", "_words_kernel")[(triton.cdiv(n, 1024),)](
        out, start, n, *_launch.key_of(SEED), BLOCK=1024)
    assert torch.equal(out.cpu(), philox.random_words(n, SEED, torch.device("cpu"), start=start))


def test_runs_on_the_current_stream() -> None:
    """The input is written on a side stream behind a long sleep; rounding it on that stream
    must see the written values (a launch on another stream would race ahead)."""
    src = torch.randn(2**24, device=CUDA)
    want = lowbit.quantize(src.cpu(), "e4m3fn", backend="reference")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.zeros_like(src)
        torch.cuda._sleep(100_000_000)
        x.copy_(src)
        y = lowbit.quantize(x, "e4m3fn", backend="triton")
    side.synchronize()
    assert_same(y, want, get("e4m3fn"), "side stream")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_the_tensor_device() -> None:
    x = torch.randn(4096)
    with torch.cuda.device(0):
        y = lowbit.quantize(x.to("cuda:1"), "e5m2", backend="triton")
    assert y.device == torch.device("cuda:1")
    assert_same(y, lowbit.quantize(x, "e5m2", backend="reference"), get("e5m2"), "cuda:1")


def _compiled(kernel) -> int:
    caches = getattr(kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this Triton keeps no device_caches")
    return sum(len(c[0]) for c in caches.values())


def test_a_format_sweep_compiles_one_variant_per_mode_and_family() -> None:
    """Numeric format parameters are runtime scalars: sweeping every float format of the suite
    adds at most one compiled variant per (mode, family flags, n's 16-divisibility)."""
    from lowbit.kernels.triton._jit import scalar

    floats = [f for f in list(SCALAR_PRESETS.values()) + list(GENERIC.values())
              if not isinstance(f, (FixedPoint,)) and hasattr(f, "emin")]
    x = torch.randn(4096, device=CUDA)
    for fmt in floats:
        lowbit.quantize(x, fmt, backend="triton")
    before = _compiled(scalar._float_kernel)
    for fmt in floats:
        lowbit.quantize(x, fmt, backend="triton")
        lowbit.quantize(x[:4093], fmt, backend="triton")
    flags = {(f.__class__.__name__, getattr(f, "subnormals", True), getattr(f, "signed", True),
              getattr(f, "emin", 0) < -126) for f in floats}
    assert _compiled(scalar._float_kernel) - before <= len(flags)
    assert _compiled(scalar._float_kernel) <= 2 * len(flags) * len(MODES)


HUGE = 2**31 + 4099


def _huge_input() -> torch.Tensor:
    g = torch.Generator(device=CUDA).manual_seed(0)
    return torch.randn(HUGE, device=CUDA, generator=g)


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_more_than_2_31_elements(mode: str) -> None:
    """int64 offsets and counters: slices at the start, across 2^31 and at the end match the
    reference of the same elements (the stream at their logical indices)."""
    fmt = FloatFormat(8, 7)
    x = _huge_input()
    y = lowbit.quantize(x, fmt, rounding=mode, seed=SEED if mode == "stochastic" else None,
                        backend="triton")
    rounding = lowbit.formats.Rounding(mode)
    for a in (0, 2**31 - 8192, HUGE - 8192):
        words = (philox.random_words(8192, SEED, torch.device("cpu"), start=a)
                 if mode == "stochastic" else None)
        want = quantize_float(x[a:a + 8192].cpu(), fmt, rounding, words, 32)
        assert_same(y[a:a + 8192], want, fmt, f"@{a}")


def test_more_than_2_31_elements_in_blocks() -> None:
    fmt = get("mxfp4")
    x = _huge_input()
    y = lowbit.quantize(x, fmt, rounding="stochastic", seed=SEED, backend="triton")
    rounding = lowbit.formats.Rounding.STOCHASTIC
    for a in (0, 2**31 - 8192, HUGE - 4099):  # block-aligned starts (multiples of 32)
        m = min(8192, HUGE - a)
        words = philox.random_words(m, SEED, torch.device("cpu"), start=a)
        want = quantize_block(x[a:a + m].cpu(), fmt, rounding, words, 32)
        assert_same(y[a:a + m], want, fmt, f"@{a}")
