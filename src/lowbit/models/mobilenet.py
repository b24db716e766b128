"""MobileNetV2 for small images (Sandler et al., 2018, "MobileNetV2: inverted residuals and
linear bottlenecks", Table 2), with the CIFAR adaptation common in the literature: stride 1
in the stem and the second stage, so 32×32 inputs end at 4×4."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileNetV2", "mobilenetv2"]

# (expansion t, output channels c, repeats n, first stride s), Table 2 with CIFAR strides.
_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
        (6, 160, 3, 2), (6, 320, 1, 1))


def _ch(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)  # channel counts rounded to multiples of 8


class _Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        mid = cin * expansion
        self.use_skip = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.ReLU6(),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_skip else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        cin = _ch(32 * width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cin), nn.ReLU6())
        blocks: List[nn.Module] = []
        for t, c, n, s in _CFG:
            cout = _ch(c * width)
            for i in range(n):
                blocks.append(_Inverted(cin, cout, t, s if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        last = _ch(1280 * max(1.0, width))
        self.head = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last),
                                  nn.ReLU6())
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> MobileNetV2:
    return MobileNetV2(num_classes, in_channels, width)
