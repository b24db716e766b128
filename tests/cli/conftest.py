"""Shared fixtures of the CLI tests."""

import pytest

from lowbit.recipes import _registry

from _cli_recipe import BF16, TEST_RECIPE


@pytest.fixture
def bf16_recipe(monkeypatch):
    """A second recipe beside fp32 (bf16 GEMM operands), registered for one test only."""
    monkeypatch.setitem(_registry._REGISTRY, TEST_RECIPE, BF16)
    return BF16
