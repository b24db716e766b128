"""Train a small CNN on scikit-learn's 8×8 digits (shipped with lowbit) in five precisions.

Each precision is a ``Recipe`` (the format of each GEMM's input, weight and output gradient,
applied by ``convert``) plus the options of a ``LowPrecision`` optimizer (the format of the
weights, gradients and optimizer state):

=========  ==================================================================================
fp32       the baseline: no recipe, plain SGD
bf16       every GEMM operand in bf16; weights and momentum kept in bf16, updates rounded
           stochastically (so steps smaller than a bf16 ulp survive on average)
fp8        HFP8/OCP FP8: e4m3fn forward operands, e5m2 output gradients, each with a dynamic
           per-tensor scale; dynamic loss scaling; e5m2 weight gradients, bf16 momentum
fixed      fixed<8,4> operands (16 levels per unit, range ±8) behind a per-tensor scale, the
           gradients rounded stochastically (WAGE-style)
mxfp4      OCP MX FP4 (e2m1 elements, an e8m0 scale per 32 along the reduction axis) for
           every operand, stochastic rounding for the gradients
=========  ==================================================================================

    PYTHONPATH=src python examples/digits_cnn.py                 # all five, ~25 s on 2 cores
    PYTHONPATH=src python examples/digits_cnn.py --format fp8 --epochs 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.data import digits
from lowbit.nn import Recipe, Role, convert
from lowbit.optim import LowPrecision

#: name -> (recipe, LowPrecision options); None / {} mean fp32.
CONFIGS = {
    "fp32": (None, {}),
    "bf16": (Recipe(input="bf16", weight="bf16", grad_output="bf16"),
             dict(weight="bf16", state="bf16", update_rounding="stochastic")),
    "fp8": (Recipe(input=Role("e4m3fn", scaling="tensor"), weight=Role("e4m3fn", scaling="tensor"),
                   grad_output=Role("e5m2", scaling="tensor")),
            dict(grad="e5m2", state="bf16", loss_scale="dynamic")),
    "fixed": (Recipe(input=Role("fixed<8,4>", scaling="tensor"),
                     weight=Role("fixed<8,4>", scaling="tensor"),
                     grad_output=Role("fixed<8,4>", rounding="stochastic", scaling="tensor")),
              {}),
    "mxfp4": (Recipe(input="mxfp4", weight="mxfp4",
                     grad_output=Role("mxfp4", rounding="stochastic")),
              {}),
}


def cnn() -> nn.Module:
    """conv3×3(16)-BN-ReLU, conv3×3(32)-BN-ReLU, 2×2 max-pool, linear(10): 8×8 → 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def build(name: str, *, lr: float = 0.05, seed: int = 0) -> Tuple[nn.Module, LowPrecision]:
    """The model and optimizer of configuration ``name``."""
    recipe, opt_options = CONFIGS[name]
    torch.manual_seed(seed)
    model = cnn()
    if recipe is not None:
        convert(model, recipe, seed=seed)
    opt = LowPrecision(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                       seed=seed, **opt_options)
    return model, opt


def train(name: str, *, epochs: int = 8, max_steps: Optional[int] = None, batch: int = 64,
          lr: float = 0.05, seed: int = 0) -> Dict[str, object]:
    """Train one configuration; returns its test accuracy, final loss, steps and seconds."""
    data = digits()
    model, opt = build(name, lr=lr, seed=seed)
    order = torch.Generator().manual_seed(seed)
    n, steps, loss = data.x_train.shape[0], 0, torch.tensor(float("nan"))
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=order).split(batch):
            opt.zero_grad()
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.backward(loss)
            opt.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        if max_steps is not None and steps >= max_steps:
            break
    seconds = time.perf_counter() - start
    return dict(format=name, test_accuracy=accuracy(model, data.x_test, data.y_test),
                final_loss=loss.item(), steps=steps, seconds=seconds)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    names = list(CONFIGS) if args.format == "all" else [args.format]
    results = []
    print(f"{'format':>8} {'test acc':>9} {'loss':>8} {'steps':>6} {'seconds':>8}")
    for name in names:
        r = train(name, epochs=args.epochs, max_steps=args.max_steps, seed=args.seed)
        results.append(r)
        print(f"{name:>8} {r['test_accuracy']:9.3f} {r['final_loss']:8.4f} {r['steps']:6d} "
              f"{r['seconds']:8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
