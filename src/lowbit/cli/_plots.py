"""PNG plots of ``lowbit train``, ``lowbit demo`` and ``lowbit formats``: training curves and
value grids of formats.

matplotlib is imported here, inside the functions (``import lowbit`` stays light), and only
its object-oriented API is used (``matplotlib.figure.Figure`` drawn by the Agg canvas): no
pyplot, so no GUI backend is chosen and no global figure state is touched.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence

import numpy as np

__all__ = ["plot_curves", "plot_value_grid", "safe_name"]


def _figure(width: float, height: float, ncols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")
    return path


def safe_name(name: str) -> str:
    """A file-name-safe form of a format or recipe name (``fixed<8,4>`` → ``fixed_8_4_``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _smooth(values: Sequence[float]) -> np.ndarray:
    """A trailing moving average over about a fiftieth of the run (NaN steps skipped)."""
    v = np.asarray(values, dtype=np.float64)
    window = max(1, len(v) // 50)
    ok = np.isfinite(v)
    kernel = np.ones(window)
    total = np.convolve(np.where(ok, v, 0.0), kernel)[:len(v)]
    count = np.convolve(ok.astype(np.float64), kernel)[:len(v)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def plot_curves(runs: Sequence[Dict[str, Any]], path: str, *, title: str = "") -> str:
    """Training loss per step (smoothed) and the test metric per epoch, one line per run
    (labelled by recipe); accuracy for classification, loss for language models."""
    fig, (left, right) = _figure(11, 4, 2)
    lm = any(run.get("task") == "lm" for run in runs)
    lines: Dict[Any, list] = {left: [], right: []}
    for run in runs:
        losses = run["step_losses"]
        lines[left] += left.plot(np.arange(1, len(losses) + 1), _smooth(losses), linewidth=1.2)
        epochs = [e["epoch"] for e in run["epochs"]]
        metric = [e["test_loss" if lm else "test_accuracy"] for e in run["epochs"]]
        lines[right] += right.plot(epochs, metric, marker="o")
    left.set(xlabel="step", ylabel="training loss (smoothed)", title="training loss")
    if any(np.any(np.isfinite(r["step_losses"]) & (np.asarray(r["step_losses"]) > 0))
           for r in runs if len(r["step_losses"])):
        left.set_yscale("log")
    right.set(xlabel="epoch", ylabel="test loss (nats per token)" if lm else "test accuracy",
              title="test loss" if lm else "test accuracy")
    from matplotlib.ticker import MaxNLocator

    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    labels = [run["recipe"] for run in runs]
    for ax in (left, right):
        ax.grid(alpha=0.3)
        # Handles and labels given explicitly: automatic legends drop labels starting with "_".
        ax.legend(lines[ax], labels, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_value_grid(grid, path: str) -> str:
    """Two panels of a format's grid (``_formats.value_grid``): its non-negative values as
    ticks on a linear axis, and the relative spacing ulp(x)/x over its positive range."""
    fig, (left, right) = _figure(11, 3.2, 2)
    values = grid.values
    left.vlines(values, 0, 1, linewidth=0.8)
    left.set(yticks=[], xlabel="value", title=grid.values_title)
    if values.size > 1:
        pad = 0.02 * (values[-1] - values[0])
        left.set_xlim(values[0] - pad, values[-1] + pad)
    right.step(grid.x, grid.rel_spacing, where="post", linewidth=1.2)
    right.set_xscale("log", base=2)
    right.set_yscale("log", base=2)
    right.set(xlabel="|x|", ylabel="ulp(x) / x", title="relative spacing (1 ulp / value)")
    right.grid(alpha=0.3, which="both")
    fig.suptitle(grid.title)
    fig.tight_layout()
    return _save(fig, path)
