"""Oracles for the nn tests, written independently of lowbit.nn: quantization along an axis
by transposing (not by re-axing the format), straight-through quantization by the
``x + (Q(x) - x).detach()`` identity, gradient quantization by tensor hooks."""

import copy

import torch

import lowbit as lb
import lowbit.nn as lnn


def q(x, fmt, axis=None, **kw):
    """``lowbit.quantize`` with blocks along ``axis``: move it last, quantize, move it back."""
    if fmt is None:
        return x
    if axis is None:
        return lb.quantize(x, fmt, **kw)
    moved = x.movedim(axis, -1).contiguous()
    # contiguous like the code under test: ATen picks kernels (and so rounding) by layout
    return lb.quantize(moved, fmt, **kw).movedim(-1, axis).contiguous()


def ste(x, fmt, axis=None):
    """Forward ``Q(x)``, gradient 1 (straight-through)."""
    return x + (q(x.detach(), fmt, axis) - x).detach()


def grad_q(x, fmt):
    """``x`` unchanged; its gradient quantized."""
    if fmt is None or not x.requires_grad:
        return x
    x = x.view_as(x)
    x.register_hook(lambda g: q(g, fmt))
    return x


FP32_EVERYWHERE = lnn.Recipe(**{r: "fp32" for r in lnn.ROLES})


def converted(module, recipe, *, opt_in=False, seed=0):
    """A converted deep copy (``opt_in`` selects the module by type, for norms/embeddings)."""
    m = copy.deepcopy(module)
    if opt_in:
        recipe = recipe.replace(overrides={type(m): {}})
    return lnn.convert(m, recipe, seed=seed)


def run(module, inputs, grad):
    """Outputs and gradients (inputs then parameters) of one forward/backward."""
    ins = [i.detach().clone().requires_grad_(i.is_floating_point()) for i in inputs]
    module.zero_grad(set_to_none=True)
    y = module(*ins)
    y = y[0] if isinstance(y, tuple) else y
    y.backward(grad)
    grads = [i.grad for i in ins if i.is_floating_point()]
    grads += [p.grad for p in module.parameters()]
    return y.detach(), grads


def assert_same(a, b):
    """Bitwise equality of tensors (or lists of tensors / None), with a useful message."""
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            try:
                assert_same(x, y)
            except AssertionError as err:
                raise AssertionError(f"item {i}: {err}") from None
        return
    if a is None or b is None:
        assert a is None and b is None, f"{a} vs {b}"
        return
    assert a.shape == b.shape, f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"dtype {a.dtype} vs {b.dtype}"
    diff = (a.float() - b.float()).abs()
    same = torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all())
    assert same, f"max |diff| {diff.nan_to_num().max().item():.3g}"
