"""Policies, ActNN's levels, auto precision, QModule and the variance diagnostic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.act as act
from lowbit.act import Policy, Rule, Store
from _act_models import TinyResNet


def test_rule_parse():
    assert Rule.parse(2) == Rule(Store.BITS, 2)
    assert Rule.parse("keep") == Rule(Store.KEEP)
    assert Rule.parse("offload") == Rule(Store.KEEP, offload=True)
    assert Rule.parse("auto").store is Store.AUTO
    for bad, err in ((3, ValueError), ("nope", ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(err):
            Rule.parse(bad)
    with pytest.raises(ValueError, match="bits applies"):
        Rule(Store.KEEP, bits=2)
    with pytest.raises(TypeError):
        Rule(offload=1)


def test_matching_by_name_type_and_slot():
    p = Policy(default=2, overrides={"Conv2d": 4, "_BatchNorm": "keep", "layer1.*": 8,
                                     "layer1.0.conv1:1": "keep"})
    conv = ("Conv2d", "_ConvNd")
    assert p.rule_for("stem.0", conv, 0) == Rule(Store.BITS, 4)
    assert p.rule_for("stem.1", ("BatchNorm2d", "_BatchNorm", "_NormBase"), 0).store is \
        Store.KEEP
    assert p.rule_for("layer1.0.conv1", conv, 0) == Rule(Store.BITS, 8)  # later entries win
    assert p.rule_for("layer1.0.conv1", conv, 1) == Rule(Store.KEEP)
    assert p.rule_for("fc", ("Linear",), 0) == Rule(Store.BITS, 2)


def test_policy_round_trip_and_validation():
    p = act.level("L4")
    assert Policy.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="version"):
        Policy.from_dict({**p.to_dict(), "version": 9})
    for kwargs in (dict(min_numel=-1), dict(avg_bits=9), dict(overrides={"a:x": 2}),
                   dict(overrides={"": 2})):
        with pytest.raises((ValueError, TypeError)):
            Policy(**kwargs)


def test_levels_follow_actnn():
    conv = ("Conv2d", "_ConvNd")
    bn = ("BatchNorm2d", "_BatchNorm")
    relu = ("ReLU",)
    gelu = ("GELU",)
    L = act.LEVELS
    assert set(L) == {"L0", "L1", "L2", "L3", "L4", "L5", "swap"}
    assert L["L0"].rule_for("c", conv, 0).store is Store.KEEP
    assert L["L0"].rule_for("r", relu, 0).store is Store.KEEP
    assert L["L1"].rule_for("c", conv, 0) == Rule(Store.BITS, 4)
    assert L["L1"].rule_for("b", bn, 0).store is Store.KEEP
    assert L["L1"].rule_for("r", relu, 0).store is Store.MASK
    assert L["L1"].rule_for("g", gelu, 0).store is Store.KEEP  # ActNN leaves other ops alone
    assert L["L2"].rule_for("b", bn, 0) == Rule(Store.BITS, 4)
    assert L["L3"].rule_for("c", conv, 0) == Rule(Store.AUTO) and L["L3"].avg_bits == 2
    assert L["L4"].rule_for("b", bn, 0) == Rule(Store.AUTO, offload=True)
    assert L["L5"].rule_for("c", conv, 0) == L["L4"].rule_for("c", conv, 0)
    assert L["swap"].rule_for("c", conv, 0) == Rule(Store.KEEP, offload=True)


def test_greedy_allocation():
    """Two layers of equal size, sensitivities 1 and 10000: the sensitive one keeps its bits."""
    bits = act.AutoPrecision.allocate({"a": 1.0, "b": 1e4}, {"a": 100, "b": 100}, 4.5)
    assert bits == {"a": 1, "b": 8}
    even = act.AutoPrecision.allocate({"a": 1.0, "b": 1.0}, {"a": 100, "b": 100}, 2.0)
    assert even == {"a": 2, "b": 2}
    assert act.AutoPrecision.allocate({"a": 1.0}, {"a": 10}, 1.0) == {"a": 1}


def _train_steps(model, steps, context):
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.rand(32, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        with context():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_auto_precision_allocates_the_budget():
    torch.manual_seed(0)
    model = TinyResNet()
    _train_steps(model, 2, lambda: act.compress(model, policy="L3"))  # the 2nd solves
    auto = act.auto_precision(model)
    assert auto.allocation and set(auto.allocation.values()) <= {1, 2, 4, 8}
    sizes = auto._numel
    avg = sum(auto.allocation[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert avg <= 2.0
    assert all(n.startswith(("stem", "layer1", "fc")) for n in auto.allocation)


def test_qmodule_keeps_weights_and_state_dict():
    torch.manual_seed(0)
    model = TinyResNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = act.QModule(model)
    assert q.model is model and list(q.parameters()) == list(model.parameters())
    assert q.state_dict().keys() == before.keys()
    assert all(torch.equal(q.state_dict()[k], v) for k, v in before.items())
    _train_steps(q, 2, lambda: _null())
    assert q.report is not None and q.report.ratio < 0.5
    q.eval()
    with torch.no_grad():
        out = q(torch.rand(4, 1, 8, 8))
    assert out.shape == (4, 10)
    fresh = TinyResNet()
    fresh.load_state_dict(q.state_dict())
    q.load_state_dict(fresh.state_dict())
    with pytest.raises(TypeError):
        act.QModule(3)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _variance_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(64, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
               for _ in range(4)]
    return model, batches, lambda m, b: F.cross_entropy(m(b[0]), b[1])


def test_gradient_variance_warns_when_compression_dominates():
    model, batches, loss_fn = _variance_setup()
    pol = Policy(default=1, min_numel=0)
    with pytest.warns(act.CompressionVarianceWarning, match="minibatch variance"):
        r = act.gradient_variance(model, loss_fn, batches, k=3, policy=pol, threshold=0.0)
    assert r.quant_var > 0 and r.sample_var > 0 and r.batches == 4 and r.k == 3


def test_gradient_variance_orders_bit_widths():
    """8-bit codes add far less variance than 1-bit codes, and keeping is exact."""
    model, batches, loss_fn = _variance_setup()
    v1 = act.gradient_variance(model, loss_fn, batches, policy=Policy(default=1, min_numel=0),
                               threshold=float("inf"))
    v8 = act.gradient_variance(model, loss_fn, batches, policy=Policy(default=8, min_numel=0))
    v0 = act.gradient_variance(model, loss_fn, batches, policy="L0")
    assert v8.quant_var < v1.quant_var / 100
    assert v8.ratio < 0.1
    assert v0.quant_var == 0 and v0.bias == 0
    with pytest.raises(ValueError):
        act.gradient_variance(model, loss_fn, batches[:1])
    with pytest.raises(ValueError):
        act.gradient_variance(model, loss_fn, batches, k=1)
