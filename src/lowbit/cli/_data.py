"""The data of ``lowbit train`` and ``lowbit demo``: the embedded sets of ``lowbit.data``
(``digits``, ``text``, ``synthetic``) and, where the user has the files, torchvision's MNIST and
CIFAR-10 (``--data mnist|cifar10 --data-dir DIR``).  Nothing is ever downloaded: torchvision's
datasets are opened with ``download=False``, and a missing torchvision, directory or file is a
one-line ``CliError``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np
import torch

from .. import data as embedded
from ._common import CliError

__all__ = ["DATA", "EMBEDDED", "TORCHVISION", "Dataset", "load"]

#: The embedded data sets (shipped with lowbit or built from this interpreter's files).
EMBEDDED = ("digits", "text", "synthetic")
#: torchvision's class for each data set read from ``--data-dir``.
TORCHVISION = {"mnist": "MNIST", "cifar10": "CIFAR10"}
#: Every name ``--data`` accepts.
DATA = EMBEDDED + tuple(TORCHVISION)
#: Characters of the ``text`` corpus and its window length (the examples' choice).
TEXT_CHARS, TEXT_BLOCK = 200_000, 64


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split and what kind of task it is.

    Attributes:
        name: the ``--data`` name.
        split: CPU tensors (``lowbit.data.Split``).
        task: ``classify`` (one label per input) or ``lm`` (a next-token label per position).
        classes: the number of classes, or the vocabulary size for ``lm``.
    """

    name: str
    split: embedded.Split
    task: str
    classes: int

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """The shape of one input (``(C, H, W)`` images, ``(F,)`` features, ``(T,)`` tokens)."""
        return tuple(self.split.x_train.shape[1:])


def load(name: str, data_dir: Optional[str] = None) -> Dataset:
    """The data set ``name`` (one of ``DATA``); ``data_dir`` is read for torchvision's sets.

    Raises:
        CliError: an unknown name, or a torchvision set without torchvision, directory or files.
    """
    if name == "digits":
        split = embedded.digits()
        return Dataset(name, split, "classify", 10)
    if name == "text":
        split, vocab = embedded.text(chars=TEXT_CHARS, block=TEXT_BLOCK)
        return Dataset(name, split, "lm", len(vocab))
    if name == "synthetic":
        return Dataset(name, embedded.synthetic(), "classify", 10)
    if name in TORCHVISION:
        return Dataset(name, _torchvision(name, data_dir), "classify", 10)
    raise CliError(f"unknown data {name!r}; choose one of {', '.join(DATA)}")


def _torchvision(name: str, data_dir: Optional[str]) -> embedded.Split:
    """Open torchvision's data set from ``data_dir`` (no download) as normalised tensors."""
    cls_name = TORCHVISION[name]
    if data_dir is None:
        raise CliError(f"--data {name} needs --data-dir DIR, a folder holding torchvision's "
                       f"{cls_name} files (lowbit downloads nothing)")
    if not os.path.isdir(data_dir):
        raise CliError(f"--data-dir {data_dir}: no such directory")
    try:
        import torchvision
    except ModuleNotFoundError:
        raise CliError(f"--data {name} needs torchvision, which is not installed "
                       "(pip install torchvision)") from None
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(data_dir, train=True, download=False)
        test = cls(data_dir, train=False, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found ..."
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CliError(f"no usable {cls_name} files under {data_dir} ({reason}); lowbit "
                       "downloads nothing: fetch them with torchvision first") from None
    x_train, y_train = _images(train)
    x_test, y_test = _images(test)
    # Per-channel standardisation with the training set's statistics.
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return embedded.Split((x_train - mean) / std, y_train, (x_test - mean) / std, y_test)


def _images(dataset: object) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, H, W)`` floats in [0, 1] and int64 labels from a torchvision data set's
    ``data`` (uint8, ``(N, H, W)`` as MNIST or ``(N, H, W, C)`` as CIFAR) and ``targets``."""
    x = torch.as_tensor(np.asarray(dataset.data))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return x.float().div_(255.0).contiguous(), y
