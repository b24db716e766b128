"""Shared by test_wage.py and test_wageubn.py: a small digits CNN and a training loop that
uses a recipe exactly as ``PaperRecipe.prepare`` documents it."""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import lowbit.recipes as recipes
from lowbit.data import digits


def cnn(*, batchnorm: bool) -> nn.Sequential:
    """conv3x3(16)-[BN]-ReLU, conv3x3(32)-[BN]-ReLU, max-pool 2, linear(10): 8x8 -> 10."""
    def block(cin: int, cout: int) -> List[nn.Module]:
        layers: List[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm)]
        return layers + ([nn.BatchNorm2d(cout)] if batchnorm else []) + [nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 4 * 4, 10))


def train(name: str, model: nn.Module, *, seed: int, epochs: float, batch: int = 32,
          lr=None) -> Tuple[List[float], float]:
    """Train ``model`` with recipe ``name`` on digits; returns (losses, test accuracy)."""
    torch.manual_seed(seed)
    data = digits()
    prepared = recipes.get(name).prepare(model, seed=seed)
    opt = prepared.make_optimizer(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    steps, losses = int(epochs * ((n + batch - 1) // batch)), []
    perm, start = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if start >= n:
            perm, start = torch.randperm(n, generator=gen), 0
        idx, start = perm[start:start + batch], start + batch
        with prepared.context():
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    model.train()
    return losses, acc
