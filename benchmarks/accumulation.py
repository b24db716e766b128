"""Throughput of simulated-accumulation GEMMs (``lowbit.ops.accumulate.gemm``) against fp32
``torch.matmul`` in the same run.

GPU (DESIGN.md's performance contract, H100, 2048³, TF32 off, bf16-representable inputs):

* every operation rounded, bf16 accumulation with FMA (``acc="bf16", fma=True``): target
  >= 5 TFLOP/s (mptorch: 1.19, recorded anchor);
* chunked, ``chunk_acc="fp32"`` (tensor cores), chunk >= 16, bf16 or fp16 ``acc``: target
  >= 30 TFLOP/s (fp32 cuBLAS: 50 recorded; measured here in the same run);
* for information: rounded bf16 products, IBM's e6m9 chunks, stochastic rounding, fp32.

Each GPU time is the median of ``triton.testing.do_bench`` (device events) of the public call
``gemm(a, b, spec, backend="triton")`` (its input checks and operand copies included); before
timing, each configuration is checked bit for bit against the CPU reference on a 192×160×256
problem (small integers for fp32 chunks, whose chunk sums are then exact in any order).  On a
CPU the same rows run the reference backend at small sizes, timed with ``time.perf_counter``
(median of --reps).  Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/accumulation.py --json accumulation_gpu.json
    PYTHONPATH=src python benchmarks/accumulation.py --cpu --size 128
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from lowbit.ops.accumulate import Accumulate, gemm

SEED = 0x9E3779B97F4A7C15
# (label, spec options, target TFLOP/s on the H100 or None)
ROWS = [
    ("bf16 acc, FMA, every op rounded", dict(acc="bf16", fma=True), 5.0),
    ("bf16 mul + bf16 acc, every op rounded", dict(acc="bf16", mul="bf16"), None),
    ("fp32 acc (native FMA)", dict(acc="fp32"), None),
    ("e6m9 acc, chunk 64 in e6m9 (IBM)", dict(acc="e6m9", chunk=64), None),
    ("bf16 acc, stochastic", dict(acc="bf16", fma=True, rounding="stochastic"), None),
] + [
    (f"{acc} acc, fp32 chunks of {c} (tensor cores)",
     dict(acc=acc, chunk=c, chunk_acc="fp32"), 30.0)
    for acc in ("bf16", "fp16") for c in (16, 32, 64, 128)
]


def _inputs(m: int, n: int, k: int, device: torch.device, seed: int = 0):
    """bf16-representable fp32 operands of unit scale."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g).bfloat16().float()
    b = torch.randn(k, n, generator=g).bfloat16().float()
    return a.to(device), b.to(device)


def _seed(spec: Accumulate) -> Optional[int]:
    modes = (spec.effective_acc_rounding.value, spec.effective_mul_rounding.value)
    return SEED if "stochastic" in modes else None


def verify(spec: Accumulate, device: torch.device, backend: str) -> str:
    """Check the timed backend bit for bit against the CPU reference on a small problem (for
    fp32 chunks, on small integers: every chunk sum is then exact in any order)."""
    a, b = _inputs(192, 160, 256, torch.device("cpu"), seed=1)
    if spec.fp32_chunks:
        a, b = (torch.round(x * 4).clamp(-8, 8) for x in (a, b))
    want = gemm(a, b, spec, seed=_seed(spec), backend="reference")
    got = gemm(a.to(device), b.to(device), spec, seed=_seed(spec), backend=backend).cpu()
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    return "bit-exact" if bool(same.all()) else f"MISMATCH ({int((~same).sum())})"


def time_gpu(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    fn()
    torch.cuda.synchronize()
    return float(do_bench(fn, warmup=10, rep=100, return_mode="median")) * 1e-3


def time_cpu(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(size: int, device: torch.device, reps: int, only: Optional[str]) -> List[Dict]:
    cuda = device.type == "cuda"
    backend = "triton" if cuda else "reference"
    m = n = k = size
    a, b = _inputs(m, n, k, device)
    flop = 2.0 * m * n * k
    timer = time_gpu if cuda else (lambda fn: time_cpu(fn, reps))
    rows = [dict(label="fp32 torch.matmul (TF32 off)", seconds=timer(lambda: a @ b), target=None,
                 check="-")]
    for label, options, target in ROWS:
        if only and only not in label:
            continue
        spec = Accumulate(**options)
        seed = _seed(spec)
        check = verify(spec, device, backend)
        seconds = timer(lambda: gemm(a, b, spec, seed=seed, backend=backend))
        rows.append(dict(label=label, spec=spec.to_dict(), seconds=seconds,
                         target=target if cuda else None, check=check))
    for row in rows:
        row["tflops"] = flop / row["seconds"] / 1e12
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None,
                        help="M = N = K (default 2048 on a GPU, 96 on the CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")
    parser.add_argument("--reps", type=int, default=3, help="CPU repetitions (median)")
    parser.add_argument("--only", default=None, help="run the rows whose label contains this")
    parser.add_argument("--json", default=None, help="write the results to this path")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    size = args.size or (2048 if cuda else 96)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        name = f"CPU ({cpu}, {torch.get_num_threads()} threads)"
    rows = run(size, device, args.reps, args.only)
    print(f"simulated-accumulation GEMM, {size}^3, {name}")
    print(f"{'configuration':<44} {'ms':>9} {'TFLOP/s':>9} {'target':>7}  check")
    for row in rows:
        target = "" if row["target"] is None else f">={row['target']:g}"
        print(f"{row['label']:<44} {row['seconds'] * 1e3:>9.3f} {row['tflops']:>9.3f} "
              f"{target:>7}  {row['check']}")
    if args.json:
        record = dict(
            benchmark="accumulation", device=name, size=size,
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=" ".join(["python"] + sys.argv), torch=torch.__version__,
            triton=_triton_version(), python=platform.python_version(), rows=rows,
            anchors=dict(mptorch_every_op_bf16_fma_tflops=1.19, fp32_cublas_recorded_tflops=50),
        )
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0


def _triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())
