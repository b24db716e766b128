"""What every ``lowbit`` command shares: the one-line user error, plain-text tables, JSON that
stays valid JSON, CPU threads, and peak-memory measurement."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from typing import Any, Iterator, List, Optional, Sequence

import torch

__all__ = ["CliError", "table", "write_json", "finite", "cpu_threads", "PeakMemory"]


class CliError(Exception):
    """A mistake of the user (unknown recipe or data, missing data directory): ``main`` prints
    it as one line on stderr and exits with status 2."""


def table(headers: Sequence[str], rows: List[Sequence[str]]) -> str:
    """Plain text: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: str, data: Any) -> str:
    """Write ``data`` (non-finite floats as null) to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(finite(data), fh, indent=1, allow_nan=False)
        fh.write("\n")
    return path


_SPIN_ENV = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


@contextlib.contextmanager
def cpu_threads(threads: Optional[int], device: str) -> Iterator[str]:
    """Set the CPU threads of torch and numba for a command; yield a one-line description.

    ``threads=None`` on the CPU means 1 unless ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is set:
    idle OpenMP threads of torch (and of numba's OpenMP layer) spin-wait between operations
    and starve the other pool, which made a small training run 3 to 20 times slower on a
    shared 2-core machine (measured: digits CNN, bf16, 8 epochs: 73 s with the defaults,
    2.5 s with one thread for torch and numba, 2.7 s with two threads and
    ``GOMP_SPINCOUNT=0``).  On CUDA, and when either variable is set, ``None`` leaves the
    threads alone.  Afterwards torch's count and, where numba was loaded before, numba's are
    restored; a numba first loaded during the command keeps a pool of ``n`` threads.
    """
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise CliError(f"--threads must be a positive integer; got {threads}")
    if threads is None and (device != "cpu" or any(os.environ.get(v) for v in _SPIN_ENV)):
        yield f"threads: torch {torch.get_num_threads()} (unchanged)"
        return
    n = 1 if threads is None else threads
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    numba = sys.modules.get("numba")
    set_env = numba is None and "NUMBA_NUM_THREADS" not in os.environ
    numba_before = None if numba is None else numba.get_num_threads()
    if set_env:
        os.environ["NUMBA_NUM_THREADS"] = str(n)  # read when numba is first imported
    elif numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield f"threads: torch {n}, numba {os.environ.get('NUMBA_NUM_THREADS', n)}"
    finally:
        torch.set_num_threads(before)
        if numba_before is not None:
            numba.set_num_threads(numba_before)
        if set_env and "numba" not in sys.modules:
            del os.environ["NUMBA_NUM_THREADS"]


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of the code run inside ``with PeakMemory(device) as mem:``, in MB
    (``mem.mb``; None where it cannot be measured) with what was measured in ``mem.what``.

    * CUDA: ``torch.cuda.max_memory_allocated`` during the block minus the memory allocated
      at its start (tensors of torch's caching allocator; the cache itself is not counted).
    * CPU (Linux): the process's peak resident set during the block (``VmHWM``, reset at the
      start through ``/proc/self/clear_refs``) minus its resident set at the start.  This
      counts everything the process touched (torch, numba, Python), and memory that an
      earlier run in the same process freed but the C allocator kept is reused without
      counting: a lower bound after the first run of a process.
    * Elsewhere: None.
    """

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.mb: Optional[float] = None
        self.what = "not measured"
        self._start: Optional[int] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.device.type == "cpu" and _status_kb("VmRSS") is not None:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # 5: reset the peak resident set to the current one
                self._start = _status_kb("VmRSS")
            except OSError:
                self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.mb = (peak - self._start) / 2**20
            self.what = "peak CUDA memory torch allocated, above the run's start"
        else:
            peak_kb = _status_kb("VmHWM")
            if peak_kb is not None:
                self.mb = max(0, peak_kb - self._start) / 1024
                self.what = ("peak growth of the process's resident set over the run's start "
                             "(a lower bound after a process's first run: memory an earlier "
                             "run freed is reused uncounted)")
