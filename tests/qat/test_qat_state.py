"""The mode state machine: switches per role, independence from train()/eval(), restoration."""

import pytest
import torch
from torch import nn

from lowbit.qat import AffineQuantizer, QuantMode, get_mode, quant_mode, set_mode

# (weight quantize, act quantize, weight observe, act observe), TorchQuant's table
TABLE = {
    "bypass": (0, 0, 0, 0), "qat_weight": (1, 0, 1, 0), "qat_act": (0, 1, 0, 1),
    "qat": (1, 1, 1, 1), "calibrate": (0, 0, 1, 1), "calibrate_weight": (0, 0, 1, 0),
    "calibrate_act": (0, 0, 0, 1), "eval_weight": (1, 0, 0, 0), "eval_act": (0, 1, 0, 0),
    "eval": (1, 1, 0, 0),
}


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = AffineQuantizer(4, symmetric=True, role="weight")
        self.a = AffineQuantizer(4)


def test_table_has_ten_modes():
    assert {m.value for m in QuantMode} == set(TABLE)


@pytest.mark.parametrize("mode", list(TABLE))
def test_switches_follow_the_table(mode):
    m = Pair()
    set_mode(m, mode)
    wq, aq, wo, ao = TABLE[mode]
    assert (m.w.quantizing, m.a.quantizing, m.w.observing, m.a.observing) == \
        (bool(wq), bool(aq), bool(wo), bool(ao))
    assert get_mode(m) is QuantMode(mode)


@pytest.mark.parametrize("mode", list(TABLE))
def test_behaviour_of_each_mode(mode):
    m = Pair()
    x = torch.randn(20, generator=torch.Generator().manual_seed(0)) * 3
    with quant_mode(m, "calibrate"):  # give both a range first
        m.w(x)
        m.a(x)
    count = int(m.a.observer.count)
    set_mode(m, mode)
    y = m.a(x * 2)
    _, aq, _, ao = TABLE[mode]
    assert int(m.a.observer.count) == count + ao
    if aq:
        assert len(torch.unique(y)) <= 16 and not torch.equal(y, x * 2)
    else:
        assert torch.equal(y, x * 2)


def test_bypass_returns_the_input_object():
    m = Pair()
    set_mode(m, "bypass")
    x = torch.randn(5)
    assert m.a(x) is x and m.w(x) is x


def test_train_eval_do_not_change_the_mode():
    m = Pair()
    set_mode(m, "eval")
    m.train()
    assert get_mode(m) is QuantMode.EVAL
    m.eval()
    set_mode(m, "qat")
    assert get_mode(m) is QuantMode.QAT


def test_context_manager_restores_per_quantizer_switches_on_error():
    m = Pair()
    set_mode(m, "qat")
    m.w.observing = False  # a custom per-quantizer state
    with pytest.raises(RuntimeError):
        with quant_mode(m, "bypass"):
            assert get_mode(m) is QuantMode.BYPASS
            raise RuntimeError("boom")
    assert (m.w.observing, m.w.quantizing, m.a.observing, m.a.quantizing) == \
        (False, True, True, True)
    assert get_mode(m) is None  # mixed switches match no mode


def test_new_quantizers_start_in_qat_and_bad_modes_raise():
    assert get_mode(Pair()) is QuantMode.QAT
    assert get_mode(nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="mode must be one of"):
        set_mode(Pair(), "train")
