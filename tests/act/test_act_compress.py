"""``lowbit.act.compress``: exactness where promised, storage bounds, dedupe, parameters,
seeds, in-place checks, the report."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.act as act
from lowbit.act.policy import EXACT
from _act_models import TinyGPT, TinyResNet

KEEP_ALL = act.Policy(default="keep", min_numel=0)
EXACT_ONLY = act.Policy(default="keep", overrides=EXACT, min_numel=0)


def _cnn_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)


def _gpt_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (8, 16), generator=g), torch.randint(0, 50, (8, 16),
                                                                     generator=g)


def _models():
    torch.manual_seed(0)
    return {"cnn": (TinyResNet(p=0.3), _cnn_batch), "gpt": (TinyGPT(50, 16, d=32), _gpt_batch)}


def _loss(model, x, y):
    out = model(x)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _grads(model, batch, context, *, autocast=False):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same dropout masks in every run
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), context as report:
        loss = _loss(model, *batch)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()], report


class _Plain:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


@pytest.mark.parametrize("name", ["cnn", "gpt"])
@pytest.mark.parametrize("policy,autocast", [(KEEP_ALL, False), (KEEP_ALL, True),
                                             ("L0", True), (EXACT_ONLY, False),
                                             (EXACT_ONLY, True)],
                         ids=["keep", "keep-autocast", "L0-autocast", "exact",
                              "exact-autocast"])
def test_exact_policies_give_bit_identical_gradients(name, policy, autocast):
    """Keeping everything, or storing only what lowbit stores exactly (ReLU/LeakyReLU sign
    masks, dropout masks, max-pool shape and int8 indices), changes no gradient bit."""
    model, batch = _models()[name]
    want, _ = _grads(model, batch(), _Plain(), autocast=autocast)
    got, report = _grads(model, batch(), act.compress(model, policy=policy), autocast=autocast)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    if policy is EXACT_ONLY and name == "cnn":
        assert {"mask", "pool", "shape"} <= set(report.by_store)
        assert report.held_bytes < report.saved_bytes


def test_average_pooling_inputs_are_stored_by_shape():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AvgPool2d(2), nn.Conv2d(8, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    batch = (torch.randn(16, 3, 14, 14), torch.randint(0, 4, (16,)))
    want, _ = _grads(model, batch, _Plain())
    got, report = _grads(model, batch, act.compress(model, policy=EXACT_ONLY))
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    # AvgPool2d saves its input; AdaptiveAvgPool2d(1) runs as a mean on the CPU (saves none)
    assert report.by_store["shape"].tensors >= 1 and report.by_store["shape"].held == 0


def test_loss_and_log_softmax_outputs_are_kept():
    """The loss outside the model, and log-softmax outputs anywhere (their backward
    exponentiates them), are kept; only the linear's input is compressed."""
    lin = nn.Linear(64, 100)
    x, y = torch.randn(256, 64), torch.randint(0, 100, (256,))
    pol = act.Policy(default=2, min_numel=0)
    for model in (lin, None):
        with act.compress(model, policy=pol) as report:
            loss = F.cross_entropy(lin(x), y)
        loss.backward()
        assert report.by_store["bits2"].tensors == 1
        assert report.by_store["keep"].numel >= 256 * 100


@pytest.mark.parametrize("bits,bound", [(2, 0.135), (4, 0.26)])
def test_compressed_tensors_hold_the_promised_bytes(bits, bound):
    """Measured from the records actually held: b-bit tensors against their bf16 bytes."""
    model, batch = _models()["cnn"]
    model = model.bfloat16()
    x, y = batch()
    with act.compress(model, bits=bits) as report:
        loss = _loss(model, x.bfloat16(), y)
    tally = report.by_store[f"bits{bits}"]
    assert tally.tensors >= 5
    assert tally.held / (2 * tally.numel) <= bound
    loss.backward()


def test_report_counts_and_table():
    model, batch = _models()["cnn"]
    with act.compress(model, bits=2, policy=act.Policy(default=2, overrides=EXACT,
                                                        min_numel=0)) as report:
        loss = _loss(model, *batch())
    loss.backward()
    assert report.parameters > 0
    assert 0 < report.held_bytes < report.saved_bytes / 6
    assert sum(b.saved for b in report.by_module.values()) == report.saved_bytes
    assert sum(b.held for b in report.by_module.values()) == report.held_bytes
    assert "layer1.0.conv1" in report.by_module and "total" in report.table()
    assert report.to_dict()["saved_bytes"] == report.saved_bytes


def test_shared_input_is_stored_once():
    """q, k and v projections save the same input: one packed copy (T8 of the research note)."""
    x = torch.randn(64, 256, requires_grad=True)
    lin = [nn.Linear(256, 256) for _ in range(3)]
    with act.compress(bits=2) as report:
        h = torch.tanh(x)
        out = sum(l(h) for l in lin)
    out.sum().backward()
    packed = report.by_store["bits2"]
    assert packed.tensors == 1  # tanh's output, saved by tanh and by the three linears
    assert report.saved_bytes == 64 * 256 * 4


def test_parameters_and_autocast_casts_are_never_compressed():
    torch.manual_seed(0)
    lin = nn.Linear(128, 128)
    x = torch.randn(64, 128)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with act.compress(bits=1, policy=act.Policy(default=1, min_numel=0)) as report:
                y = lin(x.requires_grad_())
        assert report.parameters >= 1
        # dX = dY · W uses the weight: exact only if the weight (or its bf16 cast) was kept
        gx, = torch.autograd.grad(y.float().sum(), x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            want, = torch.autograd.grad(lin(x).float().sum(), x)
        assert torch.equal(gx, want)


def test_model_storage_rule_catches_frozen_parameters():
    lin = nn.Linear(64, 64)
    lin.weight.requires_grad_(False)
    w = lin.weight.detach()  # a plain tensor sharing the parameter's storage
    x = torch.randn(256, 64, requires_grad=True)
    with act.compress(lin, bits=1, policy=act.Policy(default=1, min_numel=0)) as report:
        y = x @ w.t()
    gx, = torch.autograd.grad(y.sum(), x)
    assert torch.equal(gx, torch.ones(256, 64) @ lin.weight)
    assert report.parameters == 1


def test_seeds_reproduce_and_leave_the_global_generator_alone():
    model, batch = _models()["cnn"]
    a, _ = _grads(model, batch(), act.compress(model, bits=2, seed=7))
    b, _ = _grads(model, batch(), act.compress(model, bits=2, seed=7))
    c, _ = _grads(model, batch(), act.compress(model, bits=2, seed=8))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))

    def draw(context):
        torch.manual_seed(1)
        with context:
            torch.randn(256, 64, requires_grad=True).tanh().sum()
        return torch.rand(3)

    assert torch.equal(draw(act.compress(bits=2, policy=act.Policy(default=2, min_numel=0))),
                       draw(_Plain()))


def test_in_place_edit_of_a_kept_tensor_is_detected():
    x = torch.randn(10, requires_grad=True)
    with act.compress(policy=KEEP_ALL):
        y = x.exp()  # saves its output
    y.add_(1)
    with pytest.raises(RuntimeError, match="inplace operation"):
        y.sum().backward()


def test_packed_tensors_are_snapshots():
    """A compressed copy is taken at save time: a later in-place edit cannot reach it."""
    x = torch.randn(64, 64)
    w = torch.randn(64, 64, requires_grad=True)
    with act.compress(bits=8, policy=act.Policy(default=8, min_numel=0), seed=3):
        y = x @ w
    gw_before = torch.autograd.grad(y.sum(), w, retain_graph=True)[0]
    x.mul_(100)
    gw_after = torch.autograd.grad(y.sum(), w)[0]
    assert torch.equal(gw_before, gw_after)


def test_weight_gradient_is_unbiased():
    """dW = dYᵀ X̂ is linear in X̂: its mean over S seeds is within 5 standard errors."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    w = torch.randn(16, 8, generator=g, requires_grad=True)
    dy = torch.randn(512, 8, generator=g)
    exact, = torch.autograd.grad(x @ w, w, dy)
    S = 100
    samples = []
    for s in range(S):
        with act.compress(bits=2, policy=act.Policy(default=2, min_numel=0), seed=s):
            y = x @ w
        samples.append(torch.autograd.grad(y, w, dy)[0])
    samples = torch.stack(samples).double()
    se = samples.std(0) / math.sqrt(S)
    assert torch.all((samples.mean(0) - exact.double()).abs() <= 5 * se + 1e-5)


def test_functional_ops_are_recognised_without_a_model():
    x = torch.randn(8, 4, 16, 16, requires_grad=True)
    with act.compress(bits=2, policy=act.Policy(default=2, overrides=EXACT, min_numel=0)) as r:
        y = act.functional.max_pool2d(act.functional.relu(x * 2), 2)
        y = act.functional.dropout(y, 0.5)
    assert {"mask", "pool", "shape"} <= set(r.by_store)
    torch.manual_seed(0)
    g, = torch.autograd.grad(y.sum(), x)
    assert g.shape == x.shape


def test_offload_is_a_no_op_for_cpu_tensors():
    x = torch.randn(64, 64, requires_grad=True)
    pol = act.Policy(default=act.Rule("bits", 2, offload=True), min_numel=0)
    with act.compress(policy=pol) as report:
        y = x.tanh()
    y.sum().backward()
    assert report.offloaded_bytes == 0 and report.held_bytes > 0


@pytest.mark.parametrize("kwargs,err", [
    (dict(bits=3), ValueError), (dict(group_size=100), ValueError), (dict(policy=5), TypeError),
    (dict(policy="L9"), ValueError), (dict(policy="L3"), ValueError),
    (dict(seed=-1), ValueError), (dict(auto=3), TypeError),
])
def test_validation(kwargs, err):
    with pytest.raises(err):
        act.compress(**kwargs)
    with pytest.raises(TypeError):
        act.compress(model=3)


@pytest.mark.gpu
def test_gpu_offload_and_no_host_sync():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = TinyResNet().cuda()
    x, y = (t.cuda() for t in _cnn_batch())
    pol = act.Policy(default=act.Rule("bits", 2, offload=True), overrides=EXACT, min_numel=0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with act.compress(model, policy=pol) as report:
            loss = _loss(model, x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss.backward()
    assert report.offloaded_bytes > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.gpu
def test_gpu_swap_is_lossless():
    """ActNN's "swap" level offloads conv/linear/BatchNorm inputs as they are: exact."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(0)
    model = TinyResNet(p=0.0).cuda()
    batch = tuple(t.cuda() for t in _cnn_batch())
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True  # the same conv backward algorithm both times
    try:
        want, _ = _grads(model, batch, _Plain())
        got, report = _grads(model, batch, act.compress(model, policy="swap"))
    finally:
        torch.backends.cudnn.deterministic = deterministic
    assert report.offloaded_bytes > 0
    assert all(torch.equal(a, b) for a, b in zip(want, got))
