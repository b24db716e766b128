"""Every paper recipe on a CUDA device: a few digits steps train without NaN, and the first
step's loss equals the CPU's (the kernels give the same bits on both; the GEMMs do not, so
losses are compared with a tolerance).  ``lowbit train --device cuda`` writes its results.
Marked ``gpu``; skipped without CUDA.

Run on the GPU machine: ``PYTHONPATH=src python -m pytest -q -m gpu tests/recipes``.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import lowbit.recipes as R
from lowbit.cli import TrainConfig, main, train
from lowbit.cli._data import load
from lowbit.cli._models import build

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.usefixtures("no_tf32"),
]


def _first_losses(name: str, device: str, steps: int = 3):
    data = load("digits")
    cfg = TrainConfig(recipe=name, data="digits").resolved()
    model = build(cfg.model, data, seed=0).to(device)
    prepared = R.get(name).prepare(model, seed=0)
    opt = prepared.make_optimizer(prepared.model.parameters())
    x, y = data.split.x_train[:64].to(device), data.split.y_train[:64].to(device)
    losses = []
    for _ in range(steps):
        with prepared.context():
            loss = F.cross_entropy(prepared.model(x), y)
        opt.zero_grad()
        prepared.backward(loss, opt)
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", [n for n in R.names() if n != "ibm8"] + ["ibm8"])
def test_recipe_trains_on_the_gpu_like_on_the_cpu(name):
    gpu = _first_losses(name, "cuda")
    assert all(math.isfinite(v) for v in gpu), gpu
    cpu = _first_losses(name, "cpu", steps=1)
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-3), (gpu, cpu)


def test_lowbit_train_on_cuda_writes_results(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "mxfp8", "--data", "digits", "--epochs", "1",
                 "--steps-per-epoch", "5", "--device", "cuda", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["device"].startswith("cuda")
    assert math.isfinite(result["final"]["test_loss"])
    assert result["final"]["peak_memory_mb"] > 0


def test_demo_quick_on_cuda(tmp_path):
    assert main(["demo", "--quick", "--device", "cuda", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert (tmp_path / "results.json").is_file()
