"""``quantize`` with the AMAX rule (NVFP4) on the CPU: served by the one-pass codec kernels
(``decode(encode(x))``), it must equal the reference bit for bit in every rounding mode,
including the stochastic stream, ragged blocks, half inputs and ``out=``; where the codec
declines (blocks along another axis) the result still equals the reference.  Tiles are rounded
as runs of a permuted copy (deterministic modes), again equal to the reference."""

from __future__ import annotations

import pytest
import torch

import lowbit as lb
from lowbit.formats import Rounding, get
from lowbit.ops import quantize as quantize_module

from _scalar_oracles import assert_same

pytest.importorskip("numba")

MODES = [m.value for m in Rounding]
AMAX = ["nvfp4", "block<e2m1fn,e4m3fnu_sat,16,-1,amax>", "block<e4m3fn,e4m3fnu,8,-1,amax>",
        "block<e3m2fn,e4m3fnu,16,-1,amax,tensor>"]


def _data(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-12, 12, shape, generator=g)
                                                    .float())
    x.view(-1)[:16] = 0.0  # a zero block
    x.view(-1)[17] = -0.0
    return x


def _spy(monkeypatch):
    """Count the calls that the codec path answers (so a silent fallback would show)."""
    calls = []
    real = quantize_module._amax_by_codec

    def spy(*args):
        y = real(*args)
        calls.append(y is not None)
        return y

    monkeypatch.setattr(quantize_module, "_amax_by_codec", spy)
    return calls


@pytest.mark.parametrize("name", AMAX)
@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("shape", [(4, 64), (3, 50), (1000,)])
def test_codec_path_equals_the_reference(monkeypatch, name, rounding, shape):
    x = _data(shape, 7)
    seed = 12345 if rounding == "stochastic" else None
    want = lb.quantize(x, name, rounding=rounding, seed=seed, backend="reference")
    calls = _spy(monkeypatch)
    for backend in ("auto", "cpu"):
        got = lb.quantize(x, name, rounding=rounding, seed=seed, backend=backend)
        assert_same(got, want.numpy(), x, f"{name} {rounding} {backend}")
    assert calls == [True, True]


def test_rbits_half_inputs_and_out(monkeypatch):
    x = _data((8, 48), 3)
    calls = _spy(monkeypatch)
    for rbits in (3, 32):
        want = lb.quantize(x, "nvfp4", rounding="stochastic", rbits=rbits, seed=2**63 + 1,
                           backend="reference")
        got = lb.quantize(x, "nvfp4", rounding="stochastic", rbits=rbits, seed=2**63 + 1)
        assert_same(got, want.numpy(), x, f"rbits={rbits}")
    one = "block<e2m1fn,e4m3fnu,16,-1,amax>"  # power-of-two scale grid: bf16 holds it
    xb = x.to(torch.bfloat16)
    assert torch.equal(lb.quantize(xb, one), lb.quantize(xb, one, backend="reference"))
    out = torch.empty_like(x)
    lb.quantize(x, "nvfp4", out=out)
    assert_same(out, lb.quantize(x, "nvfp4", backend="reference").numpy(), x, "out=")
    assert calls == [True, True, True, True]


def test_nan_blocks_and_declined_layouts(monkeypatch):
    x = _data((4, 64), 5)
    x[1, 3] = float("nan")  # a NaN block: the scale's NaN code marks it in the codec
    calls = _spy(monkeypatch)
    one = "block<e2m1fn,e4m3fnu,16,-1,amax>"
    got = lb.quantize(x, one)
    assert_same(got, lb.quantize(x, one, backend="reference").numpy(), x, "NaN block")
    assert torch.isnan(got[1, :16]).all() and torch.isnan(got).sum() == 16
    got = lb.quantize(x, "nvfp4")  # the NaN reaches the tensor scale: all NaN
    assert_same(got, lb.quantize(x, "nvfp4", backend="reference").numpy(), x, "NaN tensor")
    assert torch.isnan(got).all()
    columns = get("block<e2m1fn,e4m3fnu,16,0,amax>")  # blocks down the columns: no codec layout
    y = torch.randn(32, 32)
    assert torch.equal(lb.quantize(y, columns), lb.quantize(y, columns, backend="reference"))
    assert calls == [True, True, False]  # the columns were declined
    lb.quantize(x, "nvfp4", backend="reference")
    assert len(calls) == 3  # the reference backend never takes the codec


TILES = ["block<e2m1fn,e4m3fnu,(16,16),(-2,-1),amax,tensor>",
         "block<e4m3fn,e8m0fnu,(4,8),(-2,-1),ceil>", "block<int4,e8m0fnu,(2,4),(0,2),floor>",
         "block<e3m2fn,e8m0fnu,(2,2,4),(0,1,2),even>", "block<e2m1fn,e4m3fnu,(16,16),(-2,-1),amax>"]
DETERMINISTIC = [m for m in MODES if m != "stochastic"]


def _tile_spy(monkeypatch):
    calls = []
    real = quantize_module._tiles_as_runs

    def spy(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(quantize_module, "_tiles_as_runs", spy)
    return calls


@pytest.mark.parametrize("name", TILES)
@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("shape", [(2, 32, 48), (3, 19, 21), (5, 6, 7)])
def test_tiles_as_runs_equal_the_reference(monkeypatch, name, rounding, shape):
    """2-D and 3-D tiles, ragged edges (zero-padded inside the fast path), leading axes."""
    x = _data(shape, 11)
    x.view(-1)[40] = -0.0
    want = lb.quantize(x, name, rounding=rounding, backend="reference")
    calls = _tile_spy(monkeypatch)
    got = lb.quantize(x, name, rounding=rounding)
    assert_same(got, want.numpy(), x, f"{name} {rounding} {shape}")
    assert len(calls) == 1
    out = torch.empty_like(x)
    lb.quantize(x, name, rounding=rounding, out=out)
    assert_same(out, want.numpy(), x, "out=")


@pytest.mark.parametrize("name", [TILES[0], TILES[1]])
def test_tiles_of_a_matrix(monkeypatch, name):
    x = _data((40, 33), 4)
    calls = _tile_spy(monkeypatch)
    assert_same(lb.quantize(x, name), lb.quantize(x, name, backend="reference").numpy(), x)
    assert len(calls) == 1


def test_tiles_keep_the_reference_for_stochastic_rounding_and_nan(monkeypatch):
    x = _data((32, 32), 2)
    name = TILES[0]
    calls = _tile_spy(monkeypatch)
    got = lb.quantize(x, name, rounding="stochastic", seed=9)
    assert torch.equal(got, lb.quantize(x, name, rounding="stochastic", seed=9,
                                        backend="reference"))
    assert calls == []  # the permuted layout would count the stream in another order
    x[3, 5] = float("nan")
    got = lb.quantize(x, TILES[1])
    assert_same(got, lb.quantize(x, TILES[1], backend="reference").numpy(), x, "NaN tile")
    assert torch.isnan(got[0:4, 0:8]).all() and torch.isnan(got).sum() == 32
