"""Quantizer modules: ranges from observers, learned-parameter initialisation, grids, registry."""

import math

import numpy as np
import pytest
import torch

import lowbit
from lowbit.qat import (
    AffineQuantizer, BinaryQuantizer, LSQQuantizer, PACTQuantizer, QFormatQuantizer,
    TernaryQuantizer, TQTQuantizer, affine_quantize, make_quantizer, quant_mode,
    range_to_qparams, register_quantizer,
)
from lowbit.qat.export import int_codes


def _x(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_affine_activation_uses_ema_range():
    q = AffineQuantizer(4)
    xs = [_x(8, 5, seed=i, scale=i + 1) for i in range(3)]
    for x in xs:
        y = q(x)
    m_lo = m_hi = 0.0
    for x in xs:
        m_lo = 0.9 * m_lo + 0.1 * float(x.min())
        m_hi = 0.9 * m_hi + 0.1 * float(x.max())
    lo, hi = m_lo / (1 - 0.9**3), m_hi / (1 - 0.9**3)
    s, z = range_to_qparams(torch.tensor(lo), torch.tensor(hi), 0, 15, symmetric=False)
    assert q.scale.item() == pytest.approx(s.item(), rel=1e-6)
    assert q.zero_point.item() == z.item()
    assert torch.equal(y, affine_quantize(xs[-1], q.scale, q.zero_point, 0, 15))


def test_affine_symmetric_per_channel_weights():
    w = _x(6, 4, 3, 3, seed=1)
    q = AffineQuantizer(8, symmetric=True, axis=0, role="weight")
    y = q(w)
    p = q.qparams()
    assert (p.qmin, p.qmax, p.axis) == (-127, 127, 0)
    codes = int_codes(y, p)
    amax = w.abs().amax(dim=(1, 2, 3))
    assert torch.equal(q.scale, amax / 127)
    # each channel's largest magnitude lands exactly on ±127
    assert torch.equal(codes.abs().amax(dim=(1, 2, 3)).long(), torch.full((6,), 127))


def test_affine_per_group():
    w = _x(4, 10, seed=2)
    q = AffineQuantizer(4, symmetric=True, axis=1, group_size=4, role="weight")
    y = q(w)
    assert q.scale.shape == (4, 3)
    for g, (a, b) in enumerate([(0, 4), (4, 8), (8, 10)]):
        s = w[:, a:b].abs().amax(dim=1) / 7
        expected = torch.clamp(torch.round(w[:, a:b] / s[:, None]), -7, 7) * s[:, None]
        assert torch.equal(y[:, a:b], expected)


@pytest.mark.parametrize("amax,fl", [(0.9, 7), (1.0, 6), (5.0, 4), (0.2, 9)])
def test_qformat_fraction_bits(amax, fl):
    x = torch.tensor([-amax / 2, amax, 0.1])
    q = QFormatQuantizer(8, backend="reference")  # numba's kernels reset OpenMP threads
    y = q(x)
    assert int(q.fl) == fl
    assert torch.equal(y, lowbit.quantize(x, f"fixed<8,{fl}>", backend="reference"))
    assert q.qparams().scale.item() == 2.0**-fl


def test_lsq_initialisation_and_learning():
    w = _x(5, 3, 3, 3, seed=3)
    q = LSQQuantizer(4, axis=0, role="weight")
    q.initialize(w)
    assert q.signed and q.scale.shape == (5,)
    expected = 2 * w.abs().mean(dim=(1, 2, 3)) / math.sqrt(7)
    assert torch.allclose(q.scale.detach(), expected, rtol=1e-6)
    q(w).square().sum().backward()
    assert q.scale.grad is not None and q.scale.grad.shape == (5,)
    assert torch.count_nonzero(q.scale.grad) == 5


def test_lsq_activation_grad_scale_uses_features_per_example():
    x = _x(4, 10, seed=4).abs()  # unsigned data -> codes [0, 15]
    q = LSQQuantizer(4)
    q(x)
    q.scale.grad = None
    q.quantize(x).backward(torch.ones_like(x))
    plain = x.clone()
    s = q.scale.detach().clone().requires_grad_()
    lowbit.qat.lsq_quantize(plain, s, 0, 15, grad_scale=None).backward(torch.ones_like(x))
    assert q.scale.grad.item() == pytest.approx(s.grad.item() / math.sqrt(10 * 15), rel=1e-6)


def test_lsq_plus_init_from_minmax():
    x = _x(100, seed=5) - 0.5
    q = LSQQuantizer(4, offset=True)
    q(x)
    lo, hi = float(x.min()), float(x.max())
    s = (hi - lo) / 15
    assert q.signed  # the data held negative values
    qmin = q.qrange[0]
    assert q.scale.item() == pytest.approx(s, rel=1e-6)
    assert q.offset.item() == pytest.approx(lo - qmin * s, rel=1e-5, abs=1e-6)


def test_learned_calibration_then_training_rule():
    q = TQTQuantizer(8)
    with quant_mode(q, "calibrate"):
        q(torch.tensor([1.0, -3.0]))
        q(torch.tensor([0.5, 6.0]))   # calibration: re-initialised from each batch
    assert q.log2_t.item() == pytest.approx(math.log2(6.0))
    q(torch.tensor([100.0]))           # qat mode: already initialised, the parameter is kept
    assert q.log2_t.item() == pytest.approx(math.log2(6.0))
    assert q.signed is True  # the first batch held a negative value


def test_pact_init_and_grid():
    q = PACTQuantizer(3)
    x = torch.tensor([0.0, 0.5, 2.8, 3.5])
    y = q(x)
    assert q.alpha.item() == 3.5
    s = 3.5 / 7
    assert torch.allclose(y, torch.round(torch.clamp(x, 0, 3.5) / s) * s)
    assert q.qparams().scale.item() == pytest.approx(s)
    fixed = PACTQuantizer(3, alpha=2.0, signed=False)
    fixed(x)
    assert fixed.alpha.item() == 2.0  # an explicit alpha is not overwritten by data
    signed = PACTQuantizer(3)
    y = signed(torch.tensor([-4.0, 0.9, 2.0]))
    assert signed.signed and signed.alpha.item() == 4.0
    s = torch.tensor(4.0) / 3
    assert torch.equal(y, torch.stack([-3 * s, 1 * s, 2 * s])) and signed.qparams().qmin == -3


@pytest.mark.parametrize("cls,codes", [(BinaryQuantizer, {-1, 1}), (TernaryQuantizer, {-1, 0, 1})])
def test_binary_ternary_grids(cls, codes):
    w = _x(4, 20, seed=6)
    q = cls()
    y = q(w)
    p = q.qparams(w)
    c = int_codes(y, p)
    assert set(c.unique().tolist()) == codes
    assert torch.allclose((c.float() * p.scale[:, None]), y, rtol=1e-6)


def test_quantize_before_any_data_raises():
    with pytest.raises(RuntimeError, match="no range yet"):
        AffineQuantizer().quantize(torch.ones(3))
    with pytest.raises(RuntimeError, match="not initialised"):
        LSQQuantizer().quantize(torch.ones(3))


def test_registry():
    assert isinstance(make_quantizer("lsq", bits=4), LSQQuantizer)
    assert make_quantizer("lsq+").offset is not None
    assert isinstance(make_quantizer("ternary"), TernaryQuantizer)
    with pytest.raises(ValueError, match="quantizer must be one of"):
        make_quantizer("nope")
    register_quantizer("affine4_test", lambda **kw: AffineQuantizer(4, **kw))
    assert make_quantizer("affine4_test", role="weight").bits == 4
    with pytest.raises(TypeError):
        register_quantizer("x", 3)


def test_state_dict_round_trip_with_lazy_shapes():
    q = LSQQuantizer(4, axis=1)
    q(_x(3, 6, seed=7))
    fresh = LSQQuantizer(4, axis=1)
    fresh.load_state_dict(q.state_dict())
    x = _x(3, 6, seed=8)
    assert torch.equal(fresh.quantize(x), q.quantize(x))
    a = AffineQuantizer(4, axis=0, symmetric=True, role="weight")
    a(_x(3, 6, seed=9))
    b = AffineQuantizer(4, axis=0, symmetric=True, role="weight")
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.quantize(x), a.quantize(x))


def test_numpy_oracle_for_symmetric_unsigned():
    x = _x(50, seed=10).abs()
    q = AffineQuantizer(4, symmetric=True, signed=False, observer="minmax")
    y = q(x)
    s = np.float32(x.max().item()) / np.float32(15)
    np.testing.assert_array_equal(y.numpy(), np.clip(np.round(x.numpy() / s), 0, 15) * s)


@pytest.mark.parametrize("make,err", [
    (lambda: AffineQuantizer(1, symmetric=True), ValueError),
    (lambda: AffineQuantizer(8, observer=3), TypeError),
    (lambda: AffineQuantizer(8, observer="max"), ValueError),
    (lambda: AffineQuantizer(8, ste="none"), ValueError),
    (lambda: LSQQuantizer(4, init="magic"), ValueError),
    (lambda: LSQQuantizer(4, signed=1), TypeError),
    (lambda: TQTQuantizer(4, init="magic"), ValueError),
    (lambda: PACTQuantizer(4, alpha=-1.0, signed=False), ValueError),
    (lambda: PACTQuantizer(4, alpha=1.0), ValueError),
    (lambda: QFormatQuantizer(30), ValueError),
    (lambda: AffineQuantizer(8, role="bias"), ValueError),
])
def test_bad_arguments(make, err):
    with pytest.raises(err):
        make()
