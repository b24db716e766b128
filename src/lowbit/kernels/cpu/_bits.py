"""32-bit integer and bit-cast primitives for numba kernels.

numba widens every integer operation to 64 bits, which halves the SIMD width of a loop (and
AVX2 has no 64-bit arithmetic right shift or compare-unsigned).  These intrinsics emit the
plain 32-bit LLVM instruction instead: two's-complement wrap-around, no overflow checks.  Shift
counts must be in [0, 31] (LLVM gives poison otherwise).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["f32_from_bits", "bits_from_f32", "add", "sub", "mul", "mulhi", "band", "bor", "bxor",
           "shl", "shr", "sar", "i32"]

_I32 = ir.IntType(32)


def _as_i32(builder, value, ty):
    width = ty.bitwidth
    if width > 32:
        return builder.trunc(value, _I32)
    if width < 32:
        return (builder.sext if ty.signed else builder.zext)(value, _I32)
    return value


def _integer(*tys):
    return all(isinstance(t, (types.Integer, types.Boolean)) for t in tys)


def _cast(builder, value, ty):
    if isinstance(ty, types.Boolean):
        return builder.zext(value, _I32)
    return _as_i32(builder, value, ty)


def _binary(op_name):
    @intrinsic
    def op(typingctx, a, b):
        if not _integer(a, b):
            return None

        def codegen(context, builder, signature, args):
            x = _cast(builder, args[0], signature.args[0])
            y = _cast(builder, args[1], signature.args[1])
            return getattr(builder, op_name)(x, y)

        return types.int32(a, b), codegen

    return op


add = _binary("add")
sub = _binary("sub")
mul = _binary("mul")  # the low 32 bits of the product
band = _binary("and_")
bor = _binary("or_")
bxor = _binary("xor")
shl = _binary("shl")
shr = _binary("lshr")  # logical (unsigned) right shift
sar = _binary("ashr")  # arithmetic right shift


@intrinsic
def mulhi(typingctx, a, b):
    """The high 32 bits of the unsigned 64-bit product of two uint32 values (``pmuludq``)."""
    if not _integer(a, b):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        x = builder.zext(_cast(builder, args[0], signature.args[0]), i64)
        y = builder.zext(_cast(builder, args[1], signature.args[1]), i64)
        return builder.trunc(builder.lshr(builder.mul(x, y), ir.Constant(i64, 32)), _I32)

    return types.int32(a, b), codegen


@intrinsic
def i32(typingctx, a):
    """The low 32 bits of an integer (or 0/1 of a bool) as int32."""
    if not _integer(a):
        return None

    def codegen(context, builder, signature, args):
        return _cast(builder, args[0], signature.args[0])

    return types.int32(a), codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The fp32 whose bit pattern is the low 32 bits of the integer ``bits``."""
    if not _integer(bits):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(_cast(builder, args[0], signature.args[0]), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def bits_from_f32(typingctx, value):
    """The bit pattern of the fp32 ``value`` as an int32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _I32)

    return types.int32(value), codegen
