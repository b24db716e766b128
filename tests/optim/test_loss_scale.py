"""Loss scaling in lowbit.optim.LowPrecision: static division, GradScaler's dynamic rule
(checked against torch.amp.GradScaler itself), overflow skips, and the loss helpers."""

import math

import pytest
import torch

from lowbit.optim import DynamicLossScale, LowPrecision


def test_dynamic_matches_torch_grad_scaler():
    # Same gradients, some with Inf/NaN: the scale trajectory, the skipped steps and the
    # resulting weights must equal torch.amp.GradScaler driving a plain SGD.
    policy = DynamicLossScale(init_scale=2.0**10, growth_factor=2.0, backoff_factor=0.5,
                              growth_interval=3)
    a = torch.nn.Parameter(torch.randn(32))
    b = torch.nn.Parameter(a.detach().clone())
    ours = LowPrecision(torch.optim.SGD([a], lr=0.1, momentum=0.9), loss_scale=policy, seed=0)
    plain = torch.optim.SGD([b], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_factor=2.0,
                                  backoff_factor=0.5, growth_interval=3)
    gen = torch.Generator().manual_seed(3)
    bad = {2: math.inf, 6: math.nan, 7: -math.inf}
    for t in range(12):
        g = torch.randn(32, generator=gen)
        if t in bad:
            g[5] = bad[t]
        a.grad = g * ours.loss_scale
        b.grad = scaler.scale(g)
        ours.step()
        scaler.step(plain)
        scaler.update()
        assert ours.last_step_skipped == (t in bad)
        assert ours.loss_scale == scaler.get_scale(), t
        assert torch.equal(a, b), t


def test_overflow_skips_everything_but_the_scale():
    p = torch.nn.Parameter(torch.randn(8))
    opt = LowPrecision(torch.optim.Adam([p], lr=0.1), weight="bf16", grad="e5m2",
                       state="bf16", loss_scale="dynamic", seed=0)
    w = p.detach().clone()
    g = torch.randn(8) * 65536
    g[3] = math.nan
    p.grad = g.clone()
    opt.step()
    assert opt.last_step_skipped and opt.loss_scale == 2.0**15 and opt.steps == 1
    assert torch.equal(p, w)
    assert torch.equal(p.grad.nan_to_num(), g.nan_to_num())  # gradient left as it was
    assert len(opt.state[p]) == 0  # Adam never ran
    p.grad = torch.ones(8) * opt.loss_scale
    opt.step()
    assert not opt.last_step_skipped and opt.state[p]["step"].item() == 1
    assert opt._scaler.growth_tracker == 1


def test_static_scale_never_skips():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = LowPrecision(torch.optim.SGD([p], lr=1.0), loss_scale=4.0)
    p.grad = torch.tensor([4.0, math.inf, 8.0, 0.0])
    opt.step()
    assert not opt.last_step_skipped and opt.loss_scale == 4.0
    assert p[0].item() == -1.0 and p[1].item() == -math.inf and p[2].item() == -2.0


def test_scale_loss_and_backward():
    w = torch.nn.Parameter(torch.tensor([3.0]))
    opt = LowPrecision(torch.optim.SGD([w], lr=1.0), loss_scale=DynamicLossScale(init_scale=8.0))
    loss = (w * 2).sum()
    assert opt.scale_loss(loss).item() == 48.0
    opt.backward(loss)
    assert w.grad.item() == 16.0
    opt.step()
    assert w.item() == 1.0  # 3 - 16/8
    plain = LowPrecision(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0))
    assert plain.loss_scale is None and plain.scale_loss(loss) is loss


def test_growth_after_interval():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = LowPrecision(torch.optim.SGD([p], lr=0.0),
                       loss_scale=DynamicLossScale(init_scale=1.0, growth_interval=2,
                                                   growth_factor=4.0))
    scales = []
    for _ in range(5):
        p.grad = torch.ones(4)
        opt.step()
        scales.append(opt.loss_scale)
    assert scales == [1.0, 4.0, 4.0, 16.0, 16.0]


@pytest.mark.parametrize("kw,exc,match", [
    (dict(init_scale=0.0), ValueError, "init_scale"),
    (dict(init_scale=math.inf), ValueError, "init_scale"),
    (dict(init_scale="1"), TypeError, "init_scale"),
    (dict(growth_factor=1.0), ValueError, "growth_factor"),
    (dict(backoff_factor=1.0), ValueError, "backoff_factor"),
    (dict(backoff_factor=0.0), ValueError, "backoff_factor"),
    (dict(growth_interval=0), ValueError, "growth_interval"),
    (dict(growth_interval=2.0), TypeError, "growth_interval"),
])
def test_dynamic_loss_scale_validation(kw, exc, match):
    with pytest.raises(exc, match=match):
        DynamicLossScale(**kw)
