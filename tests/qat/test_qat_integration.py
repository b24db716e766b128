"""lowbit.qat with the rest of lowbit: the model zoo (lowbit.models) and recipe roles naming a
QAT quantizer (lowbit.nn.recipe)."""

import copy
import warnings

import pytest
import torch

import lowbit.models
import lowbit.nn as lnn
import lowbit.qat as qat
from lowbit.nn import recipe


@pytest.mark.parametrize("name,adds", [("resnet20", 9), ("preact_resnet18", 8),
                                       ("vgg7", 0), ("mobilenetv2", 10)])
def test_model_zoo_fx_bypass_identical(name, adds):
    torch.manual_seed(0)
    model = lowbit.models.get(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # traced: no fallback warning
        q = qat.prepare(model, qat.QATConfig(mode="bypass"), example_inputs=x[:1]).eval()
    assert torch.equal(q(x), model(x))
    layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert sum(isinstance(m, (qat.FusedConv2d, qat.FusedLinear)) for m in q.modules()) == layers
    assert sum(isinstance(m, qat.QOp) for m in q.modules()) == adds
    qat.set_mode(q, "qat")
    q.train()
    q(x).sum().backward()


def test_gpt_falls_back_to_module_swap():
    model = lowbit.models.get("gpt").eval()
    x = torch.randint(0, 10, (2, 16))
    with pytest.warns(qat.TracingFallbackWarning):
        q = qat.prepare(model, qat.QATConfig(mode="bypass"), example_inputs=x[:1]).eval()
    assert torch.equal(q(x), model(x))
    assert sum(isinstance(m, qat.FusedLinear) for m in q.modules()) == \
        sum(isinstance(m, torch.nn.Linear) for m in model.modules())


def test_quantizers_are_registered_as_recipe_roles():
    assert set(qat.QUANTIZERS) <= set(recipe.quantizer_names())
    built = recipe.QuantizerRef("lsq", {"bits": 4, "role": "weight"}).build()
    assert isinstance(built, qat.LSQQuantizer) and built.role is qat.Role.WEIGHT


def test_recipe_role_quantizers_follow_the_state_machine():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    r = lnn.Recipe(weight={"quantizer": "lsq", "bits": 4, "role": "weight"},
                   input={"quantizer": "affine", "bits": 8})
    reference = copy.deepcopy(model)
    converted = lnn.convert(model, r)
    x = torch.randn(5, 8)
    assert len(list(qat.state.quantizers(converted))) == 2
    y = converted(x)
    y.sum().backward()
    scale = [p for n, p in converted.named_parameters() if n.endswith("scale")]
    assert len(scale) == 1 and scale[0].grad is not None  # LSQ's step size learns
    assert not torch.equal(y, reference(x))
    qat.set_mode(converted, "bypass")
    assert torch.equal(converted(x), reference(x))
