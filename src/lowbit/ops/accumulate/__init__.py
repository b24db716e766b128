"""Simulated accumulation precision: matmul/conv with low-precision multiply and add."""

from .spec import Accumulate

__all__ = ["Accumulate"]
