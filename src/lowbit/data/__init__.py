"""Datasets that ship with lowbit, so examples, tests and ``lowbit demo`` need no download.

* ``digits``: the UCI optical-recognition digits as distributed by scikit-learn (1797 images of
  8×8 pixels, values 0..16, CC BY 4.0), with a fixed stratified 80/20 split.
* ``text``: a character-level language-modelling corpus built from Python's own standard-library
  sources (read from this interpreter's installation; nothing is downloaded).
* ``synthetic``: a seeded Gaussian-mixture classification task of any size.

Every loader returns CPU tensors; nothing here imports the rest of lowbit.
"""

from __future__ import annotations

import gzip
import os
import sysconfig
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch

__all__ = ["Split", "digits", "text", "synthetic"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The split is a property of the data, not of a training run: one fixed permutation seed.
_SPLIT_SEED = 20240601


@dataclass(frozen=True)
class Split:
    """A train/test pair of (inputs, targets) tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _stratified(y: np.ndarray, test_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits(*, flat: bool = False) -> Split:
    """scikit-learn's 8×8 digits, scaled to [0, 1], in a fixed stratified 80/20 split
    (1438 train, 359 test; the same split on every machine).

    Args:
        flat: return inputs of shape (N, 64) instead of (N, 1, 8, 8).
    """
    if not isinstance(flat, bool):
        raise TypeError(f"flat must be a bool; got {flat!r}")
    with gzip.open(os.path.join(_HERE, "digits.csv.gz"), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x, y = table[:, :64] / 16.0, table[:, 64].astype(np.int64)
    tr, te = _stratified(y, 0.2)
    shape = (-1, 64) if flat else (-1, 1, 8, 8)
    t = torch.from_numpy
    return Split(t(x[tr]).reshape(shape), t(y[tr]), t(x[te]).reshape(shape), t(y[te]))


def _stdlib_files(limit_bytes: int) -> str:
    root = sysconfig.get_paths()["stdlib"]
    names = sorted(n for n in os.listdir(root) if n.endswith(".py"))
    chunks, total = [], 0
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
            body = fh.read()
        chunks.append(body)
        total += len(body)
        if total >= limit_bytes:
            break
    if not chunks:
        raise RuntimeError(f"no Python sources found under {root}")
    return "\n".join(chunks)[:limit_bytes]


def text(*, chars: int = 400_000, block: int = 64) -> Tuple[Split, Tuple[str, ...]]:
    """A character language-modelling task over Python's standard-library sources.

    The first ``chars`` characters of the stdlib's top-level ``*.py`` files (sorted by name),
    restricted to printable ASCII plus newline (others become ``?``), cut into non-overlapping
    windows of ``block + 1`` characters; inputs are the first ``block``, targets the next-char
    shift.  The last 10% of windows are the test split.  Returns ``(split, vocabulary)``.
    """
    for name, value, low in (("chars", chars, 1000), ("block", block, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    vocab = tuple(["\n"] + [chr(c) for c in range(32, 127)] + ["?"])
    index = {c: i for i, c in enumerate(vocab)}
    unknown = index["?"]
    raw = _stdlib_files(chars)
    ids = torch.tensor([index.get(c, unknown) for c in raw], dtype=torch.int64)
    n = (ids.numel() - 1) // (block + 1)
    if n < 10:
        raise ValueError(f"chars={chars} gives only {n} windows of {block + 1}; raise chars")
    windows = ids[: n * (block + 1)].reshape(n, block + 1)
    n_test = max(1, n // 10)
    x, y = windows[:, :-1], windows[:, 1:]
    return Split(x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]), vocab


def synthetic(*, n: int = 2048, features: int = 32, classes: int = 10, seed: int = 0) -> Split:
    """A Gaussian-mixture classification task: class means on a sphere of radius 3, unit
    noise; 80/20 split.  Deterministic in ``seed``."""
    for name, value, low in (("n", n, 10), ("features", features, 1), ("classes", classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, features, generator=g)
    means = 3 * means / means.norm(dim=1, keepdim=True)
    y = torch.randint(0, classes, (n,), generator=g)
    x = means[y] + torch.randn(n, features, generator=g)
    cut = n - n // 5
    return Split(x[:cut], y[:cut], x[cut:], y[cut:])
