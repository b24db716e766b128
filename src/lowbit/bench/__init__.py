"""Benchmarks that ship with lowbit, so that ``lowbit bench`` works where lowbit is installed.

* ``lowbit.bench.quantize``: the bandwidth of ``lowbit.quantize`` / ``encode`` / ``decode``
  against the same-run copy limit and the peers (QPyTorch, torch's casts), with DESIGN.md's
  performance contract (``lowbit.bench._contract``); ``benchmarks/quantize_bandwidth.py`` in
  the repository is the same benchmark writing into ``benchmarks/results/``.

Importing this package imports nothing heavy; the benchmark module loads on use.
"""

__all__: list = []
