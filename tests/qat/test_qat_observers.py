"""Range observers against numpy."""

import math

import numpy as np
import pytest
import torch

from lowbit.qat import (
    EMAMinMaxObserver, HistogramObserver, MinMaxObserver, MSEObserver, PercentileObserver,
    range_to_qparams,
)


def _batches(n=4, shape=(6, 3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (i + 1) + i * 0.3 for i in range(n)]


def _per_channel(x, axis):
    """numpy rows (channel, everything else) for axis, or (1, all) for None."""
    a = x.numpy()
    return a.reshape(1, -1) if axis is None else np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("accumulate", ["latest", "running"])
def test_minmax(axis, accumulate):
    obs = MinMaxObserver(axis=axis, accumulate=accumulate)
    batches = _batches()
    for b in batches:
        obs(b)
    rows = [_per_channel(b, axis) for b in batches]
    if accumulate == "latest":
        lo, hi = rows[-1].min(1), rows[-1].max(1)
    else:
        lo = np.min([r.min(1) for r in rows], 0)
        hi = np.max([r.max(1) for r in rows], 0)
    got_lo, got_hi = obs.bounds()
    np.testing.assert_array_equal(got_lo.numpy().reshape(-1), lo)
    np.testing.assert_array_equal(got_hi.numpy().reshape(-1), hi)


@pytest.mark.parametrize("axis", [None, 1])
def test_ema_with_bias_correction(axis):
    mom = 0.8
    obs = EMAMinMaxObserver(axis=axis, momentum=mom)
    batches = _batches()
    m_lo = m_hi = 0.0
    for t, b in enumerate(batches, start=1):
        obs(b)
        r = _per_channel(b, axis).astype(np.float64)
        m_lo = mom * m_lo + (1 - mom) * r.min(1)
        m_hi = mom * m_hi + (1 - mom) * r.max(1)
        lo, hi = obs.bounds()
        np.testing.assert_allclose(lo.numpy().reshape(-1), m_lo / (1 - mom**t), rtol=1e-6)
        np.testing.assert_allclose(hi.numpy().reshape(-1), m_hi / (1 - mom**t), rtol=1e-6)
    # after one batch, bias correction returns exactly that batch's range
    one = EMAMinMaxObserver(momentum=mom)
    one(batches[0])
    assert one.bounds()[1].item() == pytest.approx(float(batches[0].max()), rel=1e-6)


def test_per_group_minmax_ragged():
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    obs = MinMaxObserver(axis=1, group_size=4)
    obs(x)
    lo, hi = obs.bounds()
    assert lo.shape == (3, 3)
    a = x.numpy()
    for r in range(3):
        for gi, (s, e) in enumerate([(0, 4), (4, 8), (8, 10)]):
            assert lo[r, gi].item() == a[r, s:e].min() and hi[r, gi].item() == a[r, s:e].max()


@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("p", [99.0, 99.9, 100.0])
def test_percentile_matches_numpy(axis, p):
    x = torch.randn(4, 2001, generator=torch.Generator().manual_seed(2)) ** 3
    obs = PercentileObserver(p, axis=axis)
    obs(x)
    lo, hi = obs.bounds()
    rows = _per_channel(x, axis).astype(np.float64)
    exp_lo = np.percentile(rows, 100 - p, axis=1)
    exp_hi = np.percentile(rows, p, axis=1)
    # fp32 interpolation between two neighbours: a few ulp of their magnitude
    tol = 4 * np.finfo(np.float32).eps * np.abs(rows).max()
    np.testing.assert_allclose(lo.numpy().reshape(-1), exp_lo, rtol=0, atol=tol)
    np.testing.assert_allclose(hi.numpy().reshape(-1), exp_hi, rtol=0, atol=tol)


def _np_mse_search(rows, qmin, qmax, symmetric, grid):
    out = []
    for r in rows:
        lo, hi = min(r.min(), 0.0), max(r.max(), 0.0)
        if symmetric:
            hi = max(-lo, hi)
            lo = -hi
        errs = []
        for k in range(1, grid + 1):
            c = np.float32(k / grid)
            l, h = np.float32(c * np.float32(lo)), np.float32(c * np.float32(hi))
            if symmetric:
                s, z = np.float32(max(-l, h) / np.float32(qmax)), np.float32(0)
            else:
                s = np.float32((h - l) / np.float32(qmax - qmin))
                z = np.float32(np.clip(qmin - np.round(l / s), qmin, qmax))
            q = (np.clip(np.round(r / s) + z, qmin, qmax) - z) * s
            errs.append(np.mean((q.astype(np.float64) - r) ** 2))
        errs = np.array(errs)
        out.append((errs.min(), errs))
    return out


@pytest.mark.parametrize("symmetric,qmin,qmax", [(True, -7, 7), (False, 0, 15)])
def test_mse_search_matches_numpy(symmetric, qmin, qmax):
    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(3))
    x[0, 0] = 9.0  # an outlier that the MSE search should clip
    obs = MSEObserver(qmin, qmax, symmetric=symmetric, grid=50, axis=0)
    obs(x)
    lo, hi = obs.bounds()
    rows = x.numpy()
    for c, (best, errs) in enumerate(_np_mse_search(rows, qmin, qmax, symmetric, 50)):
        s, z = range_to_qparams(lo[c], hi[c], qmin, qmax, symmetric=symmetric)
        q = (np.clip(np.round(rows[c] / s.numpy()) + z.numpy(), qmin, qmax) - z.numpy()) * s.numpy()
        got = np.mean((q.astype(np.float64) - rows[c]) ** 2)
        assert got == pytest.approx(best, rel=1e-5)
    assert hi[0].item() < 9.0  # the outlier is clipped


def test_range_to_qparams_formulas():
    s, z = range_to_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255, symmetric=False)
    assert s.item() == pytest.approx(4 / 255) and z.item() == 64.0  # 0 - round(-63.75)
    s, z = range_to_qparams(torch.tensor(-1.0), torch.tensor(3.0), -127, 127, symmetric=True)
    assert s.item() == pytest.approx(3 / 127) and z.item() == 0.0
    s, z = range_to_qparams(torch.tensor(0.5), torch.tensor(3.0), 0, 255, symmetric=False)
    assert s.item() == pytest.approx(3 / 255) and z.item() == 0.0  # widened to include 0
    s, _ = range_to_qparams(torch.tensor(0.0), torch.tensor(0.0), 0, 255, symmetric=False)
    assert s.item() == torch.finfo(torch.float32).eps


def _np_kl_threshold_bin(hist, levels):
    """Independent loop version of the entropy calibration, in numpy float64."""
    hist = hist.astype(np.float64)
    best, best_kl = len(hist), np.inf
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        q = np.zeros(i)
        for j in range(levels):
            members = [b for b in range(i) if (b * levels) // i == j]
            nz = [b for b in members if p[b] != 0]
            if nz:
                total = sum(hist[b] for b in members)
                for b in nz:
                    q[b] = total / len(nz)

        def smooth(d):
            zeros = d == 0
            nzc = (~zeros).sum()
            return d + 1e-4 * zeros - (1e-4 * zeros.sum() / nzc) * (~zeros) if nzc else d

        p, q = smooth(p), smooth(q)
        if q.sum() <= 0:
            continue
        p, q = p / p.sum(), q / q.sum()
        kl = float(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0)))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def test_histogram_accumulates_with_exact_rebinning():
    g = torch.Generator().manual_seed(4)
    batches = [torch.randn(3000, generator=g) * s for s in (0.5, 1.0, 3.0)]
    obs = HistogramObserver(bins=64, method="percentile", percentile=99.0)
    for b in batches:
        obs(b)
    upper = float(obs.upper)
    # just above the first batch's max, doubled until the 3σ batch fits
    assert upper == math.nextafter(float(batches[0].abs().max()), math.inf) * 2 ** 3
    a = torch.cat(batches).abs().double().numpy()
    expected, _ = np.histogram(a, bins=64, range=(0, upper))
    np.testing.assert_array_equal(obs.hist.numpy(), expected)
    lo, hi = obs.bounds()
    cum = np.cumsum(expected)
    i = int(np.argmax(cum >= 0.99 * cum[-1]))
    assert hi.item() == pytest.approx((i + 1) * upper / 64, rel=1e-6) and lo.item() == -hi.item()


def test_histogram_kl_matches_independent_loop():
    x = torch.randn(20000, generator=torch.Generator().manual_seed(5)).abs()
    obs = HistogramObserver(0, 15, symmetric=True, method="kl", bins=128)
    obs(x)
    i = _np_kl_threshold_bin(obs.hist.numpy(), 16)
    lo, hi = obs.bounds()
    assert lo.item() == 0.0  # never saw a negative value
    assert hi.item() == pytest.approx(i * float(obs.upper) / 128, rel=1e-6)
    assert i < 128  # the long tail is clipped


def test_histogram_mse_matches_brute_force():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(6))
    obs = HistogramObserver(-7, 7, symmetric=True, method="mse", bins=64)
    obs(x)
    h = obs.hist.numpy().astype(np.float64)
    c = np.arange(64) + 0.5
    errs = []
    for i in range(1, 65):
        s = i / 7
        q = np.minimum(np.round(c / s), 7) * s
        errs.append(((q - c) ** 2 * h).sum())
    i = int(np.argmin(errs)) + 1
    assert obs.bounds()[1].item() == pytest.approx(i * float(obs.upper) / 64, rel=1e-6)


def test_state_dict_round_trip_of_lazy_ranges():
    obs = MinMaxObserver(axis=0)
    obs(torch.randn(3, 4))
    fresh = MinMaxObserver(axis=0)
    fresh.load_state_dict(obs.state_dict())
    assert torch.equal(fresh.bounds()[0], obs.bounds()[0])


@pytest.mark.parametrize("make,err", [
    (lambda: MinMaxObserver(momentum=1.0), ValueError),
    (lambda: MinMaxObserver(accumulate="mean"), ValueError),
    (lambda: PercentileObserver(40), ValueError),
    (lambda: PercentileObserver(99, axis=0, accumulate="latest").__class__(99, axis="0"), TypeError),
    (lambda: HistogramObserver(bins=7), ValueError),
    (lambda: HistogramObserver(axis=0), ValueError),
    (lambda: MSEObserver(grid=0), ValueError),
])
def test_bad_arguments(make, err):
    with pytest.raises(err):
        make()


def test_bounds_before_data_raise():
    with pytest.raises(RuntimeError, match="observed nothing"):
        MinMaxObserver().bounds()
