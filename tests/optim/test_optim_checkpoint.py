"""LowPrecision checkpoints: weights_only loading, bit-exact resume (master copies, fp32 state
of bf16 parameters, loss-scale state and the stochastic-rounding counter), and refusals."""

import io

import pytest
import torch

from lowbit.optim import DynamicLossScale, LowPrecision

CONFIGS = {
    "sgd-fp8": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
                dict(weight="e5m2", grad="e5m2", state="e6m9", rounding={"state": "stochastic"},
                     loss_scale=DynamicLossScale(init_scale=2.0**10, growth_interval=2))),
    "adamw-master": (lambda ps: torch.optim.AdamW(ps, lr=1e-2, amsgrad=True),
                     dict(weight="e4m3fn", master="bf16", grad="bf16", rounding="stochastic",
                          state={"exp_avg": "bf16", "exp_avg_sq": "e8m7"})),
    "adam-bf16-params": (lambda ps: torch.optim.Adam(ps, lr=1e-2), dict(loss_scale=128.0)),
}


def model(seed, dtype):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return net.to(dtype)


def batch(t, dtype):
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(16, 6, generator=g).to(dtype), torch.randint(0, 3, (16,), generator=g)


def train(net, opt, steps, dtype):
    for t in steps:
        x, y = batch(t, dtype)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x).float(), y) + 3.0
        opt.backward(loss)
        if t == 1:  # an overflow: a dynamic loss scale skips this step
            next(net.parameters()).grad[0, 0] = float("inf")
        opt.step()


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def bits_equal(a, b):
    return a.dtype == b.dtype and torch.equal(a.float().view(torch.int32),
                                              b.float().view(torch.int32))


@pytest.mark.parametrize("name", CONFIGS)
def test_resume_is_bit_exact(name):
    make, kw = CONFIGS[name]
    dtype = torch.bfloat16 if "bf16-params" in name else torch.float32
    net = model(0, dtype)
    opt = LowPrecision(make(net.parameters()), seed=77, **kw)
    train(net, opt, range(3), dtype)
    ckpt = roundtrip({"model": net.state_dict(), "opt": opt.state_dict()})
    train(net, opt, range(3, 7), dtype)

    net2 = model(1, dtype)  # other initial weights, other seed: all must come from the file
    opt2 = LowPrecision(make(net2.parameters()), seed=5, **kw)
    net2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.steps == 3 and opt2.seed == 77
    assert opt2.param_groups is opt2.optimizer.param_groups and opt2.state is opt2.optimizer.state
    train(net2, opt2, range(3, 7), dtype)

    for a, b in zip(net.parameters(), net2.parameters()):
        assert bits_equal(a, b)
    for p, q in zip(net.parameters(), net2.parameters()):
        for key, value in opt.state[p].items():
            assert bits_equal(value, opt2.state[q][key]), key
    for i, m in opt.master_copies.items():
        assert bits_equal(m, opt2.master_copies[i])
    assert opt.loss_scale == opt2.loss_scale and opt.steps == opt2.steps == 7
    assert opt._scaler.growth_tracker == opt2._scaler.growth_tracker


def test_dynamic_scale_skips_the_overflowing_step():
    make, kw = CONFIGS["sgd-fp8"]
    net = model(0, torch.float32)
    opt = LowPrecision(make(net.parameters()), seed=1, **kw)
    train(net, opt, range(1), torch.float32)
    assert not opt.last_step_skipped and opt.loss_scale == 2.0**10
    train(net, opt, range(1, 2), torch.float32)
    assert opt.last_step_skipped and opt.loss_scale == 2.0**9


def test_state_dict_contents_are_plain():
    net = model(0, torch.float32)
    opt = LowPrecision(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), master="fp16",
                       weight="e4m3fn", loss_scale="dynamic", seed=2**64 - 1)
    train(net, opt, range(2), torch.float32)
    sd = roundtrip(opt.state_dict())
    ours = sd["lowbit"]
    assert ours["seed"] == 2**64 - 1 and ours["steps"] == 2
    assert sorted(ours["master"]) == [0, 1, 2, 3]
    assert ours["config"]["master"] == "fp16" and ours["config"]["weight"] == "e4m3fn"
    assert ours["loss_scale"] == {"scale": 32768.0, "growth_tracker": 0}  # step 1 overflowed
    assert set(sd["optimizer"]) == {"state", "param_groups"}


@pytest.mark.parametrize("change,match", [
    (dict(weight="e5m2"), "weight"),
    (dict(master=None), "master"),
    (dict(loss_scale=None), "loss_scale"),
    (dict(rounding="stochastic"), "rounding"),
])
def test_load_refuses_another_configuration(change, match):
    kw = dict(weight="e4m3fn", master="fp16", loss_scale="dynamic")
    net = model(0, torch.float32)
    sd = LowPrecision(torch.optim.SGD(net.parameters(), lr=0.1), **kw).state_dict()
    other = LowPrecision(torch.optim.SGD(net.parameters(), lr=0.1), **{**kw, **change})
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(sd)


def test_load_refuses_a_plain_optimizer_state_dict_and_wrong_masters():
    net = model(0, torch.float32)
    opt = LowPrecision(torch.optim.SGD(net.parameters(), lr=0.1), master="fp16")
    with pytest.raises(ValueError, match="keys 'optimizer' and 'lowbit'"):
        opt.load_state_dict(torch.optim.SGD(net.parameters(), lr=0.1).state_dict())
    sd = opt.state_dict()
    sd["lowbit"]["master"] = {0: torch.zeros(3)}
    with pytest.raises(ValueError, match="master copies of parameters"):
        opt.load_state_dict(sd)
    sd["lowbit"]["master"] = {i: torch.zeros(2) for i in range(4)}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)
