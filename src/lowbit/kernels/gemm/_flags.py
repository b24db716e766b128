"""The compile-time description of one rounded operation of the Triton kernels: an int whose
bits say which code path rounds it (pure Python, shared by the wrapper and the device code)."""

__all__ = ["PRESENT", "FIXED", "SUBNORMALS", "SIGNED", "WIDE", "FAST", "UNIFORM", "SATURATE",
           "NATIVE", "ROUNDING_SHIFT"]

PRESENT = 1  # the operation exists (``mul`` is optional)
FIXED = 2  # a clamped FixedPoint or IntFormat (else a FloatFormat)
SUBNORMALS = 4  # FloatFormat flags, as ``_scalar.FloatFlags``
SIGNED = 8
WIDE = 16
FAST = 32  # round-to-odd in fp32 first, then the elementwise rounding (exact, see ``triton``)
UNIFORM = 64  # an fp32-exponent IEEE format: its grid is the fp32 encoding's low bits cleared
SATURATE = 128  # (UNIFORM) overflow gives ±max
NATIVE = 256  # fp32 itself, to nearest: the hardware's fused multiply-add is the rounding
ROUNDING_SHIFT = 12  # bits 12..15: ROUNDING_CODE of the mode
