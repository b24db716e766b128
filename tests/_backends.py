"""Which lowbit backends can round a format family on the CPU, for tests that check every
backend against the same oracle.  The reference backend is always there; ``cpu`` is listed
when its kernels are registered for the family (importing it needs numba: a missing numba is
an error, not a silently shorter list)."""

from __future__ import annotations

from typing import List

import torch

import lowbit
from lowbit.kernels.dispatch import Backend, kernel_for


def available_backends(family: type) -> List[str]:
    out = ["reference"]
    try:
        kernel_for(Backend.CPU, family, torch.device("cpu"))
    except ValueError:  # no CPU kernel for this family in this installation
        pass
    else:
        out.append("cpu")
    return out


def quantize_all(x: torch.Tensor, fmt, backends: List[str], **kwargs) -> dict:
    """``lowbit.quantize`` of ``x`` on every backend: {backend: result}."""
    return {b: lowbit.quantize(x, fmt, backend=b, **kwargs) for b in backends}
