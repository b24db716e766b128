"""Training-step time of low-precision training against fp32, and against QPyTorch.

DESIGN.md's target (H100, eager, TF32 off): ResNet-18 (CIFAR-style, 32×32, batch 256) with
e5m2 on the input, weight and output gradient of every conv/linear must take at most 15% more
time per step than fp32.  Recorded anchor: fp32 13.4 ms, QPyTorch (conv+linear lowered to
e5m2, OptimLP) 25.9 ms = +93%.  Rows:

* ResNet-18 — ``fp32``; ``lowbit e5m2`` (``convert`` with a Recipe, plain SGD): the target
  row; ``lowbit e5m2 + LowPrecision`` (also e5m2 weights and gradients, e6m9 momentum and
  master copy with stochastic updates: the full IBM-8-style step); ``QPyTorch`` (``lower``
  conv+linear outputs and their gradients to e5m2, ``OptimLP`` with e5m2 weight and gradient
  quantizers), run with the real ``qtorch`` where it imports and with
  ``lowbit.compat.qtorch`` (reported on its own row); MX rows (``mxfp8`` e4m3/e5m2,
  ``mxfp4``), reported separately.
* A small GPT (6 layers, d=512, 8 heads, sequence 256, batch 32, 256-symbol vocabulary,
  AdamW) — ``fp32``; ``e5m2`` on every linear layer (attention in fp32); ``e5m2 +
  attention`` (both attention matmuls quantized too); ``mxfp8``; ``mxfp4``.

Each time is the median of ``triton.testing.do_bench`` (device events) over whole steps
(``zero_grad``, forward, loss, backward, ``step``); on a CPU, the median of ``--reps``
``time.perf_counter`` measurements.  ``--tiny`` shrinks every model for a CPU smoke run.
Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/training_step.py --device cuda --json training_step.json
    PYTHONPATH=src python benchmarks/training_step.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.models import gpt
from lowbit.nn import Recipe, ScaledDotProductAttention, convert
from lowbit.optim import LowPrecision

TARGET = 0.15  # DESIGN.md: at most +15% over fp32 for the ResNet-18 e5m2 row
E5M2 = Recipe(input="e5m2", weight="e5m2", grad_output="e5m2")
MXFP8 = Recipe(input="mxfp8_e4m3", weight="mxfp8_e4m3", grad_output="mxfp8_e5m2")
MXFP4 = Recipe(input="mxfp4", weight="mxfp4", grad_output="mxfp4")
NO_ATTENTION = {ScaledDotProductAttention: None}


# -- models ------------------------------------------------------------------------------------
class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """The usual CIFAR ResNet-18 (He et al., 2016; 3×3 stem, no max-pool, [2, 2, 2, 2] basic
    blocks of width 64·2^i, global average pool, linear head); ``width`` scales the
    channels (``--tiny``)."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            layers += [_Basic(cin, cout, stride), _Basic(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- variants: each returns (model, optimizer) on the device ------------------------------------
Build = Callable[[nn.Module], Tuple[nn.Module, torch.optim.Optimizer]]


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)


def _lowbit(recipe: Optional[Recipe], make_opt, **opt_options) -> Build:
    def build(model: nn.Module):
        if recipe is not None:
            convert(model, recipe)
        opt = make_opt(model)
        return model, (LowPrecision(opt, **opt_options) if opt_options else opt)
    return build


def _qpytorch(real: bool) -> Optional[Build]:
    """QPyTorch's IBM-8-style set-up: conv/linear outputs and their gradients lowered to
    e5m2, OptimLP with e5m2 weight and gradient quantizers (nearest)."""
    if real:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import qtorch
                from qtorch.auto_low import lower
                from qtorch.optim import OptimLP
                from qtorch.quant import quantizer
        except Exception as err:  # not installed, or its JIT build failed
            print(f"(real qtorch unavailable: {type(err).__name__}: {err})", flush=True)
            return None
    else:
        import lowbit.compat.qtorch as qtorch
        from lowbit.compat.qtorch import OptimLP, lower
        from lowbit.compat.qtorch.quant import quantizer

    def build(model: nn.Module):
        e5m2 = qtorch.FloatingPoint(exp=5, man=2)
        lower(model, layer_types=["conv", "linear"], forward_number=e5m2,
              backward_number=e5m2, forward_rounding="nearest", backward_rounding="nearest")
        q = quantizer(forward_number=e5m2, forward_rounding="nearest")
        return model, OptimLP(_sgd(model), weight_quant=q, grad_quant=q)
    return build


def resnet_variants(real_qtorch: bool = True) -> List[Tuple[str, Optional[Build]]]:
    return [
        ("fp32", _lowbit(None, _sgd)),
        ("lowbit e5m2", _lowbit(E5M2, _sgd)),
        ("lowbit e5m2 + LowPrecision", _lowbit(E5M2, _sgd, weight="e5m2", grad="e5m2",
                                                 state="e6m9", master="e6m9")),
        ("QPyTorch (real qtorch)", _qpytorch(real=True) if real_qtorch else None),
        ("QPyTorch (lowbit.compat.qtorch)", _qpytorch(real=False)),
        ("lowbit mxfp8", _lowbit(MXFP8, _sgd)),
        ("lowbit mxfp4", _lowbit(MXFP4, _sgd)),
    ]


def gpt_variants() -> List[Tuple[str, Optional[Build]]]:
    return [
        ("fp32", _lowbit(None, _adamw)),
        ("lowbit e5m2 (linear)", _lowbit(E5M2.replace(overrides=NO_ATTENTION), _adamw)),
        ("lowbit e5m2 + attention", _lowbit(E5M2, _adamw)),
        ("lowbit mxfp8 (linear)", _lowbit(MXFP8.replace(overrides=NO_ATTENTION), _adamw)),
        ("lowbit mxfp4 (linear)", _lowbit(MXFP4.replace(overrides=NO_ATTENTION), _adamw)),
    ]


# -- timing ------------------------------------------------------------------------------------
def _timer(device: torch.device, reps: int) -> Callable[[Callable[[], None]], float]:
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=100, rep=max(reps * 120, 300),
                                         return_mode="median"))

    def cpu(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    return cpu


def _measure(name: str, make_model: Callable[[], nn.Module], build: Build, inputs, device,
             timer) -> Dict[str, object]:
    torch.manual_seed(0)
    model, opt = build(make_model().to(device))
    x, y = inputs

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = timer(step)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return dict(variant=name, ms=ms, peak_mib=peak)


def run(device: torch.device, tiny: bool, reps: int, only: Optional[List[str]],
        real_qtorch: bool = True) -> List[Dict]:
    timer = _timer(device, reps)
    g = torch.Generator().manual_seed(0)
    if tiny:
        rn = dict(batch=4, width=8)
        gp = dict(batch=2, seq=32, n_layer=1, n_embd=64, n_head=4, vocab=64)
    else:
        rn = dict(batch=256, width=64)
        gp = dict(batch=32, seq=256, n_layer=6, n_embd=512, n_head=8, vocab=256)
    suites = {
        "resnet18": (lambda: ResNet18(width=rn["width"]), resnet_variants(real_qtorch),
                     (torch.randn(rn["batch"], 3, 32, 32, generator=g).to(device),
                      torch.randint(0, 10, (rn["batch"],), generator=g).to(device))),
        "gpt": (lambda: gpt(vocab_size=gp["vocab"], block_size=gp["seq"], n_layer=gp["n_layer"],
                            n_head=gp["n_head"], n_embd=gp["n_embd"]), gpt_variants(),
                (torch.randint(0, gp["vocab"], (gp["batch"], gp["seq"]), generator=g).to(device),
                 torch.randint(0, gp["vocab"], (gp["batch"], gp["seq"]), generator=g).to(device))),
    }
    rows = []
    for model_name, (make, variants, inputs) in suites.items():
        base = None
        for name, build in variants:
            if build is None or (only and name not in only and name != "fp32"):
                continue
            r = _measure(name, make, build, inputs, device, timer)
            base = r["ms"] if name == "fp32" else base
            r.update(model=model_name, overhead=(r["ms"] / base - 1) if base else None,
                     target=TARGET if (model_name, name) == ("resnet18", "lowbit e5m2") else None)
            rows.append(r)
            _print(r)
    return rows


def _print(r: Dict) -> None:
    over = "" if r["overhead"] is None else f"{r['overhead']:+8.1%}"
    target = "" if r["target"] is None else f"  (target <= +{r['target']:.0%})"
    mem = "" if r["peak_mib"] is None else f" {r['peak_mib']:8.0f} MiB"
    print(f"{r['model']:>9} {r['variant']:>34} {r['ms']:9.2f} ms {over}{mem}{target}", flush=True)


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke run)")
    parser.add_argument("--reps", type=int, default=5, help="CPU repetitions (median)")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--no-real-qtorch", action="store_true",
                        help="skip the real qtorch (its import JIT-builds a C++ extension)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print(f"{'model':>9} {'variant':>34} {'step':>12} {'vs fp32':>8}", flush=True)
    rows = run(device, args.tiny, args.reps, args.only, not args.no_real_qtorch)
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        command=" ".join(sys.argv), python=platform.python_version(), torch=torch.__version__,
        device=(torch.cuda.get_device_name(device) if device.type == "cuda"
                else platform.processor() or "cpu"),
        tf32=False, tiny=args.tiny, target=TARGET,
        qtorch=sorted({r["variant"] for r in rows if "QPyTorch" in r["variant"]}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(meta=meta, rows=rows), fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
