"""ActNN's optimization levels as recipes: fp32 layers, the level's compression policy, a new
seed per context, and a few training steps on digits without NaN."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.recipes as R
from lowbit.act import level
from lowbit.data import digits

LEVELS = ("L1", "L2", "L3", "L4", "L5")


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 10))


@pytest.mark.parametrize("lvl", LEVELS)
def test_recipe_is_fp32_layers_with_the_level_policy(lvl):
    r = R.get(f"actnn_{lvl.lower()}")
    assert r.act == lvl and not r.recipe.active and not r.optimizer.low_precision
    model = _cnn()
    prepared = r.prepare(model, seed=0)
    assert prepared.model is model and not hasattr(model[0], "lowbit")
    ctx = prepared.context()
    assert ctx.policy == level(lvl)


def test_each_context_gets_its_own_seed():
    prepared = R.get("actnn_l2").prepare(_cnn(), seed=0)
    seeds = {prepared.context().seed for _ in range(3)}
    assert len(seeds) == 3
    again = R.get("actnn_l2").prepare(_cnn(), seed=0)
    assert again.context().seed in seeds  # the same run seed gives the same sequence


def _grads(model, x, y, context):
    model.zero_grad()
    with context() as report:
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()], report


def test_l2_compresses_saved_inputs_and_stays_close_to_fp32():
    d = digits()
    x, y = d.x_train[:64], d.y_train[:64]
    torch.manual_seed(0)
    model = _cnn()
    exact, _ = _grads(model, x, y, contextlib.nullcontext)
    prepared = R.get("actnn_l2").prepare(model, seed=0)
    approx, report = _grads(model, x, y, prepared.context)
    assert "bits4" in report.by_store and report.ratio < 0.5
    conv1 = (approx[0] - exact[0]).norm() / exact[0].norm()
    assert 0 < conv1 < 0.1  # lossy (4-bit codes) but close


@pytest.mark.parametrize("lvl", LEVELS)
def test_trains_digits_without_nan(lvl):
    d = digits()
    torch.manual_seed(0)
    model = _cnn()
    prepared = R.get(f"actnn_{lvl.lower()}").prepare(model, seed=0)
    opt = prepared.make_optimizer(model.parameters(), lr=0.05)
    losses = []
    for i in range(5):
        idx = slice(32 * i, 32 * i + 32)
        with prepared.context():
            loss = F.cross_entropy(model(d.x_train[idx]), d.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
