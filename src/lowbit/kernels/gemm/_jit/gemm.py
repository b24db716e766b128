"""The GEMM kernels.

* ``_seq_kernel`` (CUDA cores): a program owns a ``BM × BN`` tile of outputs of one batch and
  walks k = 0..K-1 in order, loading column k of A (A is passed transposed, (B, K, M), so the
  column is contiguous) and row k of B, and performs the plan's rounded operations on the tile
  in registers (sequential, chunked or Kahan: ``KIND``).
* ``_dot_kernel`` (tensor cores): ``chunk_acc="fp32"``; each chunk's sum is ``tl.dot`` blocks
  of ``BK`` (which divides the chunk) accumulated in fp32, then added to the running total with
  one rounding onto ``acc``.

The stochastic words follow ``_plan``: step ``t = ((b·M + i)·N + j)·K + k``, Philox counter
``2t`` for slots 0..3 and ``2t + 1`` for slots 4..7.  Loops are ``while`` loops under the
interpreter (which cannot take a runtime bound in ``range``) and ``for`` loops when compiled
(the dot kernel's loads are then software-pipelined).
"""

import triton
import triton.language as tl

from ._core import _philox
from .rounding import _PRESENT, _negate, _qfma

_SEQUENTIAL = tl.constexpr(0)
_CHUNKED = tl.constexpr(1)
_KAHAN = tl.constexpr(2)


@triton.jit
def _params(par_ptr, ROLE: tl.constexpr):
    """The eight format scalars of operation ``ROLE`` (0 mul, 1 acc, 2 chunk)."""
    p = par_ptr + ROLE * 8
    return (tl.load(p), tl.load(p + 1), tl.load(p + 2), tl.load(p + 3), tl.load(p + 4),
            tl.load(p + 5), tl.load(p + 6), tl.load(p + 7))


@triton.jit
def _tile(M, N, BM: tl.constexpr, BN: tl.constexpr):
    pid = tl.program_id(0)
    tiles_n = (N + BN - 1) // BN  # tl.cdiv is a jitted library function (see _jit)
    rows = (pid // tiles_n) * BM + tl.arange(0, BM)
    cols = (pid % tiles_n) * BN + tl.arange(0, BN)
    return rows, cols


@triton.jit
def _seq_step(k, a, b, s, c, base, kdim, chunk, k0, k1, par_ptr, MUL: tl.constexpr,
              ACC: tl.constexpr, CHK: tl.constexpr, KIND: tl.constexpr, RANDOM: tl.constexpr,
              ASM: tl.constexpr, NAN_FREE: tl.constexpr):
    """One step k on the tile: returns the new (s, c)."""
    m0, m1, m2, m3, m4, m5, m6, m7 = _params(par_ptr, 0)
    a0, a1, a2, a3, a4, a5, a6, a7 = _params(par_ptr, 1)
    one = tl.full(s.shape, 1.0, tl.float32)
    if RANDOM:
        w0, w1, w2, w3 = _philox(2 * (base + k), k0, k1)
    else:
        w0, w1, w2, w3 = 0, 0, 0, 0
    if (_PRESENT & MUL) != 0:
        p = _qfma(a, b, tl.full(s.shape, -0.0, tl.float32), w0, m0, m1, m2, m3, m4, m5, m6, m7,
                  MUL, ASM, False)
        a = p
        b = one
    if KIND == _KAHAN:
        if RANDOM:
            w4, w5, w6, w7 = _philox(2 * (base + k) + 1, k0, k1)
        else:
            w4, w5 = 0, 0
        y = _qfma(a, b, _negate(c), w3, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, False)
        t = _qfma(s, one, y, w1, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, False)
        z = _qfma(t, one, _negate(s), w4, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, False)
        c = _qfma(z, one, _negate(y), w5, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, False)
        s = t
    elif KIND == _CHUNKED:
        c0, c1, c2, c3, c4, c5, c6, c7 = _params(par_ptr, 2)
        c = _qfma(a, b, c, w1, c0, c1, c2, c3, c4, c5, c6, c7, CHK, ASM, False)
        if ((k + 1) % chunk == 0) | (k == kdim - 1):
            s = _qfma(c, one, s, w2, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, False)
            c = tl.full(s.shape, 0.0, tl.float32)
    else:
        s = _qfma(a, b, s, w1, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, NAN_FREE)
    return s, c


@triton.jit(do_not_specialize=["chunk", "seed_lo", "seed_hi"])
def _seq_kernel(
    at_ptr, b_ptr, out_ptr,  # A^T (B, K, M), B (B, K, N), out (B, M, N): contiguous fp32
    par_ptr,  # int32 (3, 8): format scalars of mul, acc, chunk_acc
    M, N, K, chunk,  # sizes; chunk length (KIND == CHUNKED)
    seed_lo: tl.uint32, seed_hi: tl.uint32,  # Philox key
    MUL: tl.constexpr, ACC: tl.constexpr, CHK: tl.constexpr,  # operation flags (_flags)
    KIND: tl.constexpr,  # sequential, chunked, Kahan
    RANDOM: tl.constexpr,  # some operation rounds stochastically
    ASM: tl.constexpr,  # compiled for a GPU: directed-rounding FMAs by inline PTX
    NAN_FREE: tl.constexpr,  # finite inputs, exact products, sequential: no NaN can arise
    INTERPRET: tl.constexpr,  # running in Triton's interpreter
    BM: tl.constexpr, BN: tl.constexpr,  # output tile
):
    batch = tl.program_id(1).to(tl.int64)
    rows, cols = _tile(M, N, BM, BN)
    rmask = rows < M
    cmask = cols < N
    a_ptrs = at_ptr + batch * K * M + rows
    b_ptrs = b_ptr + batch * K * N + cols
    base = ((batch * M + rows[:, None]) * N + cols[None, :]) * K
    s = tl.full((BM, BN), 0.0, tl.float32)
    c = tl.full((BM, BN), 0.0, tl.float32)
    k0 = seed_lo.to(tl.uint32)
    k1 = seed_hi.to(tl.uint32)
    if INTERPRET:
        k = 0
        while k < K:
            a = tl.broadcast_to(tl.load(a_ptrs + k * M, mask=rmask, other=0.0)[:, None], (BM, BN))
            b = tl.broadcast_to(tl.load(b_ptrs + k * N, mask=cmask, other=0.0)[None, :], (BM, BN))
            s, c = _seq_step(k, a, b, s, c, base, K, chunk, k0, k1, par_ptr, MUL, ACC, CHK, KIND,
                             RANDOM, ASM, NAN_FREE)
            k += 1
    else:
        for k in range(0, K):
            a = tl.broadcast_to(tl.load(a_ptrs, mask=rmask, other=0.0)[:, None], (BM, BN))
            b = tl.broadcast_to(tl.load(b_ptrs, mask=cmask, other=0.0)[None, :], (BM, BN))
            a_ptrs += M
            b_ptrs += N
            s, c = _seq_step(k, a, b, s, c, base, K, chunk, k0, k1, par_ptr, MUL, ACC, CHK, KIND,
                             RANDOM, ASM, NAN_FREE)
    out = out_ptr + (batch * M + rows[:, None]) * N + cols[None, :]
    tl.store(out, s, mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _dot_step(kb, a_ptrs, b_ptrs, rows, cols, s, cs, base, M, N, K, chunk, k0, k1, par_ptr,
              ACC: tl.constexpr, RANDOM: tl.constexpr, ASM: tl.constexpr, NAN_FREE: tl.constexpr,
              IEEE: tl.constexpr, BK: tl.constexpr):
    ks = kb + tl.arange(0, BK)
    a = tl.load(a_ptrs + kb, mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
    b = tl.load(b_ptrs + kb * N, mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
    if IEEE:
        cs = tl.dot(a, b, cs, input_precision="ieee")
    else:
        cs = tl.dot(a, b, cs)
    end = tl.minimum(kb + BK, K)
    if (end % chunk == 0) | (end == K):
        a0, a1, a2, a3, a4, a5, a6, a7 = _params(par_ptr, 1)
        if RANDOM:
            _w0, _w1, w2, _w3 = _philox(2 * (base + end - 1), k0, k1)
        else:
            w2 = 0
        one = tl.full(s.shape, 1.0, tl.float32)
        s = _qfma(cs, one, s, w2, a0, a1, a2, a3, a4, a5, a6, a7, ACC, ASM, NAN_FREE)
        cs = tl.full(s.shape, 0.0, tl.float32)
    return s, cs


@triton.jit(do_not_specialize=["chunk", "seed_lo", "seed_hi"])
def _dot_kernel(
    a_ptr, b_ptr, out_ptr,  # A (B, M, K), B (B, K, N): bf16, fp16 or fp32; out (B, M, N) fp32
    par_ptr,  # int32 (3, 8) format scalars (row 1: acc)
    M, N, K, chunk,  # sizes; chunk length, a multiple of BK
    seed_lo: tl.uint32, seed_hi: tl.uint32,  # Philox key
    ACC: tl.constexpr, RANDOM: tl.constexpr, ASM: tl.constexpr,
    NAN_FREE: tl.constexpr,  # every chunk sum is finite: no NaN can arise
    IEEE: tl.constexpr,  # fp32 operands: IEEE fp32 products and sums, no TF32
    INTERPRET: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    batch = tl.program_id(1).to(tl.int64)
    rows, cols = _tile(M, N, BM, BN)
    a_ptrs = a_ptr + batch * M * K + rows[:, None] * K + tl.arange(0, BK)[None, :]
    b_ptrs = b_ptr + batch * K * N + tl.arange(0, BK)[:, None] * N + cols[None, :]
    base = ((batch * M + rows[:, None]) * N + cols[None, :]) * K
    s = tl.full((BM, BN), 0.0, tl.float32)
    cs = tl.full((BM, BN), 0.0, tl.float32)
    k0 = seed_lo.to(tl.uint32)
    k1 = seed_hi.to(tl.uint32)
    if INTERPRET:
        kb = 0
        while kb < K:
            s, cs = _dot_step(kb, a_ptrs, b_ptrs, rows, cols, s, cs, base, M, N, K, chunk, k0, k1,
                              par_ptr, ACC, RANDOM, ASM, NAN_FREE, IEEE, BK)
            kb += BK
    else:
        for kb in range(0, K, BK):
            s, cs = _dot_step(kb, a_ptrs, b_ptrs, rows, cols, s, cs, base, M, N, K, chunk, k0, k1,
                              par_ptr, ACC, RANDOM, ASM, NAN_FREE, IEEE, BK)
    out = out_ptr + (batch * M + rows[:, None]) * N + cols[None, :]
    tl.store(out, s, mask=(rows[:, None] < M) & (cols[None, :] < N))
