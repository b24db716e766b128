"""``lowbit demo --quick`` (what CI runs), the plots (PNG, non-empty, one image per format),
``lowbit formats --plot``, ``lowbit recipes``, and a light ``import lowbit``."""

import json
import os
import subprocess
import sys

import numpy as np

from lowbit import recipes
from lowbit.cli import main
from lowbit.cli._demo import DEMO_RECIPES, TASKS, recipe_formats
from lowbit.cli._formats import value_grid, write_grids

from _cli_recipe import TEST_RECIPE

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path, min_bytes=10_000):
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == PNG and len(data) >= min_bytes, (path, len(data))
    return data


def test_demo_quick(tmp_path, capsys, bf16_recipe):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--recipes", f"fp32,{TEST_RECIPE}",
                 "--no-progress", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "Δ vs fp32" in text and TEST_RECIPE in text and "ms/step" in text
    result = json.loads((out / "results.json").read_text())
    assert result["recipes"] == ["fp32", TEST_RECIPE] and result["missing"] == []
    assert set(result["runs"]) == {t.label for t in TASKS} == {"digits_cnn", "text_gpt"}
    for label, runs in result["runs"].items():
        assert [r["recipe"] for r in runs] == ["fp32", TEST_RECIPE]
        for run in runs:
            assert run["config"]["epochs"] == 1 and len(run["step_losses"]) == 3
            assert {"test_accuracy", "test_loss", "seconds", "step_ms",
                    "peak_memory_mb"} <= set(run["final"])
        _png(out / f"curves_{label}.png")
    assert recipe_formats(bf16_recipe) == ["bf16"]
    _png(out / "formats" / "grid_bf16.png")
    assert sorted(os.listdir(out / "formats")) == ["grid_bf16.png"]


def test_demo_quick_default_recipes(tmp_path, capsys):
    """CI's ``lowbit demo --quick``: every registered recipe of the demo's list, both models."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    registered = [r for r in DEMO_RECIPES if r in recipes.names()]
    assert result["recipes"] == registered
    assert result["missing"] == [r for r in DEMO_RECIPES if r not in registered]
    for task in TASKS:
        excluded = dict(task.excluded)
        ran = [r["recipe"] for r in result["runs"][task.label]]
        assert ran == [r for r in registered if r not in excluded]
        assert all("error" not in r for r in result["runs"][task.label])
    text = capsys.readouterr().out
    for name in registered:
        assert name in text


def test_value_grids_differ_per_format(tmp_path):
    names = ["e4m3fn", "e5m2", "mxfp4", "nvfp4", "int4", "fixed<8,4>", "bf16", "e8m0fnu"]
    paths = write_grids(names, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [
        "grid_e4m3fn.png", "grid_e5m2.png", "grid_mxfp4.png", "grid_nvfp4.png",
        "grid_int4.png", "grid_fixed_8_4_.png", "grid_bf16.png", "grid_e8m0fnu.png"]
    images = [_png(p) for p in paths]
    assert len(set(images)) == len(images)


def test_value_grid_contents():
    # e2m1fn, the element of mxfp4: every non-negative value, listed by OCP MX §5.3.3.
    assert value_grid("mxfp4").values.tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert value_grid("int4").values.tolist() == list(range(8))
    assert value_grid("fixed<8,4>").values.tolist() == [k / 16 for k in range(128)]
    grid = value_grid("e4m3fn")
    assert grid.values.size == 127 and grid.values[-1] == 448 and grid.values[1] == 2.0**-9
    normal = grid.x >= 2.0**-6  # 3 mantissa bits: ulp/x in (2^-4, 2^-3] over the normals
    assert np.all(grid.rel_spacing[normal] > 2.0**-4) and np.all(
        grid.rel_spacing[normal] <= 2.0**-3)
    assert np.allclose(grid.rel_spacing[grid.x < 2.0**-6] * grid.x[grid.x < 2.0**-6], 2.0**-9)
    wide = value_grid("bf16")  # too many values: 64 consecutive ones from 1, ulp 2^-7
    assert wide.values.size == 64 and np.allclose(np.diff(wide.values), 2.0**-7)


def test_formats_plot_command(tmp_path, capsys):
    assert main(["formats", "--plot", "e4m3fn", "e3m2fn", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "e3m2fn" in text and "SQNR" not in text
    assert _png(tmp_path / "grid_e4m3fn.png") != _png(tmp_path / "grid_e3m2fn.png")


def test_recipes_command(capsys, bf16_recipe):
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert "fp32" in listing and TEST_RECIPE in listing and bf16_recipe.title in listing
    assert main(["recipes", TEST_RECIPE]) == 0
    assert capsys.readouterr().out.strip() == bf16_recipe.describe()


def test_importing_lowbit_and_its_cli_stays_light():
    # torch itself may import tqdm (torch 2.13 does): only what lowbit adds is checked.
    code = ("import sys, torch; before = set(sys.modules);"
            "import lowbit, lowbit.cli; lowbit.cli.parser();"
            "bad = [m for m in set(sys.modules) - before if m.split('.')[0] in"
            " ('matplotlib', 'tqdm', 'triton', 'numba') or m.startswith('torch._dynamo')];"
            "print(bad, torch.cuda.is_initialized())")
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "[] False"
