"""Smoke test of benchmarks/training_step.py on tiny CPU models: the rows, overheads, target
and JSON come out.  Times are whatever they are: no test here asserts a speed."""

import importlib.util
import json
import math
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "training_step.py")


@pytest.fixture(scope="module")
def ts():
    spec = importlib.util.spec_from_file_location("lowbit_bench_training_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check(rows, out):
    data = json.loads(out.read_text())
    assert data["rows"] == rows and data["meta"]["tf32"] is False and data["meta"]["tiny"]
    for r in rows:
        assert r["ms"] > 0 and math.isfinite(r["ms"])
        assert (r["overhead"] == 0.0) == (r["variant"] == "fp32")
    target = [r for r in rows if r["target"] is not None]
    assert [(r["model"], r["variant"], r["target"]) for r in target] == [
        ("resnet18", "lowbit e5m2", 0.15)]
    return {(r["model"], r["variant"]) for r in rows}


def test_tiny_cpu_run_e5m2_rows(ts, tmp_path, capsys):
    out = tmp_path / "ts.json"
    only = ["lowbit e5m2", "lowbit e5m2 + LowPrecision", "QPyTorch (lowbit.compat.qtorch)",
            "lowbit e5m2 (linear)", "lowbit e5m2 + attention"]
    rows = ts.main(["--device", "cpu", "--tiny", "--reps", "1", "--no-real-qtorch",
                    "--only", *only, "--json", str(out)])
    seen = check(rows, out)
    assert seen == {("resnet18", v) for v in ["fp32"] + only[:3]} | {
        ("gpt", v) for v in ["fp32"] + only[3:]}
    assert "(target <= +15%)" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_cpu_run_all_rows(ts, tmp_path):
    out = tmp_path / "ts.json"
    rows = ts.main(["--device", "cpu", "--tiny", "--reps", "1", "--json", str(out)])
    seen = check(rows, out)
    assert {v for m, v in seen if m == "resnet18"} >= {
        "fp32", "lowbit e5m2", "lowbit e5m2 + LowPrecision", "QPyTorch (lowbit.compat.qtorch)",
        "lowbit mxfp8", "lowbit mxfp4"}
    assert {v for m, v in seen if m == "gpt"} == {
        "fp32", "lowbit e5m2 (linear)", "lowbit e5m2 + attention", "lowbit mxfp8 (linear)",
        "lowbit mxfp4 (linear)"}
