"""Train a small character-level GPT on Python's standard-library sources in five precisions.

The corpus is read from this interpreter's own installation (``lowbit.data.text``), so
nothing is downloaded.  Each precision is a ``Recipe`` for every GEMM of the model (the
linear layers and both attention matmuls; the first and last GEMM stay fp32 in ``fp8``, as
in the FP8 training papers) plus the options of a ``LowPrecision`` AdamW:

=========  ==================================================================================
fp32       the baseline: no recipe, plain AdamW
bf16       every GEMM operand in bf16; weights and both Adam moments kept in bf16, updates
           rounded stochastically
fp8        e4m3fn forward operands, e5m2 output gradients, dynamic per-tensor scales; first
           and last GEMM in fp32; dynamic loss scaling, bf16 moments
fixed      fixed<8,4> operands behind a per-tensor scale, stochastic gradients
mxfp4      OCP MX FP4 for every operand (blocks of 32 along each GEMM's reduction axis),
           stochastic rounding for the gradients
=========  ==================================================================================

The table reports the test loss in bits per character (lower is better; a uniform guess over
the 97-symbol vocabulary is log2(97) = 6.6 bits).

    PYTHONPATH=src python examples/text_transformer.py --format bf16
    PYTHONPATH=src python examples/text_transformer.py --steps 400 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from lowbit.data import text
from lowbit.models import gpt
from lowbit.nn import Recipe, Role, convert
from lowbit.optim import LowPrecision

#: name -> (recipe, LowPrecision options); None / {} mean fp32.
CONFIGS = {
    "fp32": (None, {}),
    "bf16": (Recipe(input="bf16", weight="bf16", grad_output="bf16"),
             dict(weight="bf16", state="bf16", update_rounding="stochastic")),
    "fp8": (Recipe(input=Role("e4m3fn", scaling="tensor"), weight=Role("e4m3fn", scaling="tensor"),
                   grad_output=Role("e5m2", scaling="tensor"),
                   overrides={"first": None, "last": None}),
            dict(state="bf16", loss_scale="dynamic")),
    "fixed": (Recipe(input=Role("fixed<8,4>", scaling="tensor"),
                     weight=Role("fixed<8,4>", scaling="tensor"),
                     grad_output=Role("fixed<8,4>", rounding="stochastic", scaling="tensor")),
              {}),
    "mxfp4": (Recipe(input="mxfp4", weight="mxfp4",
                     grad_output=Role("mxfp4", rounding="stochastic")),
              {}),
}


def test_bits_per_char(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    model.train()
    return nats / math.log(2)


def build(name: str, vocab_size: int, *, block: int = 64, lr: float = 3e-3,
          seed: int = 0) -> Tuple[torch.nn.Module, LowPrecision]:
    """The model (2 layers, width 64, 4 heads) and optimizer of configuration ``name``."""
    recipe, opt_options = CONFIGS[name]
    torch.manual_seed(seed)
    model = gpt(vocab_size=vocab_size, block_size=block, n_layer=2, n_head=4, n_embd=64)
    if recipe is not None:
        convert(model, recipe, seed=seed)
    inner = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    return model, LowPrecision(inner, seed=seed, **opt_options)


def train(name: str, *, steps: int = 150, batch: int = 32, block: int = 64, lr: float = 3e-3,
          seed: int = 0, test_windows: int = 64) -> Dict[str, object]:
    """Train one configuration; returns its test bits/char, final loss, steps and seconds."""
    data, vocab = text(chars=200_000, block=block)
    model, opt = build(name, len(vocab), block=block, lr=lr, seed=seed)
    order = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, data.x_train.shape[0], (batch,), generator=order)
        opt.zero_grad()
        logits = model(data.x_train[idx])
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), data.y_train[idx].reshape(-1))
        opt.backward(loss)
        opt.step()
    seconds = time.perf_counter() - start
    bpc = test_bits_per_char(model, data.x_test[:test_windows], data.y_test[:test_windows])
    return dict(format=name, test_bits_per_char=bpc, final_loss=loss.item(), steps=steps,
                seconds=seconds)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    names = list(CONFIGS) if args.format == "all" else [args.format]
    results = []
    print(f"{'format':>8} {'test bits/char':>15} {'loss':>8} {'steps':>6} {'seconds':>8}")
    for name in names:
        r = train(name, steps=args.steps, seed=args.seed)
        results.append(r)
        print(f"{name:>8} {r['test_bits_per_char']:15.3f} {r['final_loss']:8.4f} "
              f"{r['steps']:6d} {r['seconds']:8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
