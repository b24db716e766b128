"""``lowbit formats`` (formerly ``python -m lowbit demo``): the tables cover every preset and
the numbers make sense; ``python -m lowbit`` and the ``lowbit`` script share one ``main``."""

import io
import math
import os
import subprocess
import sys

import pytest

from lowbit.__main__ import main as module_main
from lowbit.cli import main
from lowbit.cli._formats import report
from lowbit.formats import PRESETS, Rounding

MODES = [m.value for m in Rounding]


@pytest.fixture(scope="module")
def demo():
    buf = io.StringIO()
    results = report(size=1024, seed=0, file=buf)
    return results, buf.getvalue()


def _rows(text, name):
    return [line.split() for line in text.splitlines() if line.split()[:1] == [name]]


def test_every_preset_and_mode_is_reported(demo):
    results, text = demo
    assert list(results) == list(PRESETS)
    for name in PRESETS:
        assert list(results[name]) == MODES
        # one row in the formats table, one in each error table
        assert len(_rows(text, name)) == 3, name
    for mode in MODES:
        assert mode in text


def test_fp32_is_exact_under_every_mode(demo):
    # fp32 input rounded onto fp32 is the identity: the table reports SQNR +inf as 'exact'.
    results, text = demo
    for mode in MODES:
        assert results["fp32"][mode].sqnr_db == math.inf
        assert results["fp32"][mode].max_rel_err == 0.0
    sqnr_row = _rows(text, "fp32")[1]
    assert sqnr_row[1:] == ["exact"] * len(MODES)


@pytest.mark.parametrize("name", ["bf16", "fp16", "tf32", "e4m3fn", "mxfp8_e4m3"])
def test_lower_precision_has_finite_sqnr(demo, name):
    results, _ = demo
    for mode in MODES:
        assert math.isfinite(results[name][mode].sqnr_db), (name, mode)


def test_sqnr_follows_mantissa_width(demo):
    # Round-to-nearest SQNR grows ~6 dB per mantissa bit: fp16 (10) > bf16 (7) > e4m3fn (3).
    results, _ = demo
    sqnr = {n: results[n]["nearest"].sqnr_db for n in ("fp16", "bf16", "e4m3fn")}
    assert sqnr["fp16"] - sqnr["bf16"] == pytest.approx(18, abs=3)
    assert sqnr["bf16"] - sqnr["e4m3fn"] == pytest.approx(24, abs=3)
    # Directed rounding doubles the error bound: lower SQNR than nearest.
    assert results["bf16"]["toward_zero"].sqnr_db < sqnr["bf16"] - 3


def test_cli(capsys):
    assert module_main is main  # python -m lowbit and the console script: one main
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["formats", "--size", "256"]) == 0
    assert "nvfp4" in capsys.readouterr().out
    assert main(["formats", "--size", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "multiple of 256" in err


def test_python_dash_m_runs_the_cli():
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    res = subprocess.run([sys.executable, "-m", "lowbit", "recipes", "no_such_recipe"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "unknown recipe 'no_such_recipe'" in res.stderr
