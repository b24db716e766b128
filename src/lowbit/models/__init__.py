"""A small model zoo for low-precision training research: CIFAR-style ResNet-20/56,
PreAct-ResNet-18, VGG-7 (WAGE), MobileNetV2 and a small GPT.

``get(name, **kwargs)`` builds one by name; ``names()`` lists them.  ``get("torchvision.NAME",
**kwargs)`` builds a torchvision model where torchvision is installed (it is not a
dependency).
"""

from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

from .gpt import GPT, GPTConfig, gpt
from .mobilenet import MobileNetV2, mobilenetv2
from .resnet import CifarResNet, PreActResNet, preact_resnet18, resnet20, resnet56
from .vgg import VGG7, vgg7

__all__ = ["get", "names", "CifarResNet", "PreActResNet", "VGG7", "MobileNetV2", "GPT",
           "GPTConfig", "resnet20", "resnet56", "preact_resnet18", "vgg7", "mobilenetv2",
           "gpt"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "preact_resnet18": preact_resnet18,
    "vgg7": vgg7,
    "mobilenetv2": mobilenetv2,
    "gpt": gpt,
}
_TORCHVISION = "torchvision."


def names() -> List[str]:
    """The names ``get`` accepts (besides ``torchvision.NAME``)."""
    return list(_MODELS)


def get(name: str, **kwargs) -> nn.Module:
    """Build the model ``name`` with ``kwargs`` (e.g. ``num_classes``, ``in_channels``).

    Raises:
        ValueError: unknown name.
        ImportError: a ``torchvision.`` name without torchvision installed.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str; got {type(name).__name__}")
    if name.startswith(_TORCHVISION):
        try:
            import torchvision
        except ModuleNotFoundError:
            raise ImportError(f"{name!r} needs torchvision, which is not installed") from None
        return torchvision.models.get_model(name[len(_TORCHVISION):], **kwargs)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {names()} or torchvision.NAME")
    return _MODELS[name](**kwargs)
