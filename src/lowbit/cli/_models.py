"""The models of ``lowbit train``: two small ones defined here (``cnn`` and ``mlp``), the zoo
of ``lowbit.models`` and ``torchvision.NAME``, with a default per data set."""

from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from .. import models as zoo
from ._common import CliError
from ._data import Dataset

__all__ = ["DEFAULT_MODEL", "names", "cnn", "mlp", "build"]

#: The model ``lowbit train`` picks when ``--model`` is not given.
DEFAULT_MODEL = {"digits": "cnn", "text": "gpt", "synthetic": "mlp", "mnist": "cnn",
                 "cifar10": "resnet20"}
#: The small GPT of ``lowbit demo`` and ``examples/text_transformer.py``.
GPT_SIZE = dict(n_layer=2, n_head=4, n_embd=64)


def cnn(in_channels: int = 1, num_classes: int = 10, *, batchnorm: bool = True) -> nn.Module:
    """conv3×3(16)-BN-ReLU, conv3×3(32)-BN-ReLU, 2×2 max-pool, average-pool to 4×4,
    linear(10): the CNN of ``examples/digits_cnn.py`` (on 8×8 inputs the average pool is the
    identity), usable on any image size.  ``batchnorm=False`` (model ``cnn_nobn``) leaves the
    BatchNorm layers out, for recipes without one (WAGE)."""
    def norm(c: int) -> list:
        return [nn.BatchNorm2d(c)] if batchnorm else []

    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), *norm(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), *norm(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 4 * 4, num_classes))


def mlp(in_features: int, num_classes: int = 10, width: int = 128) -> nn.Module:
    """Flatten, two hidden layers of ``width`` with ReLU, a linear classifier."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width),
        nn.ReLU(), nn.Linear(width, num_classes))


def names() -> List[str]:
    """The names ``--model`` accepts (besides ``torchvision.NAME``)."""
    return ["cnn", "cnn_nobn", "mlp", *zoo.names()]


def build(name: str, data: Dataset, *, seed: int = 0) -> nn.Module:
    """Model ``name`` shaped for ``data`` (classes, channels, vocabulary), initialised from
    ``torch.manual_seed(seed)``.

    Raises:
        CliError: an unknown model, or one that does not fit the data (a GPT needs the
            ``text`` task, an image model needs images).
    """
    if not isinstance(name, str) or (name not in names() and not name.startswith("torchvision.")):
        raise CliError(f"unknown model {name!r}; choose one of {', '.join(names())} or "
                       "torchvision.NAME")
    shape = data.input_shape
    image = len(shape) == 3
    if (name == "gpt") != (data.task == "lm"):
        what = "needs --data text" if name == "gpt" else "is a classifier"
        raise CliError(f"model {name!r} does not fit data {data.name!r}: {name} {what}"
                       + ("" if name == "gpt" else "; the text task takes --model gpt"))
    if name not in ("mlp", "gpt") and not image:
        raise CliError(f"model {name!r} needs image data; data {data.name!r} has inputs of "
                       f"shape {shape}: use --model mlp")
    torch.manual_seed(seed)
    if name in ("cnn", "cnn_nobn"):
        return cnn(shape[0], data.classes, batchnorm=name == "cnn")
    if name == "mlp":
        return mlp(math.prod(shape), data.classes)
    if name == "gpt":
        return zoo.gpt(vocab_size=data.classes, block_size=shape[0], **GPT_SIZE)
    kwargs = dict(num_classes=data.classes)
    if name.startswith("torchvision."):
        if shape[0] != 3:
            raise CliError(f"torchvision models take 3-channel images; {data.name} has "
                           f"{shape[0]}")
    elif name == "vgg7":
        kwargs.update(in_channels=shape[0], image_size=shape[1])
    else:
        kwargs.update(in_channels=shape[0])
    try:
        return zoo.get(name, **kwargs)
    except (ValueError, ImportError) as err:
        raise CliError(str(err)) from None
