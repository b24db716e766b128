"""Activation memory and step time of activation-compressed training (``lowbit.act``), and the
pack/unpack bandwidth against the same-run ``clone``.

Per model (ResNet-50 at 224², torchvision's when installed, else the local definition below;
a GPT-2-small-sized decoder, 12 layers × 768, 12 heads, 1024 tokens) and per configuration
(``bf16``: autocast, no compression; ``4bit``/``2bit``: ``lowbit.act.compress(model,
bits=b)`` under the same autocast), at one batch size:

* activation memory: ``torch.cuda.max_memory_allocated()`` during the forward minus the
  allocation before it (peak, transients included) and the allocation left after it (what is
  held for backward); on the CPU, the bytes of the tensors held, from the ``Report``;
* step time: forward, backward and an SGD step, median of device-event timings (CUDA) or
  wall-clock medians (CPU);
* on CUDA, the largest batch whose training step fits ``--budget-gib`` (the allocator capped
  with ``set_per_process_memory_fraction``), by doubling then bisection.

Pack/unpack rows: ``lowbit.kernels.pack`` on a ``--numel`` bf16 tensor (GB/s = bytes read plus
written: pack reads 2 B/element and writes the codes and bounds; unpack the reverse), against
``clone`` (CUDA) or ``copy_`` into a preallocated tensor (CPU) of the same tensor.

    PYTHONPATH=src python benchmarks/act_memory.py                      # CUDA if present
    PYTHONPATH=src python benchmarks/act_memory.py --device cpu         # small CPU config

Prints a table and writes JSON (default ``benchmarks/results/act_memory_<device>.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

import lowbit
from lowbit.act import compress
from lowbit.kernels.pack import group_nbytes, pack_groups, unpack_groups

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CONFIGS = {"bf16": None, "4bit": 4, "2bit": 2}
SIZES = {  # per device: (image size, ResNet width/depth, GPT dims, tokens, batch, pack numel)
    "cuda": dict(image=224, resnet=(64, (3, 4, 6, 3)), gpt=(12, 768, 12, 50257), tokens=1024,
                 batch={"resnet50": 64, "gpt2": 8}, numel=64 * 2**20),
    "cpu": dict(image=32, resnet=(16, (1, 1, 1, 1)), gpt=(2, 128, 4, 512), tokens=64,
                batch={"resnet50": 16, "gpt2": 4}, numel=4 * 2**20),
}


# -- models ---------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


def resnet(width: int, depths, classes: int = 1000) -> nn.Module:
    """ResNet-50's layout (He et al. 2016) at stem width ``width``: torchvision's when
    installed and the width is 64, else this definition."""
    if width == 64 and tuple(depths) == (3, 4, 6, 3):
        try:
            import torchvision

            return torchvision.models.resnet50()
        except ImportError:
            pass
    layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
              nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for i, depth in enumerate(depths):
        for j in range(depth):
            layers.append(Bottleneck(cin, width * 2**i, 2 if j == 0 and i > 0 else 1))
            cin = 4 * width * 2**i
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


class GPTBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d, d))

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """GPT-2 small's shape (Radford et al. 2019): learned positions, pre-LN blocks."""

    def __init__(self, layers: int, d: int, heads: int, vocab: int, tokens: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(tokens, d)
        self.blocks = nn.Sequential(*(GPTBlock(d, heads) for _ in range(layers)))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def build(name: str, device: str):
    s = SIZES[device]
    if name == "resnet50":
        model = resnet(*s["resnet"])

        def batch(n):
            return (torch.randn(n, 3, s["image"], s["image"], device=device),
                    torch.randint(0, 1000, (n,), device=device))
    else:
        layers, d, heads, vocab = s["gpt"]
        model = GPT(layers, d, heads, vocab, s["tokens"])

        def batch(n):
            idx = torch.randint(0, vocab, (n, s["tokens"] + 1), device=device)
            return idx[:, :-1], idx[:, 1:]
    return model.to(device), batch


# -- one training step ----------------------------------------------------------------------------
def _context(model, bits, account: bool):
    if bits:
        return compress(model, bits=bits)
    # The baseline's bytes on the CPU: a keep-everything context counts what autograd holds.
    return compress(model, policy="L0") if account else _Null()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def step(model, opt, x, y, bits, device, probe: Optional[dict] = None) -> None:
    base = 0
    if probe is not None and device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    account = probe is not None and device == "cpu"
    with torch.autocast(device, dtype=torch.bfloat16), _context(model, bits, account) as report:
        out = model(x)
    loss = F.cross_entropy(out.float().reshape(-1, out.shape[-1]), y.reshape(-1))
    if probe is not None:
        if device == "cuda":
            probe["peak_bytes"] = torch.cuda.max_memory_allocated() - base
            probe["held_bytes"] = torch.cuda.memory_allocated() - base
        if report is not None:
            probe["report"] = report.to_dict()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _median_ms(fn: Callable[[], None], device: str, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _fits(name: str, bits, n: int, device: str) -> bool:
    model = opt = None
    try:
        model, batch = build(name, device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        step(model, opt, *batch(n), bits, device)
        step(model, opt, *batch(n), bits, device)
        torch.cuda.synchronize()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        model = opt = None
        torch.cuda.empty_cache()


def largest_batch(name: str, bits, budget_gib: float, device: str, start: int) -> int:
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gib * 2**30 / total))
    try:
        lo, hi = 0, start
        while _fits(name, bits, hi, device):
            lo, hi = hi, hi * 2
        while hi - lo > max(1, lo // 16):  # within ~6 %
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _fits(name, bits, mid, device) else (lo, mid)
        return lo
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def measure_config(name: str, bits, n: int, device: str, reps: int) -> dict:
    """Memory of one forward and the median step time of ``name`` at batch ``n``."""
    torch.manual_seed(0)
    model, batch = build(name, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = batch(n)
    probe: Dict[str, object] = {}
    step(model, opt, x, y, bits, device)  # warm-up: kernels compile, allocator fills
    step(model, opt, x, y, bits, device, probe)
    ms = _median_ms(lambda: step(model, opt, x, y, bits, device), device, reps)
    row = {"model": name, "batch": n, "step_ms": ms, **probe}
    if device == "cpu":
        row["held_bytes"] = (probe.get("report") or {}).get("held_bytes")
    return row


def model_rows(device: str, reps: int, budget_gib: Optional[float]) -> List[dict]:
    rows = []
    for name in ("resnet50", "gpt2"):
        n = SIZES[device]["batch"][name]
        for config, bits in CONFIGS.items():
            row = dict(measure_config(name, bits, n, device, reps), config=config)
            if device == "cuda":
                torch.cuda.empty_cache()
                if budget_gib:
                    row["max_batch"] = largest_batch(name, bits, budget_gib, device, n)
            rows.append(row)
            print(f"  {name} {config}: {row['step_ms']:.1f} ms", file=sys.stderr, flush=True)
    return rows


# -- pack / unpack bandwidth ----------------------------------------------------------------------
def pack_rows(device: str, numel: int, reps: int) -> List[dict]:
    x = torch.randn(numel, device=device).bfloat16()
    y = torch.empty_like(x)
    limit = (lambda: x.clone()) if device == "cuda" else (lambda: y.copy_(x))
    rows = [{"what": "clone" if device == "cuda" else "copy_", "bits": None,
             "bytes": 4 * numel, "ms": _median_ms(limit, device, reps)}]
    backend = "triton" if device == "cuda" else "cpu"
    for bits in (2, 4, 8):
        p = pack_groups(x, bits=bits, seed=1, backend=backend)
        packed = group_nbytes(numel, bits, 256)
        for what, fn in (("pack", lambda: pack_groups(x, bits=bits, seed=1, backend=backend)),
                         ("unpack", lambda: unpack_groups(p, backend=backend))):
            rows.append({"what": what, "bits": bits, "bytes": 2 * numel + packed,
                         "ms": _median_ms(fn, device, reps)})
    for r in rows:
        r["GB/s"] = r["bytes"] / r["ms"] / 1e6
        r["of_limit"] = r["GB/s"] / rows[0]["GB/s"]
    return rows


# -- report ---------------------------------------------------------------------------------------
def table(result: dict) -> str:
    lines = [f"{'model':<9} {'config':<5} {'batch':>5} {'step ms':>9} {'overhead':>8} "
             f"{'peak MiB':>9} {'held MiB':>9} {'vs bf16':>7} {'max batch':>9}"]
    base = {r["model"]: r for r in result["models"] if r["config"] == "bf16"}
    for r in result["models"]:
        b = base[r["model"]]
        held = r.get("held_bytes")
        ratio = held / b["held_bytes"] if held and b.get("held_bytes") else math.nan
        peak = r.get("peak_bytes")
        lines.append(
            f"{r['model']:<9} {r['config']:<5} {r['batch']:>5} {r['step_ms']:>9.1f} "
            f"{r['step_ms'] / b['step_ms'] - 1:>+8.1%} "
            f"{peak / 2**20 if peak else math.nan:>9.1f} "
            f"{held / 2**20 if held else math.nan:>9.1f} {ratio:>7.3f} "
            f"{r.get('max_batch', '-'):>9}")
    lines.append("")
    lines.append(f"{'kernel':<8} {'bits':>4} {'ms':>9} {'GB/s':>9} {'of limit':>8}")
    for r in result["pack"]:
        lines.append(f"{r['what']:<8} {r['bits'] or '-':>4} {r['ms']:>9.3f} {r['GB/s']:>9.2f} "
                     f"{r['of_limit']:>8.1%}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--budget-gib", type=float, default=16.0,
                        help="memory budget of the largest-batch search (CUDA; 0: skip)")
    parser.add_argument("--json", default=os.path.join(RESULTS, "act_memory_{device}.json"))
    args = parser.parse_args(argv)
    device = args.device
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
              or platform.machine(), "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "lowbit": lowbit.__version__,
              "command": " ".join(sys.argv), "sizes": SIZES[device]}
    result["pack"] = pack_rows(device, SIZES[device]["numel"], args.reps)
    result["models"] = model_rows(device, args.reps, args.budget_gib or None)
    print(table(result))
    path = args.json.replace("{device}", device)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
