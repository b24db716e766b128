"""The first call of every kernel family in a fresh process, with an empty compile cache
(label "empty") and with the cache that run left ("warm"): numba's on the CPU, Triton's on CUDA.

    python -m lowbit.bench._first_calls cpu     # one probe; prints a dict
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict

__all__ = ["first_call_seconds", "FAMILIES"]

#: One format per kernel family.
FAMILIES = [("float", "e4m3fn"), ("exp", "e8m0fnu"), ("fixed", "fixed<8,4>"),
            ("block", "mxfp8_e4m3"), ("block, global amax", "bfp8")]
_BACKEND = {"cpu": "cpu", "cuda": "triton"}
_CACHE_ENV = {"cpu": "NUMBA_CACHE_DIR", "cuda": "TRITON_CACHE_DIR"}


def first_call_seconds(device: str) -> Dict[str, Dict[str, float]]:
    """Seconds of each family's first call (nearest, then stochastic), with an empty and a
    warm compile cache.  The first family also pays for the runtime's start (numba's thread
    pool, CUDA's context)."""
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, **{_CACHE_ENV[device]: cache})
        for label in ("empty", "warm"):
            res = subprocess.run([sys.executable, "-m", __name__, device], env=env,
                                 capture_output=True, text=True, check=True)
            result[label] = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    return result


def _probe(device: str) -> Dict[str, float]:
    import torch

    import lowbit

    backend = _BACKEND[device]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    x = torch.randn(4, 1024, device=device)
    t0 = time.perf_counter()
    lowbit.quantize(x.cpu(), "e4m3fn", backend="reference")  # torch.library's first-call set-up
    out = {"first lowbit.quantize (reference)": time.perf_counter() - t0}
    t0 = time.perf_counter()
    importlib.import_module("lowbit.kernels." + backend)
    out["import lowbit.kernels." + backend] = time.perf_counter() - t0
    for family, fmt in FAMILIES:
        sync()
        t0 = time.perf_counter()
        lowbit.quantize(x, fmt, backend=backend)
        lowbit.quantize(x, fmt, backend=backend, rounding="stochastic", seed=1)
        sync()
        out[family] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    print(repr(_probe(sys.argv[1])))
