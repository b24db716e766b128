"""Shared test set-up."""

import os

import pytest
import torch


def pytest_configure(config):
    # Under pytest-xdist (`-n 2` on 2 cores) every worker is already one busy process per core.
    # torch's intra-op OpenMP pool (one thread per core) then oversubscribes the machine and
    # each small elementwise op waits on spinning barriers: measured 8 ms instead of 0.04 ms
    # for an int64 XOR of 50k elements, which made the reference kernels ~100x slower.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    # Unseeded stochastic rounding and any torch.rand* in a test draw from torch's default
    # generator: seeding it per test makes every test reproducible on its own and under xdist.
    torch.manual_seed(0)


@pytest.fixture
def no_tf32():
    """TF32 off for a GPU test (cuBLAS and cuDNN), restored afterwards: fp32 GEMMs then give
    fp32 results, as the CPU comparisons and the benchmarks' "TF32 off" assume."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
