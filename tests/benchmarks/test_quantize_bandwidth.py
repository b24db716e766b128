"""Smoke test of ``benchmarks/quantize_bandwidth.py`` on a tiny CPU tensor: every documented
row, limit, byte count, target and QPyTorch ratio comes out, and the JSON and the table are
written.  Times are whatever they are: no test here asserts a speed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import types

import pytest
import torch

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")
N = 4096  # four rows of 1024


@pytest.fixture(scope="module")
def qb():
    spec = importlib.util.spec_from_file_location(
        "quantize_bandwidth", os.path.join(BENCH, "quantize_bandwidth.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)  # it puts benchmarks/ on sys.path for its helpers
    finally:
        sys.path[:] = saved
    return module


def _rows(result, what, fmt=None, rounding=None):
    return [r for r in result["rows"] if r["what"] == what
            and fmt in (None, r["format"]) and rounding in (None, r["rounding"])]


def _one(result, what, fmt=None, rounding=None):
    rows = _rows(result, what, fmt, rounding)
    assert len(rows) == 1, (what, fmt, rounding, rows)
    return rows[0]


FORMATS = ["e4m3fn", "fixed<8,4>", "mxfp4", "bfp8"]
MODES = ["nearest", "toward_zero", "stochastic"]


@pytest.fixture(scope="module")
def anchored(qb):
    """One small run with QPyTorch switched off: the ratios quote DESIGN.md's anchors."""
    return qb.bench("cpu", numel=N, reps=1, formats=FORMATS, modes=MODES,
                    codec_formats=["e4m3fn", "mxfp4"], qpytorch=False, first_calls=False)


def test_limits_and_every_row_present(anchored):
    copy, clone = _one(anchored, "copy_ (limit)"), _one(anchored, "clone (limit)")
    assert copy["pct_of_limit"] == pytest.approx(100.0)
    assert clone["bytes"] == copy["bytes"] == 8 * N
    for fmt in FORMATS:
        for mode in MODES:
            for what in ("lowbit.quantize", "lowbit.quantize(out=)"):
                row = _one(anchored, what, fmt, mode)
                assert row["bytes"] == (12 if fmt == "bfp8" else 8) * N  # bfp8: a global amax
    casts = {r["format"] for r in _rows(anchored, "torch cast round trip")}
    want = {"bf16", "fp16"} | {f for f, d in (("e4m3fn", "float8_e4m3fn"),
                                              ("e5m2", "float8_e5m2")) if hasattr(torch, d)}
    assert casts == want
    # encode: fp32 read + codes (+ one e8m0 scale byte per 32 for mxfp4); decode: the reverse
    assert _one(anchored, "lowbit.encode", "e4m3fn")["bytes"] == 4 * N + N
    assert _one(anchored, "lowbit.decode", "e4m3fn")["bytes"] == N + 4 * N
    assert _one(anchored, "lowbit.encode", "mxfp4")["bytes"] == 4 * N + N // 2 + N // 32
    assert _one(anchored, "lowbit.decode", "mxfp4")["bytes"] == N // 2 + N // 32 + 4 * N
    assert not _rows(anchored, "QPyTorch")
    for row in anchored["rows"]:
        assert row["seconds"] > 0 and row["GB/s"] > 0 and math.isfinite(row["GB/s"])
        assert row["GB/s"] == pytest.approx(row["bytes"] / row["seconds"] / 1e9)
        assert row["limit"] == "copy_"
        assert row["pct_of_limit"] == pytest.approx(100 * row["GB/s"] / copy["GB/s"])


def test_cpu_targets_and_anchor_ratios(anchored, qb):
    contract = qb.contract
    assert anchored["qpytorch"] == {"measured": False, "why_not": "not asked for (--no-qpytorch)",
                                    "anchors": contract.ANCHOR_LABEL}
    for row in _rows(anchored, "lowbit.quantize"):
        assert row["target"] == "≥5x QPyTorch"
        assert row["met"] == (row["qpytorch_x"] >= 5)
    for row in _rows(anchored, "lowbit.quantize(out=)"):
        if row["rounding"] == "stochastic":
            assert row["target"] == "≥10x QPyTorch" and row["met"] == (row["qpytorch_x"] >= 10)
        else:
            assert row["target"] == "≥70% of copy_"
            assert row["met"] == (row["pct_of_limit"] >= 70)
    # DESIGN.md: QPyTorch float nearest 0.43 GB/s, stochastic 0.12; fixed 0.20, block 0.21
    # (modes not recorded); directed modes compare with QPyTorch's nearest.
    for fmt, mode, gbps in [("e4m3fn", "nearest", 0.43), ("e4m3fn", "toward_zero", 0.43),
                            ("e4m3fn", "stochastic", 0.12), ("fixed<8,4>", "stochastic", 0.20),
                            ("mxfp4", "nearest", 0.21), ("bfp8", "stochastic", 0.21)]:
        row = _one(anchored, "lowbit.quantize", fmt, mode)
        assert row["qpytorch_x"] == pytest.approx(8 * N / (gbps * 1e9) / row["seconds"])
        assert row["qpytorch_ref"].startswith(contract.ANCHOR_LABEL)
        assert ("(vs its nearest)" in row["qpytorch_ref"]) == (mode == "toward_zero")
    for what in ("copy_ (limit)", "torch cast round trip", "lowbit.decode"):
        for row in _rows(anchored, what):
            assert row["target"] is None and row["met"] is None and row["qpytorch_x"] is None


def test_table_and_json(anchored, qb):
    text = qb.table("cpu", anchored)
    for row in anchored["rows"]:
        assert row["what"] in text
    assert "anchor (DESIGN.md, 2026-11)" in text and "load average" in text
    again = json.loads(json.dumps(anchored))
    assert len(again["rows"]) == len(anchored["rows"])


def _fake_qtorch(calls):
    """A stand-in ``qtorch.quant`` that records its calls (the real one builds C++ first)."""
    quant = types.ModuleType("qtorch.quant")

    def record(name):
        def fn(x, *args, **kw):
            calls.add((name, args, tuple(sorted(kw.items()))))
            return x.clone()
        return fn

    for name in ("float_quantize", "fixed_point_quantize", "block_quantize"):
        setattr(quant, name, record(name))
    package = types.ModuleType("qtorch")
    package.quant = quant
    return {"qtorch": package, "qtorch.quant": quant}


def test_qpytorch_rows_when_it_imports(qb, monkeypatch):
    calls = set()
    for name, module in _fake_qtorch(calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    formats = ["e4m3fn", "fixed<8,4>", "mxfp8_e4m3", "bfp8"]
    result = qb.bench("cpu", numel=N, reps=1, formats=formats, modes=MODES, codec_formats=[],
                      qpytorch=True, first_calls=False)
    assert result["qpytorch"]["measured"] is True
    want = set()
    for r in ("nearest", "stochastic"):
        want |= {("float_quantize", (4, 3), (("rounding", r),)),
                 ("fixed_point_quantize", (8, 4),
                  (("clamp", True), ("rounding", r), ("symmetric", False))),
                 ("block_quantize", (8,), (("dim", 0), ("rounding", r))),
                 ("block_quantize", (8,), (("dim", -1), ("rounding", r)))}
    assert calls == want
    qrows = _rows(result, "QPyTorch")
    assert sorted((r["format"], r["rounding"]) for r in qrows) == sorted(
        (f, m) for f in formats for m in ("nearest", "stochastic"))
    for fmt in formats:
        for mode in MODES:
            row = _one(result, "lowbit.quantize", fmt, mode)
            peer = _one(result, "QPyTorch", fmt, "stochastic" if mode == "stochastic"
                        else "nearest")
            assert row["qpytorch_x"] == pytest.approx(peer["seconds"] / row["seconds"])
            assert row["qpytorch_ref"].startswith(f"QPyTorch {peer['expr']}")
            assert "this run" in row["qpytorch_ref"]


def test_qpytorch_import_failure_is_reported(qb, monkeypatch):
    monkeypatch.setitem(sys.modules, "qtorch.quant", None)  # import of it raises ImportError
    quant, why = qb.contract.load_qpytorch()
    assert quant is None and why.startswith(("ImportError", "ModuleNotFoundError"))


def test_cuda_targets_and_limits(qb):
    """The CUDA contract, on hand-made rows (no GPU needed): clone for elementwise and local
    blocks, the three-transfer roofline for global-amax formats (not for decode)."""
    n = 1 << 20
    clone = {"what": "clone (limit)", "format": "-", "rounding": "-", "group": "limit",
             "expr": "", "bytes": 8 * n, "seconds": 1e-3, "ms": 1.0, "GB/s": 8 * n / 1e-3 / 1e9}
    rows = [clone]
    cases = [("quantize", "e4m3fn", "nearest", "≥90% of clone", "clone"),
             ("quantize", "e4m3fn", "toward_zero", "≥90% of clone", "clone"),
             ("quantize", "e4m3fn", "stochastic", "≥85% of clone", "clone"),
             ("quantize", "mxfp4", "stochastic", "≥80% of clone", "clone"),
             ("quantize", "nvfp4", "nearest", "≥80% of roofline", "roofline"),
             ("quantize", "bfp8", "nearest", "≥80% of roofline", "roofline"),
             ("encode", "nvfp4", "nearest", "≥80% of roofline", "roofline"),
             ("decode", "nvfp4", "-", "≥80% of clone", "clone"),
             ("decode", "e4m3fn", "-", "≥90% of clone", "clone"),
             ("quantize_out", "e4m3fn", "nearest", None, "clone")]
    for group, fmt, mode, _, _ in cases:
        rows.append({"what": group, "format": fmt, "rounding": mode, "group": group,
                     "expr": "", "bytes": 8 * n, "seconds": 1.25e-3})
        rows[-1]["GB/s"] = rows[-1]["bytes"] / rows[-1]["seconds"] / 1e9
    qb.evaluate("cuda", rows, n)
    for row, (_, _, _, goal, limit) in zip(rows[1:], cases):
        assert row["target"] == goal and row["limit"] == limit
        assert row["pct_of_limit"] == pytest.approx(80.0)
        assert row["met"] == (None if goal is None else goal.startswith("≥80%"))
    # No QPyTorch row measured: CUDA ratios quote the H100 anchors (float nearest 1510 GB/s).
    assert rows[1]["qpytorch_x"] == pytest.approx(8 * n / 1510e9 / 1.25e-3)


def test_main_writes_json(qb, tmp_path, capsys):
    path = tmp_path / "q_{device}.json"
    qb.main(["--device", "cpu", "--numel", "1024", "--reps", "1", "--formats", "e4m3fn",
             "--modes", "nearest", "--codec-formats", "--no-qpytorch", "--no-first-calls",
             "--json", str(path)])
    result = json.loads((tmp_path / "q_cpu.json").read_text())
    assert result["numel"] == 1024 and result["versions"]["torch"] == torch.__version__
    assert {r["what"] for r in result["rows"]} == {
        "copy_ (limit)", "clone (limit)", "lowbit.quantize", "lowbit.quantize(out=)",
        "torch cast round trip"}
    assert "wrote" in capsys.readouterr().out
