"""``lowbit bench`` (the bandwidth benchmark, from the package) and
``benchmarks/recipes_digits.py`` on tiny settings: outputs only, no timing asserted."""

import importlib.util
import json
import os

import pytest

from lowbit.cli import main

from _cli_recipe import TEST_RECIPE

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def test_lowbit_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "q_{device}.json"
    assert main(["bench", "--device", "cpu", "--numel", "1024", "--reps", "1", "--formats",
                 "e4m3fn", "--modes", "nearest", "--codec-formats", "--no-qpytorch",
                 "--no-first-calls", "--json", str(path)]) == 0
    result = json.loads((tmp_path / "q_cpu.json").read_text())
    assert result["numel"] == 1024
    assert {r["what"] for r in result["rows"]} == {
        "copy_ (limit)", "clone (limit)", "lowbit.quantize", "lowbit.quantize(out=)",
        "torch cast round trip"}
    assert "wrote" in capsys.readouterr().out


@pytest.fixture(scope="module")
def recipes_digits():
    spec = importlib.util.spec_from_file_location(
        "recipes_digits", os.path.join(BENCH, "recipes_digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_digits_tiny(recipes_digits, tmp_path, capsys, bf16_recipe, monkeypatch):
    monkeypatch.setitem(recipes_digits.TARGETS, TEST_RECIPE, 1.0)
    path = tmp_path / "r.json"
    rows = recipes_digits.main(["--recipes", f"fp32,{TEST_RECIPE}", "--seeds", "0", "1",
                                "--epochs", "1", "--steps-per-epoch", "2", "--json", str(path)])
    assert [r["recipe"] for r in rows] == ["fp32", TEST_RECIPE]
    fp32, test = rows
    assert len(fp32["accuracy"]) == 2 and fp32["delta_points"] == 0
    assert test["delta_points"] == pytest.approx(100 * (test["mean"] - fp32["mean"]))
    assert test["met"] == (test["delta_points"] >= -1.0) and fp32["met"] is None
    text = capsys.readouterr().out
    assert "mean ± std" in text and TEST_RECIPE in text
    saved = json.loads(path.read_text())
    assert saved["seeds"] == [0, 1] and len(saved["rows"]) == 2


def test_recipes_digits_unknown_recipe(recipes_digits, capsys):
    with pytest.raises(SystemExit):
        recipes_digits.main(["--recipes", "no_such"])
    assert "unknown recipes" in capsys.readouterr().err
