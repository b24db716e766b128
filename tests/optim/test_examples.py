"""The examples in examples/: every precision builds, converts and trains a couple of steps
(fast tier); the full runs reach their accuracy (slow tier).  No test asserts a time."""

import importlib.util
import json
import math
import os
import sys

import pytest
import torch

import lowbit as lb
from lowbit.nn import QuantizedModule
from lowbit.optim import LowPrecision

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def load(name):
    spec = importlib.util.spec_from_file_location(f"lowbit_example_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cnn():
    return load("digits_cnn")


@pytest.fixture(scope="module")
def lm():
    return load("text_transformer")


FORMATS = ["fp32", "bf16", "fp8", "fixed", "mxfp4"]


@pytest.mark.parametrize("name", FORMATS)
def test_cnn_configs_build_and_step(cnn, name):
    assert list(cnn.CONFIGS) == FORMATS
    model, opt = cnn.build(name)
    quantized = [m for m in model.modules() if isinstance(m, QuantizedModule)]
    assert isinstance(opt, LowPrecision)
    assert (len(quantized) == 3) == (name != "fp32")  # two convolutions and the linear head
    r = cnn.train(name, max_steps=2, batch=16)
    assert r["steps"] == 2 and math.isfinite(r["final_loss"]) and 0 <= r["test_accuracy"] <= 1
    if name == "bf16":  # LowPrecision keeps the weights in bf16
        w = model[0].weight.detach()
        assert torch.equal(lb.quantize(w, "bf16"), w)


@pytest.mark.parametrize("name", FORMATS)
def test_transformer_configs_build_and_step(lm, name):
    assert list(lm.CONFIGS) == FORMATS
    model, _ = lm.build(name, vocab_size=97)
    n = sum(isinstance(m, QuantizedModule) for m in model.modules())
    # 2 layers × (qkv, proj, attention, fc, proj) + head = 11 GEMM sites; fp8 keeps the
    # first and the last in fp32.
    assert n == {"fp32": 0, "fp8": 9}.get(name, 11)
    r = lm.train(name, steps=2, batch=4, test_windows=4)
    assert r["steps"] == 2 and math.isfinite(r["final_loss"]) and r["test_bits_per_char"] > 0


def test_main_writes_json_and_table(cnn, lm, tmp_path, capsys):
    out = tmp_path / "cnn.json"
    rows = cnn.main(["--format", "fp32", "--max-steps", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == rows and rows[0]["format"] == "fp32"
    out = tmp_path / "lm.json"
    rows = lm.main(["--format", "fp32", "--steps", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == rows
    printed = capsys.readouterr().out
    assert "test acc" in printed and "test bits/char" in printed


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
def test_cnn_reaches_accuracy(cnn, name):
    r = cnn.train(name)
    print(r)
    assert r["test_accuracy"] >= 0.95, r


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
def test_transformer_learns(lm, name):
    # Uniform guessing is log2(97) = 6.6 bits/char; fp32 reaches about 3.0 in 150 steps.
    # One seed is too noisy for a threshold (mxfp4, 2026-12-07: 3.66, 3.31, 3.34 for seeds
    # 0, 1, 2), so the mean of three seeds is compared, as DESIGN.md asks of accuracy checks.
    runs = [lm.train(name, seed=s) for s in range(3)]
    print(runs)
    assert sum(r["test_bits_per_char"] for r in runs) / 3 < 3.6, runs
