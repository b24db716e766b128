"""The embedded datasets: shapes, the fixed stratified split, determinism and bad input."""

import pytest
import torch

from lowbit import data


def test_digits_split_is_stratified_and_fixed():
    s = data.digits()
    assert s.x_train.shape == (1438, 1, 8, 8) and s.x_test.shape == (359, 1, 8, 8)
    assert 0.0 <= float(s.x_train.min()) and float(s.x_train.max()) == 1.0
    counts = torch.bincount(s.y_test, minlength=10)
    total = torch.bincount(torch.cat([s.y_train, s.y_test]), minlength=10)
    # each class contributes round(20%) of its own images to the test split
    assert torch.equal(counts, torch.round(total.double() * 0.2).long())
    again = data.digits(flat=True)
    assert torch.equal(again.x_train.reshape(-1, 1, 8, 8), s.x_train)
    assert torch.equal(again.y_test, s.y_test)


def test_text_windows_shift_by_one():
    split, vocab = data.text(chars=20_000, block=32)
    assert split.x_train.shape[1] == 32 and len(vocab) == 97
    assert torch.equal(split.x_train[:, 1:], split.y_train[:, :-1])
    assert int(split.x_train.max()) < len(vocab)


def test_synthetic_is_deterministic():
    a, b = data.synthetic(seed=3), data.synthetic(seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, data.synthetic(seed=4).x_train)


@pytest.mark.parametrize("kwargs", [{"chars": 10}, {"block": 1}, {"chars": "x"}])
def test_text_bad_input(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        data.text(**kwargs)


def test_bad_flags():
    with pytest.raises(TypeError, match="flat"):
        data.digits(flat=1)
    with pytest.raises(ValueError, match="classes"):
        data.synthetic(classes=1)
