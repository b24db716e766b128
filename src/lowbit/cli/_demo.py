"""``lowbit demo``: a small CNN on the embedded digits and a small GPT on the embedded text,
each trained in fp32 and in several paper recipes; a comparison table, ``results.json``,
training curves and the value grids of the formats the recipes use (PNG).

The recipes are ``DEMO_RECIPES``.  A name of that list that is not registered (a recipe not yet
written, or left out of a build) is skipped, and the skip is printed and recorded in
``results.json`` under ``missing``; a name given with ``--recipes`` that is not registered is an
error (exit status 2).  A run that fails is reported in the table and the JSON, the other runs
go on, and the command exits with status 1.  ``--quick`` (what CI runs) trains each pair for a
few steps only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

import torch

from ..formats import get as get_format
from ._common import CliError, cpu_threads, write_json
from ._data import load
from ._train import TrainConfig, get_recipe, resolve_device, train

__all__ = ["DEMO_RECIPES", "DemoTask", "TASKS", "recipe_formats", "run_demo", "add_parser",
           "run"]

#: The recipes the demo compares, fp32 first (the baseline of the Δ column).
DEMO_RECIPES = ("fp32", "bf16_sr", "hfp8", "mxfp8", "mxfp4", "wageubn")


@dataclasses.dataclass(frozen=True)
class DemoTask:
    """One model on one data set, trained by every recipe of the demo."""

    data: str
    model: str
    epochs: int
    steps_per_epoch: Optional[int]
    metric: str  # the final metric compared: test_accuracy (higher is better) or test_loss
    excluded: Tuple[Tuple[str, str], ...] = ()  # (recipe, why it does not apply) pairs

    @property
    def label(self) -> str:
        return f"{self.data}_{self.model}"


#: What the full demo trains: the digits CNN for 10 epochs (23 steps each, as ``lowbit train``
#: and ``benchmarks/recipes_digits.py``), the text GPT for 2 epochs of 80 steps of 32 windows;
#: sized so that six recipes take under 3 minutes on 2 CPU cores (about 75 s when quiet).
TASKS = (DemoTask("digits", "cnn", 10, None, "test_accuracy"),
         DemoTask("text", "gpt", 2, 80, "test_loss",
                  excluded=(("wageubn", "WAGEUBN quantizes BatchNorm, which the GPT has none "
                             "of"),)))
#: ``--quick``: one epoch of a few steps per pair.
QUICK_EPOCHS, QUICK_STEPS = 1, 3


def recipe_formats(recipe: Any) -> List[str]:
    """The names of the formats a ``PaperRecipe`` uses: its roles (overrides included) and its
    optimizer's ``LowPrecision`` formats, in order of appearance, fp32 left out."""
    found: List[str] = []

    def add(value: object) -> None:
        if isinstance(value, Mapping):
            for v in value.values():
                add(v)
            return
        try:
            name = repr(get_format(value))
        except (TypeError, ValueError):
            return
        if name != "fp32" and name not in found:
            found.append(name)

    layers = [recipe.recipe] + [r for _, r in recipe.recipe.overrides if r is not None]
    for layer in layers:
        for role in layer.roles().values():
            add(getattr(role, "format", None))
    options = dict(recipe.optimizer.low_precision)
    for key in ("weight", "grad", "state", "master"):
        add(options.get(key))
    return found


def _choose(recipes: Optional[Sequence[str]]) -> tuple:
    """``(recipes to run, registered names of DEMO_RECIPES that are missing)``."""
    from .. import recipes as registry

    known = registry.names()
    if recipes is not None:
        unknown = [r for r in recipes if r not in known]
        if unknown:
            raise CliError(f"unknown recipe {', '.join(map(repr, unknown))}; known: "
                           f"{', '.join(known)}")
        return list(recipes), []
    return [r for r in DEMO_RECIPES if r in known], [r for r in DEMO_RECIPES if r not in known]


def _row(task: DemoTask, recipe: str, run: Dict[str, Any], base: Optional[float]) -> str:
    if "error" in run:
        error = run["error"]
        return f"{recipe:<10}  failed: {error[:150] + ' ...' * (len(error) > 150)}"
    final = run["final"]
    value = final[task.metric]
    if base is None or recipe == "fp32":
        delta = "-"
    elif task.metric == "test_accuracy":
        delta = f"{100 * (value - base):+.2f} pt"
    else:
        delta = f"{value - base:+.4f}"
    mem = "-" if final["peak_memory_mb"] is None else f"{final['peak_memory_mb']:.1f}"
    return (f"{recipe:<10}  {value:>9.4f}  {delta:>9}  {final['test_loss']:>9.4f}  "
            f"{final['step_ms']:>8.1f}  {mem:>9}  {final['seconds']:>7.1f}")


def _header(task: DemoTask, epochs: int, steps: Optional[int]) -> List[str]:
    what = "test accuracy, higher is better" if task.metric == "test_accuracy" else \
        "test loss (nats per character), lower is better"
    cut = f" of {steps} steps" if steps else ""
    metric = "accuracy" if task.metric == "test_accuracy" else "loss"
    return [f"{task.data}, {task.model}, {epochs} epoch{'s' * (epochs > 1)}{cut}: {what}",
            f"{'recipe':<10}  {metric:>9}  {'Δ vs fp32':>9}  {'test loss':>9}  {'ms/step':>8}  "
            f"{'peak MB':>9}  {'seconds':>7}"]


def _train_task(task: DemoTask, names: Sequence[str], *, quick: bool, seed: int, device: str,
                progress: bool, out: TextIO) -> List[Dict[str, Any]]:
    epochs = QUICK_EPOCHS if quick else task.epochs
    steps = QUICK_STEPS if quick else task.steps_per_epoch
    data = load(task.data)
    print("", *_header(task, epochs, steps), sep="\n", file=out, flush=True)
    runs, base = [], None
    excluded = dict(task.excluded)
    for name in names:
        if name in excluded:
            print(f"{name:<10}  not run: {excluded[name]}", file=out, flush=True)
            continue
        cfg = TrainConfig(recipe=name, data=task.data, model=task.model, epochs=epochs,
                          seed=seed, device=device, steps_per_epoch=steps)
        try:
            run = train(cfg, data=data, progress=progress)
        except Exception as err:  # noqa: BLE001 - the demo reports a failed run and goes on
            run = {"recipe": name, "config": cfg.to_dict(),
                   "error": f"{type(err).__name__}: {' '.join(str(err).split())}"}
        run["task"] = run.get("task", "lm" if task.metric == "test_loss" else "classify")
        if name == "fp32" and "final" in run:
            base = run["final"][task.metric]
        print(_row(task, name, run, base), file=out, flush=True)
        runs.append(run)
    return runs


def run_demo(recipes: Optional[Sequence[str]] = None, *, out_dir: str = "runs/demo",
             quick: bool = False, seed: int = 0, device: str = "auto",
             threads: Optional[int] = None, progress: bool = True, plots: bool = True,
             file: Optional[TextIO] = None) -> Dict[str, Any]:
    """Run the demo; print the tables to ``file`` (default stdout); write ``results.json``
    and the PNGs into ``out_dir``; return what ``results.json`` holds."""
    out = sys.stdout if file is None else file
    names, missing = _choose(recipes)
    device = resolve_device(device)
    start = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with cpu_threads(threads, device) as threads_used:
        print(f"lowbit demo{' --quick' * quick}: {len(names)} recipes x {len(TASKS)} models on "
              f"{device} ({threads_used}); results in {out_dir}", file=out, flush=True)
        if missing:
            print(f"not registered, skipped: {', '.join(missing)}", file=out, flush=True)
        runs = {task.label: _train_task(task, names, quick=quick, seed=seed, device=device,
                                        progress=progress, out=out) for task in TASKS}
    result = {
        "recipes": names, "missing": missing, "quick": quick, "seed": seed, "device": device,
        "threads": threads_used, "tasks": [dataclasses.asdict(t) for t in TASKS], "runs": runs,
        "memory": next((r["memory"] for rs in runs.values() for r in rs if "memory" in r), None),
        "seconds": time.perf_counter() - start,
        "load_average": {"before": load_before,
                         "after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    paths = [write_json(os.path.join(out_dir, "results.json"), result)]
    if plots:
        paths += _plots(runs, names, out_dir)
    print(f"\npeak MB: {result['memory'] or 'not measured'}.", file=out)
    print(f"{result['seconds']:.1f} s in all.", file=out)
    for path in paths:
        print(f"wrote {path}", file=out)
    return result


def _plots(runs: Dict[str, List[Dict[str, Any]]], names: Sequence[str],
           out_dir: str) -> List[str]:
    from ._formats import write_grids
    from ._plots import plot_curves

    paths = []
    for task in TASKS:
        done = [r for r in runs[task.label] if "final" in r]
        if done:
            paths.append(plot_curves(done, os.path.join(out_dir, f"curves_{task.label}.png"),
                                     title=f"{task.model} on {task.data}"))
    formats: List[str] = []
    for name in names:
        formats += [f for f in recipe_formats(get_recipe(name)) if f not in formats]
    return paths + write_grids(formats, os.path.join(out_dir, "formats"))


# -- the command ---------------------------------------------------------------------------------
def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("demo", help="train a CNN and a GPT in fp32 and several recipes; compare",
                       description="Train a small CNN (digits) and a small GPT (text) in fp32 "
                       "and several paper recipes; print a comparison table; write results.json, "
                       "the training curves and the value grids of the formats used (PNG).")
    p.add_argument("--quick", action="store_true", help="a few steps per run (CI, seconds)")
    p.add_argument("--out", default=os.path.join("runs", "demo"),
                   help="folder of results.json and the plots (default runs/demo)")
    p.add_argument("--recipes", help="comma-separated recipe names (default: "
                   f"{','.join(DEMO_RECIPES)}, those registered)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda[:N]")
    p.add_argument("--threads", type=int, help="CPU threads (default 1 on the CPU unless "
                   "GOMP_SPINCOUNT or OMP_WAIT_POLICY is set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    recipes = None
    if args.recipes is not None:
        recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
        if not recipes:
            raise CliError("--recipes names no recipe")
    result = run_demo(recipes, out_dir=args.out, quick=args.quick, seed=args.seed,
                      device=args.device, threads=args.threads, progress=not args.no_progress)
    failed = [r["recipe"] for rs in result["runs"].values() for r in rs if "error" in r]
    if failed:
        print(f"lowbit demo: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
