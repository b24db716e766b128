"""QAT on the embedded digits: a float CNN is trained, prepared, calibrated and fine-tuned with
fake quantization, then evaluated in the deployed ``eval`` mode (BatchNorm folded, weights and
activations quantized).  The slow tier averages three seeds against the issue's thresholds; the
fast tier runs one short seed with looser thresholds."""

import pytest
import torch
from torch import nn

import lowbit.data
import lowbit.qat as qat

DATA = lowbit.data.digits()
INT8 = qat.QATConfig()
LSQ4 = qat.QATConfig(weight={"quantizer": "lsq", "bits": 4, "axis": 0},
                     activation={"quantizer": "lsq", "bits": 4})


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 10))


def _train(model: nn.Module, epochs: int, lr: float, seed: int, batch: int = 64) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(DATA.y_train) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(DATA.y_train), generator=g)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(DATA.x_train[idx]), DATA.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def _accuracy(model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        return (model(DATA.x_test).argmax(1) == DATA.y_test).float().mean().item() * 100


def _float_model(seed: int, epochs: int) -> tuple:
    torch.manual_seed(seed)
    model = _net()
    _train(model, epochs, 1e-2, seed)
    return model, _accuracy(model)


def _qat(model: nn.Module, cfg: qat.QATConfig, epochs: int, seed: int) -> float:
    q = qat.prepare(model, cfg, example_inputs=DATA.x_train[:1])
    q.eval()
    with qat.quant_mode(q, "calibrate"):
        q(DATA.x_train[:256])
    _train(q, epochs, 2e-3, seed + 100)
    with qat.quant_mode(q, "eval"):
        return _accuracy(q)


def test_qat_digits_smoke():
    model, fp32 = _float_model(0, epochs=5)
    int8 = _qat(model, INT8, epochs=1, seed=0)
    lsq4 = _qat(model, LSQ4, epochs=2, seed=0)
    assert fp32 > 95
    assert int8 >= fp32 - 2
    assert lsq4 >= fp32 - 5


@pytest.mark.slow  # three seeds of float training plus two QAT runs each: ~30 s on 2 cores
def test_qat_digits_accuracy_three_seeds():
    fp32, int8, lsq4 = [], [], []
    for seed in range(3):
        model, acc = _float_model(seed, epochs=10)
        fp32.append(acc)
        int8.append(_qat(model, INT8, epochs=3, seed=seed))
        lsq4.append(_qat(model, LSQ4, epochs=3, seed=seed))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(int8) >= mean(fp32) - 1, (fp32, int8)
    assert mean(lsq4) >= mean(fp32) - 3, (fp32, lsq4)
