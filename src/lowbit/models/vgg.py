"""VGG-7 as WAGE trains it on CIFAR-10 (Wu et al., 2018, "Training and inference with
integers in deep neural networks", §4.1): 2×(128-C3), MP2, 2×(256-C3), MP2, 2×(512-C3), MP2,
1024-FC, classifier.  ``width`` scales the channel counts (1.0: the paper's)."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

__all__ = ["VGG7", "vgg7"]


class VGG7(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: float = 1.0, batchnorm: bool = True):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (three 2x poolings); "
                             f"got {image_size}")
        chans = [max(1, round(c * width)) for c in (128, 128, 256, 256, 512, 512)]
        layers: List[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(chans):
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
            if i % 2:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        hidden = max(1, round(1024 * width))
        side = image_size // 8
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, hidden),
                                        nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg7(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: float = 1.0,
         batchnorm: bool = True) -> VGG7:
    return VGG7(num_classes, in_channels, image_size, width, batchnorm)
