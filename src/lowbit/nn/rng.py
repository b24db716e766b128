"""Seeds of stochastic rounding in training, derived from (global seed, module, role, GEMM,
step) so that no element sees the same noise twice and a resumed run draws the same noise.

``seed = mix(mix(mix(global_seed) ^ key) + step)`` where ``key`` is the first 8 bytes
(little-endian) of BLAKE2b over ``"module\\x1frole\\x1fgemm"`` (UTF-8) and ``mix`` is
SplitMix64's finaliser (Steele, Lea and Flood, OOPSLA 2014).  The result keys the Philox
stream of ``lowbit.quantize`` (``lowbit.kernels.philox``): distinct keys give independent
streams.  Python's ``hash()`` is salted per process, so it is never used.
"""

from __future__ import annotations

import hashlib

__all__ = ["splitmix64", "stable_key", "derive_seed"]

_MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """SplitMix64: one step of the Weyl sequence followed by the finaliser (mod 2^64)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def stable_key(*parts: str) -> int:
    """A 64-bit key of ``parts`` that is the same in every process and on every platform."""
    for p in parts:
        if not isinstance(p, str):
            raise TypeError(f"key parts must be strings; got {p!r}")
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def derive_seed(global_seed: int, key: int, step: int) -> int:
    """The 64-bit Philox seed of one quantization: ``global_seed`` (the run), ``key``
    (``stable_key(module, role, gemm)``), ``step`` (the module's call counter)."""
    for name, value in (("global_seed", global_seed), ("key", key), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"{name} must be a non-negative int; got {value!r}")
    return splitmix64((splitmix64(splitmix64(global_seed & _MASK) ^ key) + step) & _MASK)
