"""Bandwidth of lowbit's rounding and storage against the same-run limit and the peers, per device.

The benchmark lives in the package, ``lowbit.bench.quantize`` (so that ``lowbit bench`` works
wherever lowbit is installed; its docstring states the units, limits and rows); this script is
the same benchmark writing its JSON into ``benchmarks/results/``:

    PYTHONPATH=src python benchmarks/quantize_bandwidth.py                 # every device here
    PYTHONPATH=src python benchmarks/quantize_bandwidth.py --device cpu --numel 16777216
    PYTHONPATH=src python benchmarks/quantize_bandwidth.py --device cuda --sweep --json q.json
"""

from __future__ import annotations

import os
from typing import List, Optional

from lowbit.bench import _contract as contract  # noqa: F401  (the contract, as before)
from lowbit.bench.quantize import (  # noqa: F401  (this script's former contents)
    CODEC_FORMATS, FORMATS, MODES, NUMEL, ROW, Case, bench, codec_cases, cpu_timer, cuda_timer,
    evaluate, lowbit_cases, measure, qpytorch_cases, table, torch_cases)
from lowbit.bench.quantize import main as _main

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv: Optional[List[str]] = None) -> None:
    _main(argv, default_json=os.path.join(RESULTS, "quantize_{device}.json"))


if __name__ == "__main__":
    main()
