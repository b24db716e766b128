"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    # Unseeded stochastic rounding and any torch.rand* in a test draw from torch's default
    # generator: seeding it per test makes every test reproducible on its own and under xdist.
    torch.manual_seed(0)
