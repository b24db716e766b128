"""Normalisation layers and embeddings: fp32 equality, WAGEUBN's decomposed batch norm
against its formula (values, gradients, running statistics), embeddings."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
from _nn_oracles import FP32_EVERYWHERE, assert_same, converted, grad_q, run, ste

NO_WAGEUBN = FP32_EVERYWHERE.replace(stats=None, normalized=None)

CASES = {
    "bn2d": (lambda: nn.BatchNorm2d(4), lambda: torch.randn(3, 4, 5, 5)),
    "bn1d": (lambda: nn.BatchNorm1d(4), lambda: torch.randn(6, 4)),
    "bn1d-3d": (lambda: nn.BatchNorm1d(4), lambda: torch.randn(3, 4, 5)),
    "bn2d-cumulative": (lambda: nn.BatchNorm2d(4, momentum=None), lambda: torch.randn(3, 4, 2, 2)),
    "bn2d-untracked": (lambda: nn.BatchNorm2d(4, track_running_stats=False),
                       lambda: torch.randn(3, 4, 2, 2)),
    "bn2d-noaffine": (lambda: nn.BatchNorm2d(4, affine=False), lambda: torch.randn(3, 4, 2, 2)),
    "layernorm": (lambda: nn.LayerNorm(6), lambda: torch.randn(3, 4, 6)),
    "layernorm-2d-shape": (lambda: nn.LayerNorm((4, 6)), lambda: torch.randn(3, 4, 6)),
    "layernorm-nobias": (lambda: nn.LayerNorm(6, bias=False), lambda: torch.randn(3, 6)),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_formats_equal_torch_exactly(case, training):
    build, make = CASES[case]
    module, x = build(), make()
    module.train(training)
    q_module = converted(module, NO_WAGEUBN, opt_in=True)
    g = torch.randn_like(x)
    assert_same(run(q_module, [x], g), run(module, [x], g))
    assert_same(list(q_module.buffers())[:len(list(module.buffers()))], list(module.buffers()))


WAGEUBN = dict(input="fixed<8,4>", weight="fixed<8,6>", bias="fixed<8,6>",
               stats="fixed<16,10>", normalized="fixed<8,5>", output="fixed<8,4>",
               grad_output="e5m2", grad_input="e4m3", grad_weight="bf16")


def _bn_oracle(x, gamma, beta, rm, rv, r, training, momentum=0.1, eps=1e-5):
    """WAGEUBN batch norm in plain torch (rm, rv updated in place when training)."""
    xq = ste(grad_q(x, r["grad_input"]), r["input"])
    w = ste(grad_q(gamma, r["grad_weight"]), r["weight"])
    b = ste(grad_q(beta, r["grad_weight"]), r["bias"])
    if training:
        mean, var = xq.mean((0, 2, 3)), xq.var((0, 2, 3), unbiased=False)
        n = xq.numel() / xq.shape[1]
        with torch.no_grad():
            rm.copy_(ste(rm * (1 - momentum) + mean * momentum, r["stats"]))
            rv.copy_(ste(rv * (1 - momentum) + var * (momentum * n / (n - 1)), r["stats"]))
    else:
        mean, var = rm, rv
    shape = (1, -1, 1, 1)
    mq = ste(mean, r["stats"]).reshape(shape)
    sq = ste(torch.sqrt(var + eps), r["stats"]).reshape(shape)
    y = ste((xq - mq) / sq, r["normalized"]) * w.reshape(shape) + b.reshape(shape)
    return grad_q(ste(y, r["output"]), r["grad_output"])


@pytest.mark.parametrize("training", [True, False])
def test_wageubn_batchnorm_follows_the_formula(training):
    torch.manual_seed(7)
    module = nn.BatchNorm2d(5)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 2.0)
    module.train(training)
    x, g = torch.randn(4, 5, 3, 3) * 2, torch.randn(4, 5, 3, 3)
    q_module = converted(module, lnn.Recipe(**WAGEUBN), opt_in=True)
    got = run(q_module, [x], g)

    xr = x.clone().requires_grad_()
    gamma = module.weight.detach().clone().requires_grad_()
    beta = module.bias.detach().clone().requires_grad_()
    rm, rv = module.running_mean.clone(), module.running_var.clone()
    y = _bn_oracle(xr, gamma, beta, rm, rv, WAGEUBN, training)
    y.backward(g)
    assert_same(got, (y.detach(), [xr.grad, gamma.grad, beta.grad]))
    assert_same([q_module.running_mean, q_module.running_var], [rm, rv])
    assert int(q_module.num_batches_tracked) == int(training)


def test_wageubn_layernorm_follows_the_formula():
    torch.manual_seed(8)
    r = dict(WAGEUBN, stats="fixed<16,12>")
    module = nn.LayerNorm(6)
    x, g = torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    got = run(converted(module, lnn.Recipe(**r), opt_in=True), [x], g)
    xr = x.clone().requires_grad_()
    gamma = module.weight.detach().clone().requires_grad_()
    beta = module.bias.detach().clone().requires_grad_()
    xq = ste(grad_q(xr, r["grad_input"]), r["input"])
    mean = xq.mean(-1, keepdim=True)
    var = xq.var(-1, unbiased=False, keepdim=True)
    xhat = ste((xq - ste(mean, r["stats"])) / ste(torch.sqrt(var + 1e-5), r["stats"]),
               r["normalized"])
    w = ste(grad_q(gamma, r["grad_weight"]), r["weight"])
    b = ste(grad_q(beta, r["grad_weight"]), r["bias"])
    y = grad_q(ste(xhat * w + b, r["output"]), r["grad_output"])
    y.backward(g)
    assert_same(got, (y.detach(), [xr.grad, gamma.grad, beta.grad]))


def test_wageubn_roles_land_on_statistics_and_normalized_values():
    module = converted(nn.BatchNorm2d(3), lnn.Recipe(**WAGEUBN), opt_in=True)
    with lnn.trace() as events:
        module(torch.randn(2, 3, 2, 2, requires_grad=True)).sum().backward()
    landed = {(e.role, e.gemm) for e in events}
    assert {("stats", "mean"), ("stats", "std"), ("stats", "running_mean"),
            ("stats", "running_var"), ("normalized", "forward"), ("grad_bias", "backward"),
            ("grad_weight", "backward"), ("grad_input", "backward"),
            ("grad_output", "backward")} <= landed


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_roles_follow_the_formula(padding_idx):
    torch.manual_seed(9)
    r = dict(weight="e4m3fn", output="bf16", grad_output="e5m2", grad_weight="bf16")
    module = nn.Embedding(10, 6, padding_idx=padding_idx)
    idx = torch.tensor([[0, 3, 3], [9, 1, 0]])
    g = torch.randn(2, 3, 6)
    y_got, (dw_got,) = run(converted(module, lnn.Recipe(**r), opt_in=True), [idx], g)
    w = module.weight.detach().clone().requires_grad_()
    y = F.embedding(idx, ste(grad_q(w, r["grad_weight"]), r["weight"]), padding_idx)
    y = grad_q(ste(y, r["output"]), r["grad_output"])
    y.backward(g)
    assert_same([y_got, dw_got], [y.detach(), w.grad])


def test_embedding_fp32_roles_equal_torch_and_max_norm_renormalises_the_parameter():
    module = nn.Embedding(8, 4, max_norm=0.5)
    with torch.no_grad():
        module.weight.mul_(3)
    q_module = converted(module, FP32_EVERYWHERE, opt_in=True)
    idx = torch.tensor([1, 2, 2, 5])
    g = torch.randn(4, 4)
    assert_same(run(q_module, [idx], g), run(module, [idx], g))
    assert_same(q_module.weight.detach(), module.weight.detach())
    assert q_module.weight.detach()[[1, 2, 5]].norm(dim=1).max() <= 0.5 + 1e-6


def test_sparse_embedding_rejects_a_grad_weight_role():
    with pytest.raises(ValueError, match="sparse"):
        converted(nn.Embedding(4, 2, sparse=True), lnn.Recipe(grad_weight="bf16"), opt_in=True)
