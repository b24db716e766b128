"""Dispatch: AUTO picks a backend per device, falls back to the reference when a backend's
third-party package is missing, and names the missing package when a backend is forced."""

from __future__ import annotations

import sys

import pytest
import torch

import lowbit
from lowbit.formats import FloatFormat
from lowbit.kernels import dispatch
from lowbit.kernels.dispatch import Backend, kernel_for


@pytest.fixture
def without_numba(monkeypatch):
    """A process in which ``import numba`` fails and the CPU backend was never loaded."""
    monkeypatch.setitem(sys.modules, "numba", None)  # import raises ModuleNotFoundError
    for name in [m for m in sys.modules if m.startswith("lowbit.kernels.cpu")]:
        monkeypatch.delitem(sys.modules, name)
    saved = {k: v for k, v in dispatch._REGISTRY.items() if k[0] is Backend.CPU}
    for key in saved:
        del dispatch._REGISTRY[key]
    dispatch._UNAVAILABLE.pop(Backend.CPU, None)
    yield
    dispatch._UNAVAILABLE.pop(Backend.CPU, None)
    dispatch._REGISTRY.update(saved)


def test_auto_falls_back_to_reference_without_numba(without_numba):
    fn = kernel_for(Backend.AUTO, FloatFormat, torch.device("cpu"))
    assert fn is kernel_for(Backend.REFERENCE, FloatFormat, torch.device("cpu"))
    x = torch.randn(100)
    assert torch.equal(lowbit.quantize(x, "e4m3fn"),
                       lowbit.quantize(x, "e4m3fn", backend="reference"))
    with pytest.raises(ValueError, match=r"numba is not installed.*lowbit\[cpu\]"):
        lowbit.quantize(x, "e4m3fn", backend="cpu")


def test_auto_prefers_cpu_kernel_on_cpu():
    fn = kernel_for(Backend.AUTO, FloatFormat, torch.device("cpu"))
    assert fn is kernel_for(Backend.CPU, FloatFormat, torch.device("cpu"))


def test_out_is_written_in_place_by_the_cpu_kernel():
    x = torch.randn(4097)
    out = torch.full_like(x, 7.0)
    ptr = out.data_ptr()
    y = lowbit.quantize(x, "bf16", out=out)
    assert y.data_ptr() == ptr
    assert torch.equal(out, x.to(torch.bfloat16).float())


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend"):
        lowbit.quantize(torch.ones(3), "e5m2", backend="gpu")


def test_cpu_kernels_keep_torch_thread_count():
    """numba's OpenMP layer must not change torch's intra-op thread count behind its back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lowbit.quantize(torch.randn(4096), "fixed<6,3>", backend="cpu")
        lowbit.quantize(torch.randn(64, 32), "mxfp4", backend="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
