"""The Triton kernels on small CPU tensors, run by Triton's interpreter, against the reference
backend at zero tolerance (NaN payloads aside): every scalar preset and a set of generic formats
× every rounding mode, random-bit counts, the Philox stream itself, tiling, dtypes and layouts.

No environment variable is needed: ``lowbit.kernels.triton`` runs CPU tensors through an
interpreted copy of its device code and leaves ``TRITON_INTERPRET`` and the compiled copy alone
(``test_interpreter_serves_only_cpu_tensors``).  The same sweeps run compiled on CUDA in
``test_gpu.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

import lowbit  # noqa: E402
from lowbit.formats import BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat  # noqa: E402
from lowbit.kernels import philox  # noqa: E402
from lowbit.kernels.dispatch import Backend, kernel_for  # noqa: E402
from lowbit.kernels.triton import _launch  # noqa: E402

from _triton_cases import (  # noqa: E402
    GENERIC, MODES, RBITS_FORMATS, SCALAR_PRESETS, assert_same, probe,
)

CPU = torch.device("cpu")
SEEDS = {"nearest": None, "stochastic": 0x9E3779B97F4A7C15}


def _both(x: torch.Tensor, fmt, mode: str, **kw) -> tuple:
    if mode == "stochastic":
        kw.setdefault("seed", SEEDS["stochastic"])
    got = lowbit.quantize(x, fmt, rounding=mode, backend="triton", **kw)
    want = lowbit.quantize(x, fmt, rounding=mode, backend="reference", **kw)
    return got, want


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(SCALAR_PRESETS))
def test_presets_match_reference(name: str, mode: str) -> None:
    fmt = SCALAR_PRESETS[name]
    got, want = _both(probe(fmt), fmt, mode)
    assert_same(got, want, fmt, f"{name} {mode}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(GENERIC))
def test_generic_formats_match_reference(name: str, mode: str) -> None:
    fmt = GENERIC[name]
    got, want = _both(probe(fmt, seed=1), fmt, mode)
    assert_same(got, want, fmt, f"{name} {mode}")


@pytest.mark.parametrize("rbits", [1, 7, 32])
@pytest.mark.parametrize("name", list(RBITS_FORMATS))
def test_random_bit_counts_match_reference(name: str, rbits: int) -> None:
    fmt = RBITS_FORMATS[name]
    for seed in (0, 2**64 - 1):
        got, want = _both(probe(fmt, n=1027, seed=rbits), fmt, "stochastic", rbits=rbits,
                          seed=seed)
        assert_same(got, want, fmt, f"{name} rbits={rbits} seed={seed}")


def _seed_with_a_high_word(n: int, threshold: int) -> int:
    """The first seed whose stream gives one of the first ``n`` elements a word >= threshold."""
    for seed in range(1_000_000):
        if bool((philox.random_words(n, seed, CPU) >= threshold).any()):
            return seed
    raise AssertionError("no seed found")


@pytest.mark.parametrize("fmt", [FloatFormat(4, 3, specials="fn"), FixedPoint(8, 4)])
def test_far_below_the_grid_step(fmt) -> None:
    """Inputs (2 - 2^-23) · 2^-20 of the format's smallest step drop s = 43 bits (past 32, where
    the remainder is shifted down instead of up); P(up) ~ 2^-19, so a seed is chosen whose
    stream holds a word that rounds one of them up, and inputs ~90 binades below the step
    (s past the clamp at 56) must never round up."""
    n = 64
    seed = _seed_with_a_high_word(n, 2**32 - 2**12)
    step = float(fmt.min_subnormal) if isinstance(fmt, FloatFormat) else 2.0**-fmt.fl
    x = torch.full((n,), (2 - 2**-23) * 2.0**-20 * step)
    got, want = _both(x, fmt, "stochastic", seed=seed)
    assert bool((want != 0).any())
    assert_same(got, want, fmt, f"seed {seed}")
    far = torch.full((n,), (2 - 2**-23) * 2.0**-90 * step)
    got, want = _both(far, fmt, "stochastic", seed=seed)
    assert not bool(want.any())
    assert_same(got, want, fmt, f"seed {seed}")


def test_stochastic_rounding_uses_the_seed() -> None:
    x = torch.rand(1000) * 10
    a = lowbit.quantize(x, "e4m3fn", rounding="stochastic", seed=1, backend="triton")
    b = lowbit.quantize(x, "e4m3fn", rounding="stochastic", seed=2, backend="triton")
    assert not torch.equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 0xFFFFFFFF, 2**32, 2**63 + 12345, 2**64 - 1])
@pytest.mark.parametrize("start", [0, 3, 2**32 - 6, 2**34 - 5, 2**40 + 2])
def test_stream_is_the_reference_stream(seed: int, start: int) -> None:
    """Element n takes word n & 3 of Philox counter n >> 2: counters past 2^32 (c1 = n >> 34)
    included, keys with both halves set."""
    n = 37
    out = torch.empty(n, dtype=torch.int64)
    words = _launch.kernel(CPU, "scalar", "_words_kernel")
    words[(1,)](out, start, n, *_launch.key_of(seed), BLOCK=64)
    assert torch.equal(out, philox.random_words(n, seed, CPU, start=start))


_RANDINT4X_SCRIPT = """
import os
os.environ["TRITON_INTERPRET"] = "1"  # before triton: its own jitted library interpreted too
import torch, triton, triton.language as tl
from lowbit.kernels.triton._jit.core import _philox

@triton.jit
def compare(out_ptr, seed, k0, k1, start, BLOCK: tl.constexpr):
    c = start + tl.arange(0, BLOCK).to(tl.int64)
    a0, a1, a2, a3 = tl.randint4x(seed, c)
    b0, b1, b2, b3 = _philox(c, k0.to(tl.uint32), k1.to(tl.uint32))
    same = (a0 == b0) & (a1 == b1) & (a2 == b2) & (a3 == b3)
    tl.store(out_ptr + tl.arange(0, BLOCK), same.to(tl.int32))

for seed in (0, 7, 2**32 + 5, 2**64 - 1):
    for start in (0, 2**32 - 3, 2**40):
        out = torch.zeros(16, dtype=torch.int32)
        compare[(1,)](out, seed, seed & 0xFFFFFFFF, seed >> 32, start, BLOCK=16)
        assert bool(out.all()), (seed, start, out)
print("same")
"""


def test_philox_is_triton_randint4x(tmp_path: Path) -> None:
    """The kernels' own Philox (written out so that no jitted Triton library function is called)
    is ``tl.randint4x(seed, counter)`` word for word.  Triton's library is interpreted only when
    TRITON_INTERPRET=1 precedes its import, hence a fresh interpreter."""
    script = tmp_path / "randint4x.py"
    script.write_text(textwrap.dedent(_RANDINT4X_SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "same", run.stderr[-2000:]


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_tiling_does_not_change_results(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Many programs with a partial last tile (masked path) give the same bits as one."""
    fmt = FloatFormat(4, 3, specials="fn")
    x = probe(fmt, n=103, seed=5)
    one, want = _both(x, fmt, mode)
    monkeypatch.setattr(_launch, "INTERPRETER_BLOCK", 16)
    many, _ = _both(x, fmt, mode)
    assert_same(one, want, fmt, "one program")
    assert_same(many, want, fmt, "seven programs")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype) -> None:
    x = probe(FloatFormat(4, 3), n=515, seed=3).to(dtype)
    for mode in ("nearest", "stochastic"):
        got, want = _both(x, "e4m3", mode)
        assert got.dtype == dtype
        assert_same(got, want, FloatFormat(4, 3), f"{dtype} {mode}")


def test_layouts_and_out() -> None:
    x = probe(FixedPoint(8, 4), n=4096, seed=4).view(64, 64)
    got, want = _both(x.t(), "fixed<8,4>", "stochastic", seed=3)
    assert_same(got, want, FixedPoint(8, 4), "transposed")
    out = torch.empty_like(x)
    lowbit.quantize(x, "e5m2", rounding="up", backend="triton", out=out)
    assert_same(out, lowbit.quantize(x, "e5m2", rounding="up", backend="reference"),
                FloatFormat(5, 2), "out=")


def test_empty_and_scalar_tensors() -> None:
    assert lowbit.quantize(torch.empty(0, 3), "e4m3fn", backend="triton").shape == (0, 3)
    got, want = _both(torch.tensor(300.0), "e4m3fn", "nearest")
    assert got.shape == () and torch.equal(got, want)


def test_every_family_is_registered() -> None:
    for family in (FloatFormat, ExpFormat, FixedPoint, IntFormat, BlockFormat):
        assert kernel_for(Backend.TRITON, family, CPU) is not None


def test_interpreter_serves_only_cpu_tensors() -> None:
    """CPU tensors get the interpreted copy of the device code; the compiled copy (CUDA tensors)
    and the process environment are untouched, so the interpreter does not leak into compiled
    kernels of this process or into child processes."""
    before = os.environ.get("TRITON_INTERPRET")
    cpu_kernel = _launch.kernel(CPU, "scalar", "_float_kernel")
    assert type(cpu_kernel).__name__ == "InterpretedFunction"
    assert os.environ.get("TRITON_INTERPRET") == before
    from lowbit.kernels.triton._jit import scalar as compiled

    expected = "InterpretedFunction" if before == "1" else "JITFunction"
    assert type(compiled._float_kernel).__name__ == expected


def test_other_devices_are_rejected() -> None:
    with pytest.raises(ValueError, match="CUDA tensors"):
        _launch.kernel(torch.device("meta"), "scalar", "_float_kernel")


# -- block formats ------------------------------------------------------------------------------
from _triton_cases import BLOCK_FORMATS, block_probe  # noqa: E402

from lowbit.kernels.triton import _block  # noqa: E402

# (shape, with NaN and Inf): full blocks, ragged rows with specials, a size that is not a
# multiple of 4 (whole-tensor blocks' partial last group).
BLOCK_INPUTS = {"even": ((6, 96), False), "ragged": ((5, 100), True), "odd": ((7, 13), False)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", [n for n in BLOCK_FORMATS if n.startswith(("mx", "nv"))])
def test_block_presets_match_reference(name: str, mode: str) -> None:
    fmt = BLOCK_FORMATS[name]
    for label, (shape, specials) in BLOCK_INPUTS.items():
        got, want = _both(block_probe(shape, specials, seed=len(label)), fmt, mode)
        assert_same(got, want, fmt, f"{name} {mode} {label}")


@pytest.mark.parametrize("mode", ["nearest", "up", "stochastic"])
@pytest.mark.parametrize("name", [n for n in BLOCK_FORMATS if not n.startswith(("mx", "nv"))])
def test_block_formats_match_reference(name: str, mode: str) -> None:
    fmt = BLOCK_FORMATS[name]
    for label, (shape, specials) in BLOCK_INPUTS.items():
        got, want = _both(block_probe(shape, specials, seed=2), fmt, mode)
        assert_same(got, want, fmt, f"{name} {mode} {label}")


@pytest.mark.parametrize("rbits", [1, 7])
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "mxint8", "bfp8"])
def test_block_random_bit_counts(name: str, rbits: int) -> None:
    fmt = BLOCK_FORMATS[name]
    got, want = _both(block_probe((4, 64), False, seed=rbits), fmt, "stochastic", rbits=rbits,
                      seed=2**64 - 3)
    assert_same(got, want, fmt, f"{name} rbits={rbits}")


def test_block_layouts_covered_by_the_kernel() -> None:
    """Which layouts the fused kernel takes (the others go to the reference)."""
    covered = {n: _block._layout(f, (6, 96)) is not None for n, f in BLOCK_FORMATS.items()}
    assert covered.pop("fp4_axis0") is False and covered.pop("fp4_tiles") is False
    assert all(covered.values()), covered
    assert _block._layout(BLOCK_FORMATS["e4m3_row"], (2, _block.MAX_BLOCK + 1)) is None
