"""Functional fake quantizers: forward values against numpy, every gradient against its
hand-derived formula (exact dyadic examples, and numpy float64 on random data)."""

import math

import numpy as np
import pytest
import torch

import lowbit
from lowbit.qat import functional as F


def _np_fake(x, s, z, qmin, qmax):
    """numpy oracle in float32 arithmetic: (clip(round(x/s) + z) - z)·s."""
    x, s, z = (np.asarray(a, dtype=np.float32) for a in (x, s, z))
    q = np.clip(np.round(x / s) + z, qmin, qmax)
    return ((q - z) * s).astype(np.float32)


def _param_np(p, x_shape, axis, group_size):
    """A numpy parameter broadcast to x's shape by explicit indexing (independent of expand)."""
    p = np.asarray(p, dtype=np.float32)
    if axis is None:
        return np.full(x_shape, p.reshape(()), dtype=np.float32)
    out = np.empty(x_shape, dtype=np.float32)
    for idx in np.ndindex(*x_shape):
        if group_size is None:
            out[idx] = p[idx[axis]]
        else:
            j = list(idx)
            j[axis] = idx[axis] // group_size
            out[idx] = p[tuple(j)]
    return out


GRANULARITIES = [
    ((5, 6), None, None, ()),
    ((5, 6), 0, None, (5,)),
    ((4, 3, 5), 1, None, (3,)),
    ((4, 3, 5), -1, None, (5,)),
    ((3, 10), 1, 4, (3, 3)),          # ragged last group
    ((6, 2, 3), 0, 2, (3, 2, 3)),
]


@pytest.mark.parametrize("shape,axis,group,pshape", GRANULARITIES)
def test_affine_forward_matches_numpy(shape, axis, group, pshape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g) * 3
    s = torch.rand(pshape, generator=g) * 0.3 + 0.05
    z = torch.randint(0, 16, pshape, generator=g).float()
    y = F.affine_quantize(x, s, z, 0, 15, axis=axis, group_size=group)
    expected = _np_fake(x.numpy(), _param_np(s, shape, axis, group),
                        _param_np(z, shape, axis, group), 0, 15)
    np.testing.assert_array_equal(y.numpy(), expected)


def test_affine_exact_gradients_dyadic():
    # s = 0.5, codes [-4, 3]: u = x/s = [0.75, -1.25, 2.5, 6, -10]
    x = torch.tensor([0.375, -0.625, 1.25, 3.0, -5.0], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    up = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y = F.affine_quantize(x, s, 0, -4, 3, ste="clipped")
    assert y.tolist() == [0.5, -0.5, 1.0, 1.5, -2.0]  # 2.5 rounds to even 2
    y.backward(up)
    # inside: round(u) - u = 0.25, 0.25, -0.5; above: qmax = 3; below: qmin = -4
    assert s.grad.item() == 1 * 0.25 + 2 * 0.25 + 3 * -0.5 + 4 * 3 + 5 * -4 == -8.75
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]


def test_affine_identity_ste_and_grad_scale():
    x = torch.tensor([0.375, -0.625, 1.25, 3.0, -5.0], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    F.affine_quantize(x, s, 0, -4, 3, ste="identity", grad_scale=0.5).backward(
        torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert s.grad.item() == -8.75 * 0.5


def test_affine_zero_point_gradient_of_scale():
    # z = 2: outside below gives qmin - z, above qmax - z
    x = torch.tensor([-10.0, 10.0, 0.25])
    s = torch.tensor(1.0, requires_grad=True)
    F.affine_quantize(x, s, 2, 0, 7).sum().backward()
    assert s.grad.item() == (0 - 2) + (7 - 2) + (0 - 0.25) == 2.75


def test_boundary_belongs_inside():
    # u = qmax exactly: inside, so dx = 1 (clipped) and ds = round(u) - u = 0
    x = torch.tensor([3.0], requires_grad=True)
    s = torch.tensor(1.0, requires_grad=True)
    F.affine_quantize(x, s, 0, -4, 3, ste="clipped").sum().backward()
    assert x.grad.item() == 1.0 and s.grad.item() == 0.0


@pytest.mark.parametrize("shape,axis,group,pshape", GRANULARITIES)
def test_lsq_scale_gradient_random(shape, axis, group, pshape):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g) * 2
    s = (torch.rand(pshape, generator=g) * 0.3 + 0.1).requires_grad_()
    up = torch.randn(shape, generator=g)
    F.lsq_quantize(x, s, -8, 7, axis=axis, group_size=group, grad_scale=None).backward(up)
    # numpy float64 oracle with explicit loops over parameter indices
    xn, un = x.numpy().astype(np.float64), up.numpy().astype(np.float64)
    sb = _param_np(s.detach(), shape, axis, group).astype(np.float64)
    u = x.numpy() / _param_np(s.detach(), shape, axis, group)  # fp32 division, as the op
    inside = (u >= -8) & (u <= 7)
    d = np.where(inside, np.round(u) - u.astype(np.float64), np.where(u < -8, -8.0, 7.0))
    elem = un * d
    expected = np.zeros(pshape if pshape else (), dtype=np.float64)
    for idx in np.ndindex(*shape):
        if axis is None:
            key = ()
        elif group is None:
            key = (idx[axis],)
        else:
            k = list(idx)
            k[axis] = idx[axis] // group
            key = tuple(k)
        expected[key] += elem[idx]
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-5, atol=1e-5)
    del xn, sb


def test_lsq_auto_grad_scale():
    x = torch.tensor([0.375, -0.625, 1.25, 3.0, -5.0])
    s = torch.tensor(0.5, requires_grad=True)
    F.lsq_quantize(x, s, -4, 3).backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    g = 1 / math.sqrt(5 * 3)
    assert F.lsq_grad_scale(5, 3) == g
    assert s.grad.item() == pytest.approx(-8.75 * g, rel=1e-7)


def test_lsq_plus_offset_gradients():
    # y = clamp(round((x - b)/s), 0, 3)·s + b with s = 0.5, b = -0.25
    x = torch.tensor([0.0, 0.625, 5.0, -3.0])
    s = torch.tensor(0.5, requires_grad=True)
    b = torch.tensor(-0.25, requires_grad=True)
    y = F.lsq_quantize(x, s, 0, 3, offset=b, grad_scale=None)
    # u = [0.5, 1.75, 10.5, -5.5] -> codes [0, 2, 3, 0]
    assert y.tolist() == [-0.25, 0.75, 1.25, -0.25]
    y.backward(torch.tensor([1.0, 2.0, 4.0, 8.0]))
    assert s.grad.item() == 1 * (0 - 0.5) + 2 * (2 - 1.75) + 4 * 3 + 8 * 0
    assert b.grad.item() == 4.0 + 8.0  # dy/db = 1 outside only


def test_pact_gradients():
    x = torch.tensor([-1.0, 0.0, 0.7, 1.5, 2.0, 3.0], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    y = F.pact_quantize(x, alpha, 2)  # s = 2/3
    s = np.float32(2.0) / np.float32(3.0)
    expected = np.round(np.clip(np.array([-1, 0, .7, 1.5, 2, 3], np.float32), 0, 2) / s) * s
    np.testing.assert_array_equal(y.detach().numpy(), expected.astype(np.float32))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0, 0.0]  # 1 on [0, alpha)
    assert alpha.grad.item() == 5.0 + 6.0                       # 1 where x >= alpha


def test_pact_signed_gradients():
    x = torch.tensor([-3.0, -2.0, -0.4, 0.5, 2.0, 2.5], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    y = F.pact_quantize(x, alpha, 3, signed=True)  # s = 2/3, codes [-3, 3]
    s = np.float32(2.0) / np.float32(3.0)
    expected = np.round(np.clip(x.detach().numpy(), -2, 2) / s) * s
    np.testing.assert_array_equal(y.detach().numpy(), expected.astype(np.float32))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert x.grad.tolist() == [0.0, 0.0, 3.0, 4.0, 0.0, 0.0]   # 1 on (-alpha, alpha)
    assert alpha.grad.item() == -1.0 - 2.0 + 5.0 + 6.0          # +1 above, -1 below


@pytest.mark.parametrize("signed", [True, False])
def test_tqt_gradient(signed):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, generator=g) * 2
    log2_t = torch.tensor(0.3, requires_grad=True)
    bits = 4
    up = torch.randn(200, generator=g)
    y = F.tqt_quantize(x, log2_t, bits, signed=signed)
    s = 2.0 ** math.ceil(0.3) / 2 ** (bits - 1 if signed else bits)
    n, p = (-8, 7) if signed else (0, 15)
    np.testing.assert_array_equal(y.detach().numpy(), _np_fake(x.numpy(), s, 0, n, p))
    y.backward(up)
    u = x.numpy() / np.float32(s)
    d = np.where((u >= n) & (u <= p), np.round(u) - u.astype(np.float64), np.where(u < n, n, p))
    expected = s * math.log(2) * float((up.numpy().astype(np.float64) * d).sum())
    assert log2_t.grad.item() == pytest.approx(expected, rel=1e-5)


def test_tqt_scale_is_power_of_two():
    for t in (-3.7, -1.0, 0.0, 0.01, 2.5):
        s = F.tqt_scale(torch.tensor(t), 8).item()
        assert math.log2(s) == math.ceil(t) - 7


# The reference backend: lowbit's numba CPU kernels reset the OpenMP thread count of the
# process, which slows every later torch op of this pytest worker (reported).
REF = "reference"


@pytest.mark.parametrize("rounding", ["nearest", "toward_zero", "up"])
def test_qfmt_forward_matches_lowbit_fixed(rounding):
    x = torch.linspace(-3, 3, 1001)
    y = F.qfmt_quantize(x, 6, 3, rounding=rounding, backend=REF)
    assert torch.equal(y, lowbit.quantize(x, "fixed<6,3>", rounding=rounding, backend=REF))
    if rounding == "nearest":  # and against numpy
        k = np.clip(np.round(x.numpy() * 8), -32, 31)
        np.testing.assert_array_equal(y.numpy(), (k / 8).astype(np.float32))


@pytest.mark.parametrize("ste", ["identity", "clipped"])
def test_qfmt_gradient(ste):
    x = torch.tensor([-5.0, -4.0, 0.3, 3.875, 3.9, 8.0], requires_grad=True)
    F.qfmt_quantize(x, 6, 3, ste=ste, backend=REF).sum().backward()
    inside = [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # grid range [-4, 3.875]
    assert x.grad.tolist() == ([1.0] * 6 if ste == "identity" else inside)


@pytest.mark.parametrize("axis", [0, None])
def test_binary_forward_and_gradient(axis):
    g = torch.Generator().manual_seed(4)
    w = (torch.randn(4, 6, generator=g) * 0.8).requires_grad_()
    w.data[0, 0] = 0.0  # sign(0) = +1
    up = torch.randn(4, 6, generator=g)
    y = F.binary_quantize(w, axis=axis)
    wn = w.detach().numpy().astype(np.float64)
    dims = 1 if axis == 0 else None
    alpha = np.abs(wn).mean(axis=dims, keepdims=axis == 0)
    sign = np.where(wn >= 0, 1.0, -1.0)
    np.testing.assert_allclose(y.detach().numpy(), alpha * sign, rtol=1e-6)
    y.backward(up)
    un = up.numpy().astype(np.float64)
    n = wn.shape[1] if axis == 0 else wn.size
    cross = (un * sign).sum(axis=dims, keepdims=axis == 0)
    # d|w|/dw = sign(w) with torch's convention sign(0) = 0
    expected = alpha * (np.abs(wn) <= 1) * un + np.sign(wn) / n * cross
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_ternary_forward_and_gradient():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 50, generator=g).requires_grad_()
    y = F.ternary_quantize(w, axis=0)
    wn = w.detach().numpy().astype(np.float64)
    for c in range(3):
        a = np.abs(wn[c])
        delta = 0.7 * a.mean()
        keep = a > delta
        alpha = a[keep].mean()
        np.testing.assert_allclose(y[c].detach().numpy(), alpha * np.sign(wn[c]) * keep,
                                   rtol=1e-6)
    assert set(torch.unique(y[0] / y[0].abs().max()).tolist()) <= {-1.0, 0.0, 1.0}
    up = torch.randn(3, 50, generator=g)
    y.backward(up)
    assert torch.equal(w.grad, up)  # straight through


def test_fp16_and_bf16_inputs_keep_dtype():
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.randn(10).to(dtype).requires_grad_()
        y = F.affine_quantize(x, 0.25, 0, -8, 7)
        assert y.dtype == dtype
        y.sum().backward()
        assert x.grad.dtype == dtype


@pytest.mark.parametrize("call,err", [
    (lambda x: F.affine_quantize(x, torch.ones(3), 0, -8, 7, axis=0), ValueError),
    (lambda x: F.affine_quantize(x, 1.0, 0, 7, 7), ValueError),
    (lambda x: F.affine_quantize(x, 1.0, 0, -8.0, 7), TypeError),
    (lambda x: F.affine_quantize(x, 1.0, torch.zeros((), requires_grad=True), -8, 7), ValueError),
    (lambda x: F.affine_quantize(x, 1.0, 0, -8, 7, ste="round"), ValueError),
    (lambda x: F.affine_quantize(x, 1.0, 0, -8, 7, group_size=2), ValueError),
    (lambda x: F.affine_quantize(x, 1.0, 0, -8, 7, axis=3), ValueError),
    (lambda x: F.affine_quantize(x.double(), 1.0, 0, -8, 7), TypeError),
    (lambda x: F.lsq_quantize(x, torch.ones(()), -8, 7, grad_scale="big"), ValueError),
    (lambda x: F.pact_quantize(x, torch.ones(2), 4), ValueError),
    (lambda x: F.tqt_quantize(x, torch.zeros(()), 1), ValueError),
    (lambda x: F.ternary_quantize(x, threshold=-1.0), ValueError),
])
def test_bad_arguments_raise(call, err):
    with pytest.raises(err):
        call(torch.randn(4, 5))
