"""torch.compile of converted models (slow tier): same values and gradients as eager."""

import copy

import pytest
import torch
from torch import nn

import lowbit.models as models
import lowbit.nn as lnn
from _nn_oracles import assert_same

pytestmark = [
    pytest.mark.slow,
    # torch's inductor import path touches torch.jit.script_method (torch's own deprecation)
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    # dynamo instantiates the autograd.Function classes it traces, which torch itself flags
    pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not "
                               "be instantiated:DeprecationWarning"),
    # dynamo reads .grad of the non-leaf activations it passes across a graph break
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf"),
]


def _step(model, x):
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    y = model(x)
    y.float().sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


def _cnn(norms=False):
    torch.manual_seed(23)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
              nn.Linear(8 * 4 * 4, 10), nn.LayerNorm(10)]
    return nn.Sequential(*[m for m in layers if norms or not isinstance(
        m, (nn.BatchNorm2d, nn.LayerNorm))])


NEAREST = lnn.Recipe(input="e4m3fn", weight="mxfp8_e4m3", grad_output="e5m2",
                     overrides={nn.BatchNorm2d: {"weight": "bf16"}, nn.LayerNorm: {}})


def test_fullgraph_compile_equals_eager():
    # GEMMs stay ATen calls and the quantizer is an opaque custom op: bit-identical
    model = lnn.convert(_cnn(), NEAREST.replace(overrides=()))
    x = torch.randn(4, 3, 4, 4)
    eager = _step(copy.deepcopy(model), x)
    assert_same(_step(torch.compile(model, fullgraph=True), x), eager)


def test_fullgraph_compile_with_norm_layers_is_close_to_eager():
    # inductor re-derives batch/layer norm, so their last bits (and what rounds from them)
    # may differ from eager's
    model = lnn.convert(_cnn(norms=True), NEAREST)
    x = torch.randn(4, 3, 4, 4)
    eager = _step(copy.deepcopy(model), x)
    got = _step(torch.compile(model, fullgraph=True), x)
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=0.07, atol=1e-3)


def test_stochastic_rounding_and_delayed_scaling_compile_and_match_eager():
    # power-of-two scales keep x / s exact, which inductor may compute as x * (1 / s)
    recipe = lnn.Recipe(input=lnn.Role("e4m3fn", rounding="stochastic"),
                        weight=lnn.Role("e4m3fn", scaling=lnn.Scaling(history=2, pow2=True)),
                        grad_output=lnn.Role("e5m2", rounding="stochastic"))
    model = lnn.convert(_cnn(), recipe, seed=4)
    twin = copy.deepcopy(model)
    compiled = torch.compile(model)
    graphs = []
    for _ in range(3):
        x = torch.randn(4, 3, 4, 4)
        assert_same(_step(compiled, x), _step(twin, x))
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[1] == graphs[2], "a new step must not recompile"


def test_gpt_compiles_with_quantized_attention():
    torch.manual_seed(24)
    model = models.get("gpt", vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)
    lnn.convert(model, lnn.Recipe(input="e4m3fn", weight="e4m3fn", grad_output="e5m2"))
    idx = torch.randint(0, 20, (2, 8))
    eager = model(idx)
    torch.testing.assert_close(torch.compile(model)(idx), eager, rtol=0.07, atol=1e-3)
