"""Bandwidth of ``lowbit.encode`` / ``lowbit.decode`` against the same-run copy limit.

Units (DESIGN.md, "Performance contract"): GB/s counts the bytes actually moved.  ``encode``
reads the fp32 input (twice where a global amax is needed first: NVFP4's tensor scale) and
writes the packed codes, block scale codes and tensor scale (``Packed.nbytes``); ``decode``
reads those and writes the fp32 result.  Limits measured in the same run: on the CPU
``copy_`` into a preallocated tensor and ``clone`` (bound by the page faults of its fresh
allocation, as every encode/decode output is fresh); on CUDA ``clone``.

Rows: the limits; for each format, ``encode`` per rounding mode and ``decode`` through the
one-pass kernels (numba on the CPU, Triton on CUDA); with ``--general`` the same calls with
them switched off (the general path: ``quantize``, then codes from its values), so one run
gives before and after.

    PYTHONPATH=src python benchmarks/codec_bandwidth.py                       # CPU, 16M
    PYTHONPATH=src python benchmarks/codec_bandwidth.py --general --modes nearest
    PYTHONPATH=src python benchmarks/codec_bandwidth.py --device cuda         # 256M

Prints a table and writes JSON (default ``benchmarks/results/codec_<device>.json``) with the
load average before and after (the CPU machine may be shared).  CPU times are wall-clock
medians; CUDA times are device-event medians from ``triton.testing.do_bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch

import lowbit
import lowbit.ops.codec as codec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantize_bandwidth import cpu_timer, cuda_timer  # noqa: E402  (same timing rules)
from lowbit.formats import BlockFormat, get
from lowbit.ops.codec import fused

FORMATS = ["e4m3fn", "e5m2", "bf16", "e2m1fn", "e3m2fn", "int8", "int4", "fixed<8,4>",
           "mxfp8_e4m3", "mxfp4", "mxfp6_e3m2", "nvfp4"]
MODES = ["nearest", "stochastic"]
NUMEL = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}
ROW = 1024  # x is (numel / 1024, 1024): blocks along rows
SEED = 0x9E37_79B9_7F4A_7C15
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@contextlib.contextmanager
def gpu_fused() -> Iterator[None]:
    """CUDA tensors through the Triton kernels (off by default until validated on a GPU)."""
    saved = fused.GPU_DEFAULT
    fused.GPU_DEFAULT = True
    try:
        yield
    finally:
        fused.GPU_DEFAULT = saved


@contextlib.contextmanager
def general_path() -> Iterator[None]:
    """Switch the one-pass kernels off (what encode/decode did before them)."""
    saved = codec.encode_fused, codec.decode_fused
    codec.encode_fused = codec.decode_fused = lambda *a: None
    try:
        yield
    finally:
        codec.encode_fused, codec.decode_fused = saved


def read_passes(fmt) -> int:
    """fp32 reads of the input: 2 where a global amax comes first."""
    return 2 if isinstance(fmt, BlockFormat) and fmt.tensor_scale else 1


def _row(what: str, fmt: str, rounding: str, path: str, nbytes: int, seconds: float) -> dict:
    row = {"what": what, "format": fmt, "rounding": rounding, "path": path, "bytes": nbytes,
           "seconds": seconds, "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9}
    print(f"  {what} {fmt} {rounding} [{path}]: {seconds * 1e3:.2f} ms", file=sys.stderr,
          flush=True)
    return row


def codec_rows(x: torch.Tensor, name: str, modes: List[str], path: str, timer) -> List[dict]:
    fmt = get(name)
    n = x.numel()
    rows = []
    packed = None
    for mode in modes:
        kw = dict(rounding=mode, seed=SEED if mode == "stochastic" else None)
        packed = lowbit.encode(x, fmt, **kw)
        nbytes = 4 * n * read_passes(fmt) + packed.nbytes
        rows.append(_row("encode", name, mode, path, nbytes,
                         timer(lambda k=kw: lowbit.encode(x, fmt, **k))))
    rows.append(_row("decode", name, "-", path, packed.nbytes + 4 * n,
                     timer(lambda: lowbit.decode(packed))))
    return rows


def describe(device: str) -> Dict[str, object]:
    if device == "cuda":
        return {"device": torch.cuda.get_device_name()}
    import numba

    return {"device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": {"numba": numba.get_num_threads(), "torch": torch.get_num_threads()}}


def bench(device: str, numel: int, reps: int, formats: List[str], modes: List[str],
          general: bool, general_reps: int) -> dict:
    if numel <= 0 or numel % ROW:
        raise ValueError(f"numel must be a positive multiple of {ROW}; got {numel}")
    load_before = os.getloadavg()
    torch.manual_seed(0)
    x = (torch.randn(numel, device=device) * 4).view(-1, ROW)
    y = torch.empty_like(x)
    timer = cpu_timer(reps) if device == "cpu" else cuda_timer(200)
    limits = [_row("clone (limit)", "-", "-", "-", 8 * numel, timer(lambda: x.clone()))]
    if device == "cpu":
        limits.insert(0, _row("copy_ (limit)", "-", "-", "-", 8 * numel,
                              timer(lambda: y.copy_(x))))
    rows = []
    for name in formats:
        with gpu_fused():
            rows += codec_rows(x, name, modes, "fused", timer)
        if general:
            with general_path():
                rows += codec_rows(x, name, modes, "general",
                                   cpu_timer(general_reps) if device == "cpu" else timer)
    by_limit = {r["what"].split(" ")[0]: r["GB/s"] for r in limits}
    for r in limits + rows:
        r.update({f"pct_of_{k}": 100 * r["GB/s"] / v for k, v in by_limit.items()})
    return dict(describe(device), numel=numel, reps=reps, rows=limits + rows,
                load_average={"before": load_before, "after": os.getloadavg()})


def table(device: str, result: dict) -> str:
    limits = [k[len("pct_of_"):] for k in result["rows"][0] if k.startswith("pct_of_")]
    lines = [f"\n{device}: {result['device']}, {result['numel']} fp32 elements "
             f"{result.get('threads', '')}",
             f"{'what':15s} {'format':11s} {'rounding':10s} {'path':8s} {'ms':>9s} "
             f"{'GB/s':>7s} " + " ".join(f"{'% ' + k:>8s}" for k in limits) + "  speed-up"]
    fused = {(r["what"], r["format"], r["rounding"]): r for r in result["rows"]
             if r["path"] == "fused"}
    for r in result["rows"]:
        key = (r["what"], r["format"], r["rounding"])
        gain = ""
        if r["path"] == "general" and key in fused:
            gain = f"{r['seconds'] / fused[key]['seconds']:.1f}x"
        lines.append(f"{r['what']:15s} {r['format']:11s} {r['rounding']:10s} {r['path']:8s} "
                     f"{r['ms']:9.2f} {r['GB/s']:7.2f} "
                     + " ".join(f"{r['pct_of_' + k]:8.1f}" for k in limits) + f"  {gain}")
    lines.append("speed-up: the fused row's time over the general path's (general rows).")
    lines.append(f"load average before/after: {result['load_average']['before']} / "
                 f"{result['load_average']['after']}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=sorted(NUMEL), default="cpu")
    parser.add_argument("--numel", type=int, help=f"elements (default {NUMEL})")
    parser.add_argument("--reps", type=int, default=9, help="timed repetitions (CPU)")
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    parser.add_argument("--modes", nargs="+", default=MODES)
    parser.add_argument("--general", action="store_true",
                        help="also time the general path (before the one-pass kernels)")
    parser.add_argument("--general-reps", type=int, default=3)
    parser.add_argument("--json", help="output path (default results/codec_<device>.json)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    numel = args.numel or NUMEL[args.device]
    result = bench(args.device, numel, args.reps, args.formats, args.modes, args.general,
                   args.general_reps)
    result.update({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    })
    print(table(args.device, result))
    path = args.json or os.path.join(RESULTS, f"codec_{args.device}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
