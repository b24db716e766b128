"""Converted models on a CUDA device: the quantized operands equal the CPU's bit for bit (the
kernels' cross-backend contract), state moves with ``.to()``, resume stays exact.  Marked
``gpu``; skipped without CUDA.

Run on the GPU machine: ``PYTHONPATH=src python -m pytest -q -m gpu tests/nn/test_nn_gpu.py``.
"""

import copy
import io

import pytest
import torch
from torch import nn

import lowbit.models as models
import lowbit.nn as lnn
from _nn_oracles import assert_same

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.usefixtures("no_tf32"),
]

CUDA = torch.device("cuda")
SR = "stochastic"


@pytest.mark.parametrize("recipe", [
    lnn.Recipe(input="e4m3fn", weight="mxfp4", grad_output=lnn.Role("e5m2", rounding=SR)),
    lnn.Recipe(input=lnn.Role("e4m3fn", scaling="row"), weight=lnn.Role(
        "int8", scaling=lnn.Scaling("channel", history=4, pow2=True)), grad_output="nvfp4"),
], ids=["mx-sr", "scaled"])
def test_quantized_operands_equal_the_cpus(recipe):
    torch.manual_seed(25)
    cpu = lnn.convert(nn.Linear(64, 48), recipe, seed=9)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x, g = torch.randn(32, 64), torch.randn(32, 48)
    events = {}
    for name, module, dev in (("cpu", cpu, "cpu"), ("gpu", gpu, CUDA)):
        xd = x.to(dev).requires_grad_()
        with lnn.trace() as events[name]:
            module(xd).backward(g.to(dev))
    assert [(e.role, e.gemm, e.seed) for e in events["cpu"]] == \
        [(e.role, e.gemm, e.seed) for e in events["gpu"]]
    if recipe.weight.scaling is not None:
        assert gpu.lowbit.weight.amax_history.device.type == "cuda"
        assert_same(gpu.lowbit.weight.amax_history.cpu(), cpu.lowbit.weight.amax_history)
    torch.testing.assert_close(gpu.weight.grad.cpu(), cpu.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("role", [
    lnn.Role("e4m3fn", rounding=SR, scaling="tensor"), lnn.Role("mxfp4", rounding=SR),
    lnn.Role("fixed<8,4>", rounding=SR, rbits=9), lnn.Role("e5m2", scaling="row"),
], ids=["fp8-sr-scaled", "mxfp4-sr", "fixed-sr", "fp8-row"])
def test_quantize_points_equal_the_cpus_bit_for_bit(role):
    cpu = lnn.convert(nn.Sequential(lnn.Quantize(forward=role, backward=role)), lnn.Recipe(),
                      seed=3)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x, g = torch.randn(33, 70) * 3, torch.randn(33, 70)
    outs = []
    for module, dev in ((cpu, "cpu"), (gpu, CUDA)):
        xd = x.to(dev).requires_grad_()
        y = module(xd)
        y.backward(g.to(dev))
        outs.append([y.detach().cpu(), xd.grad.cpu()])
    assert_same(outs[1], outs[0])


def test_gpt_trains_and_resumes_on_the_gpu():
    torch.manual_seed(26)
    model = models.get("gpt", vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    recipe = lnn.Recipe(input=lnn.Role("e4m3fn", rounding=SR), weight="e4m3fn",
                        grad_output=lnn.Role("e5m2", rounding=SR))
    model = lnn.convert(model.to(CUDA), recipe, seed=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [torch.randint(0, 40, (4, 16), device=CUDA) for _ in range(4)]

    def train(m, o, bs):
        for idx in bs:
            o.zero_grad()
            loss = nn.functional.cross_entropy(m(idx).flatten(0, 1), idx.flatten())
            loss.backward()
            o.step()

    train(model, opt, batches[:2])
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict()}, buf)
    train(model, opt, batches[2:])
    twin = lnn.convert(models.get("gpt", vocab_size=40, block_size=16, n_layer=2, n_head=2,
                                  n_embd=32).to(CUDA), recipe, seed=5)
    opt2 = torch.optim.AdamW(twin.parameters(), lr=1e-3)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    twin.load_state_dict(ckpt["m"])
    opt2.load_state_dict(ckpt["o"])
    train(twin, opt2, batches[2:])
    for a, b in zip(twin.parameters(), model.parameters()):
        assert_same(a, b)
