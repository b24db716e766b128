"""Bandwidth of lowbit's rounding and storage against the same-run limit and the peers, per device.

Units (DESIGN.md, "Performance contract"): GB/s counts bytes read plus bytes written: 8 per fp32
element for fp32 -> fp32 rounding, 12 where a global amax must be read before any element can
be rounded (NVFP4's tensor scale, whole-tensor blocks such as bfp8); ``encode`` counts the fp32
read (twice with a global amax) plus the packed bytes written, ``decode`` the packed bytes read
plus the fp32 written.  Limits measured in the same run: on the CPU ``copy_`` into a
preallocated tensor (the % column) and ``clone``; on CUDA ``clone`` and the three-transfer
roofline (1.5 x clone's time), the limit of the global-amax formats.

Rows per device: the limits; ``lowbit.quantize`` out of place and with ``out=``, for every
format x rounding mode; QPyTorch's counterpart quantizers, timed when ``qtorch`` imports (its
first import builds it), else the ratio quotes DESIGN.md's anchors, labelled so; torch's own
cast round trips; ``lowbit.encode`` and ``lowbit.decode``.  Each row shows its target where the
contract sets one.  Also each kernel family's first call in a fresh process, with an empty and
with a warm compile cache (numba on the CPU, Triton on CUDA), and on CUDA with ``--sweep`` a
few launch configurations.

    lowbit bench                                        # every device here
    lowbit bench --device cpu --numel 16777216
    lowbit bench --device cuda --sweep --json q.json
    PYTHONPATH=src python benchmarks/quantize_bandwidth.py   # the same, results in benchmarks/

Prints a table and writes JSON (``lowbit bench``: default ``runs/bench/quantize_<device>.json``;
``benchmarks/quantize_bandwidth.py``: ``benchmarks/results/quantize_<device>.json``).  CPU
times are wall-clock medians (the CPU code is synchronous); CUDA times are device-event medians
from ``triton.testing.do_bench``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, List, Optional

import torch

import lowbit

from ..formats import Rounding, get
from . import _contract as contract
from ._contract import evaluate, global_amax
from ._first_calls import first_call_seconds

__all__ = ["FORMATS", "CODEC_FORMATS", "MODES", "NUMEL", "ROW", "Case", "contract", "evaluate",
           "lowbit_cases", "qpytorch_cases", "torch_cases", "codec_cases", "cpu_timer",
           "cuda_timer", "measure", "bench", "table", "add_arguments", "run", "main"]

FORMATS = {"cpu": ["e4m3fn", "bf16", "fixed<8,4>", "mxfp8_e4m3", "mxfp4", "bfp8"],
           "cuda": ["e4m3fn", "e5m2", "bf16", "fixed<8,4>", "mxfp8_e4m3", "mxfp4", "bfp8",
                    "nvfp4"]}
CODEC_FORMATS = {"cpu": ["e4m3fn", "mxfp4"], "cuda": ["e4m3fn", "mxfp4", "nvfp4"]}
MODES = [m.value for m in (Rounding.NEAREST, Rounding.TOWARD_ZERO, Rounding.STOCHASTIC)]
NUMEL = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}
ROW = 1024  # x is (numel / 1024, 1024): MX blocks of 32 along rows, QPyTorch dim=0 per row
SEED = 0x9E37_79B9_7F4A_7C15
_BACKEND = {"cpu": "cpu", "cuda": "triton"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed call and the bytes it moves."""

    what: str
    fmt: str
    rounding: str
    fn: Callable[[], object]
    nbytes: int
    group: str  # limit, quantize, quantize_out, qpytorch, torch, encode, decode
    expr: str = ""


def _stream_bytes(fmt, numel: int) -> int:
    return (12 if global_amax(fmt) else 8) * numel


# -- the cases ----------------------------------------------------------------------------------
def lowbit_cases(x: torch.Tensor, y: torch.Tensor, formats: List[str], modes: List[str],
                 backend: str) -> List[Case]:
    cases = []
    for name in formats:
        fmt = get(name)
        for mode in modes:
            seed = SEED if mode == Rounding.STOCHASTIC else None
            kw = dict(rounding=mode, seed=seed, backend=backend)
            nbytes = _stream_bytes(fmt, x.numel())
            cases.append(Case("lowbit.quantize", name, mode,
                              lambda f=fmt, k=kw: lowbit.quantize(x, f, **k), nbytes, "quantize"))
            cases.append(Case("lowbit.quantize(out=)", name, mode,
                              lambda f=fmt, k=kw: lowbit.quantize(x, f, out=y, **k), nbytes,
                              "quantize_out"))
    return cases


def qpytorch_cases(q, x: torch.Tensor, formats: List[str], modes: List[str]) -> List[Case]:
    """One row per distinct QPyTorch call and QPyTorch rounding the lowbit rows need."""
    cases, seen = [], set()
    for name in formats:
        fmt = get(name)
        call = contract.qpytorch_call(fmt)
        for mode in modes:
            if call is None:
                continue
            qmode = contract.qpytorch_mode(Rounding(mode))
            if (call.label, qmode) not in seen:
                seen.add((call.label, qmode))
                cases.append(Case("QPyTorch", name, qmode,
                                  lambda c=call, r=qmode: c.call(q, x, r),
                                  _stream_bytes(fmt, x.numel()), "qpytorch", call.label))
    return cases


def torch_cases(x: torch.Tensor) -> List[Case]:
    return [Case("torch cast round trip", fmt, "nearest", lambda f=fn: f(x), 8 * x.numel(),
                 "torch", expr) for fmt, expr, fn in contract.torch_casts()]


def codec_cases(x: torch.Tensor, formats: List[str]) -> List[Case]:
    cases = []
    for name in formats:
        fmt = get(name)
        packed = lowbit.encode(x, fmt)
        read = (8 if global_amax(fmt) else 4) * x.numel()
        cases.append(Case("lowbit.encode", name, "nearest", lambda f=fmt: lowbit.encode(x, f),
                          read + packed.nbytes, "encode"))
        cases.append(Case("lowbit.decode", name, "-", lambda p=packed: lowbit.decode(p),
                          packed.nbytes + 4 * x.numel(), "decode"))
    return cases


# -- timing -------------------------------------------------------------------------------------
def cpu_timer(reps: int) -> Callable[[Callable[[], object]], float]:
    def median_seconds(fn: Callable[[], object]) -> float:
        fn()  # warm-up: compilation, and page faults of a reused buffer
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return median_seconds


def cuda_timer(rep_ms: int) -> Callable[[Callable[[], object]], float]:
    from triton.testing import do_bench

    def median_seconds(fn: Callable[[], object]) -> float:
        fn()  # compile before do_bench estimates the repetitions
        return float(do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")) / 1e3

    return median_seconds


def measure(cases: List[Case], timer, peer_timer=None) -> List[dict]:
    rows = []
    for case in cases:
        seconds = (peer_timer if case.group == "qpytorch" and peer_timer else timer)(case.fn)
        rows.append({"what": case.what, "format": case.fmt, "rounding": case.rounding,
                     "group": case.group, "expr": case.expr, "bytes": case.nbytes,
                     "seconds": seconds, "ms": seconds * 1e3,
                     "GB/s": case.nbytes / seconds / 1e9})
        print(f"  {case.what} {case.fmt} {case.rounding}: {seconds * 1e3:.3f} ms",
              file=sys.stderr, flush=True)
    return rows


def limit_cases(device: str, x: torch.Tensor) -> List[Case]:
    y = torch.empty_like(x)
    n = x.numel()
    cases = [Case("clone (limit)", "-", "-", lambda: x.clone(), 8 * n, "limit")]
    if device == "cpu":
        cases.insert(0, Case("copy_ (limit)", "-", "-", lambda: y.copy_(x), 8 * n, "limit"))
    return cases


def limit_rows(cases: List[Case], first: List[dict], timer, device: str) -> List[dict]:
    """The limits, timed again at the end of the run: each keeps its faster time (on a shared
    machine the other load varies over a run), and both times are kept."""
    rows = []
    for before, after in zip(first, measure(cases, timer)):
        best = min(before, after, key=lambda r: r["seconds"])
        rows.append(dict(best, seconds_start_end=[before["seconds"], after["seconds"]]))
    if device == "cuda":
        clone = rows[-1]
        rows.append(dict(clone, what="roofline, 3 transfers (limit)", bytes=clone["bytes"] * 3 // 2,
                         seconds=1.5 * clone["seconds"], ms=1.5 * clone["ms"]))
    return rows


# -- one device -----------------------------------------------------------------------------------
def _describe(device: str) -> dict:
    if device == "cuda":
        import triton

        from lowbit.kernels.triton import _launch

        return {"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                "launch": {"BLOCK": _launch.BLOCK, "NUM_WARPS": _launch.NUM_WARPS}}
    import numba

    return {"device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": {"numba": numba.get_num_threads(), "torch": torch.get_num_threads()},
            "numba": numba.__version__}


def run_sweep(x: torch.Tensor, timer) -> List[dict]:
    """e4m3fn and mxfp4 under a few launch configurations of the Triton kernels."""
    from lowbit.kernels.triton import _launch

    rows = []
    saved = (_launch.BLOCK, _launch.NUM_WARPS)
    try:
        for block, warps in [(1024, 4), (2048, 4), (2048, 8), (4096, 4), (4096, 8)]:
            _launch.BLOCK, _launch.NUM_WARPS = block, warps
            cases = [c for c in lowbit_cases(x, x, ["e4m3fn", "mxfp4"],
                                             ["nearest", "stochastic"], "triton")
                     if c.group == "quantize"]
            rows += [dict(r, block=block, num_warps=warps) for r in measure(cases, timer)]
    finally:
        _launch.BLOCK, _launch.NUM_WARPS = saved
    return rows


def bench(device: str, *, numel: Optional[int] = None, reps: int = 15,
          formats: Optional[List[str]] = None, modes: Optional[List[str]] = None,
          codec_formats: Optional[List[str]] = None, qpytorch: bool = True,
          first_calls: bool = True, sweep: bool = False) -> dict:
    """Measure ``device`` (``cpu`` or ``cuda``); return the result that ``main`` prints and
    writes.  ``reps``: timed repetitions per CPU row (QPyTorch's slow CPU rows get a third);
    ignored on CUDA, where ``do_bench`` repeats for 200 ms."""
    numel = NUMEL[device] if numel is None else numel
    if numel <= 0 or numel % ROW:
        raise ValueError(f"numel must be a positive multiple of {ROW}; got {numel}")
    formats = FORMATS[device] if formats is None else formats
    modes = MODES if modes is None else modes
    codec_formats = CODEC_FORMATS[device] if codec_formats is None else codec_formats
    load_before = os.getloadavg()
    torch.manual_seed(0)
    x = (torch.randn(numel, device=device) * 4).view(-1, ROW)
    y = torch.empty_like(x)
    timer = cpu_timer(reps) if device == "cpu" else cuda_timer(200)
    peer_timer = cpu_timer(max(1, reps // 3)) if device == "cpu" else None
    q, why = contract.load_qpytorch() if qpytorch else (None, "not asked for (--no-qpytorch)")
    limits = limit_cases(device, x)
    first = measure(limits, timer)
    rows = measure(lowbit_cases(x, y, formats, modes, _BACKEND[device]), timer)
    if q is not None:
        rows += measure(qpytorch_cases(q, x, formats, modes), timer, peer_timer)
    rows += measure(torch_cases(x), timer)
    rows += measure(codec_cases(x, codec_formats), timer)
    rows = limit_rows(limits, first, timer, device) + rows
    evaluate(device, rows, numel)
    notes = list(contract.NOTES) + [
        "lowbit.quantize(out=) hands out to the kernel where the backend's kernel writes into "
        "one (the CPU kernels), else it rounds into a new tensor and copies."]
    if device == "cpu":
        notes.append("% of limit: copy_ into a preallocated tensor; clone is bound by the "
                     "page faults of its fresh allocation.")
    else:
        notes.append("Global-amax formats (NVFP4's tensor scale, whole-tensor blocks) count 12 "
                     "bytes per element; their limit is the three-transfer roofline, 1.5x "
                     "clone's time, the same GB/s as clone.")
    result = dict(_describe(device), rows=rows, notes=notes, numel=numel,
                  qpytorch={"measured": q is not None, "why_not": why,
                            "anchors": None if q is not None else contract.ANCHOR_LABEL})
    if sweep and device == "cuda":
        result["sweep"] = run_sweep(x, timer)
        evaluate(device, result["sweep"] + [r for r in rows if r["group"] == "limit"], numel)
    if first_calls:
        result["first_call_seconds"] = first_call_seconds(device)
    # The machine may be shared: the load average says how much else ran meanwhile.
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


# -- output ---------------------------------------------------------------------------------------
def _cell(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def table(device: str, result: dict) -> str:
    lines = [f"\n{device}: {result['device']}, {result['numel']} fp32 elements"
             f"{'  threads ' + str(result['threads']) if 'threads' in result else ''}",
             f"{'what':30s} {'format':11s} {'rounding':11s} {'ms':>9s} {'GB/s':>9s} "
             f"{'% of limit':>15s} {'target':>18s} {'met':>4s} {'xQPyTorch':>9s}"]
    for r in result["rows"]:
        met = {None: "", True: "yes", False: "NO"}[r["met"]]
        lines.append(
            f"{r['what']:30s} {r['format']:11s} {r['rounding']:11s} {r['ms']:9.3f} "
            f"{r['GB/s']:9.2f} {r['pct_of_limit']:6.1f} {r['limit']:<8s} "
            f"{r['target'] or '':>18s} {met:>4s} {_cell(r['qpytorch_x'], '9.1f'):>9s}")
    refs = sorted({r["qpytorch_ref"].split(" (vs")[0] for r in result["rows"]
                   if r["qpytorch_ref"]})
    qp = result["qpytorch"]
    lines.append("QPyTorch: " + ("timed in this run" if qp["measured"] else
                                 f"not timed ({qp['why_not']}); ratios quote {qp['anchors']}"))
    lines += [f"  xQPyTorch against {ref}" for ref in refs]
    lines += [f"note: {n}" for n in result["notes"]]
    for label, times in result.get("first_call_seconds", {}).items():
        lines.append(f"first call in a fresh process, {label} compile cache: " +
                     ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    for r in result.get("sweep", []):
        lines.append(f"sweep BLOCK={r['block']} NUM_WARPS={r['num_warps']}: {r['format']} "
                     f"{r['rounding']} {r['ms']:.3f} ms {r['GB/s']:.0f} GB/s "
                     f"{r['pct_of_limit']:.1f}%")
    lines.append(f"load average before/after: {result['load_average']['before']} / "
                 f"{result['load_average']['after']}")
    return "\n".join(lines)


#: Where ``lowbit bench`` writes its JSON by default.
DEFAULT_JSON = os.path.join("runs", "bench", "quantize_{device}.json")


def add_arguments(parser: argparse.ArgumentParser, default_json: str = DEFAULT_JSON) -> None:
    """The benchmark's options (``lowbit bench`` and ``benchmarks/quantize_bandwidth.py``)."""
    parser.add_argument("--device", action="append", choices=sorted(NUMEL),
                        help="device to measure (repeatable; default: every available one)")
    parser.add_argument("--numel", type=int, help=f"elements (default {NUMEL})")
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions (CPU)")
    parser.add_argument("--formats", nargs="+", help=f"default {FORMATS}")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="default: all")
    parser.add_argument("--codec-formats", nargs="*", help=f"default {CODEC_FORMATS}")
    parser.add_argument("--no-qpytorch", action="store_true", help="quote anchors instead")
    parser.add_argument("--no-first-calls", action="store_true",
                        help="skip the fresh-process first-call measurements")
    parser.add_argument("--sweep", action="store_true", help="CUDA: launch configurations")
    parser.add_argument("--json", default=default_json,
                        help="output path; '{device}' is replaced by the device "
                        f"(default {default_json})")


def run(args: argparse.Namespace) -> List[str]:
    """Measure, print and write what ``args`` asks for; return the JSON paths written.

    Raises:
        ValueError: a CUDA device without a GPU, several devices into one JSON path, or a
            ``--numel`` that is not a positive multiple of 1024.
    """
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA GPU")
    if len(devices) > 1 and "{device}" not in args.json:
        raise ValueError("--json needs '{device}' in it when several devices are measured")
    paths = []
    for device in devices:
        result = bench(device, numel=args.numel, reps=args.reps, formats=args.formats,
                       modes=args.modes, codec_formats=args.codec_formats,
                       qpytorch=not args.no_qpytorch, first_calls=not args.no_first_calls,
                       sweep=args.sweep)
        result.update({
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "reps": args.reps,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "lowbit": lowbit.__version__},
        })
        print(table(device, result))
        path = args.json.replace("{device}", device)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}")
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None, default_json: str = DEFAULT_JSON) -> None:
    """The benchmark as a script: parse ``argv``, then ``run``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, default_json)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
