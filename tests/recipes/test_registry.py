"""``lowbit.recipes``' registry: names, lookup, the optimizer spec, the training hints."""

import pytest
import torch

import lowbit.recipes as R
from lowbit.recipes import OptimizerSpec, PaperRecipe


def test_names_in_registration_order_and_lookup_errors():
    names = R.names()
    assert names[:2] == ("fp32", "ibm8") and {"wage", "wageubn", "nvfp4", "actnn_l3"} <= set(names)
    assert all(R.get(n).name == n for n in names)
    with pytest.raises(ValueError, match="unknown recipe 'nope'; known: fp32"):
        R.get("nope")
    with pytest.raises(TypeError, match="recipe name must be a str"):
        R.get(3)
    with pytest.raises(ValueError, match="already registered"):
        R.register(PaperRecipe("fp32", "another", "-"))


def test_optimizer_spec_checks_its_options():
    with pytest.raises(ValueError, match="optimizer name must be one of"):
        OptimizerSpec("lion")
    with pytest.raises(ValueError, match="unknown options \\['momentum'\\]"):
        OptimizerSpec("sgd", {"lr": 0.1}, {"momentum": 0.9})
    p = torch.nn.Parameter(torch.zeros(3))
    opt = OptimizerSpec("adam", {"lr": 1e-3}).build([p], lr=0.5)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.5


def test_lr_milestones_and_epochs_scale():
    r = PaperRecipe("x", "t", "-", lr_milestones=((0.5, 0.1), (0.75, 0.01)), epochs_scale=2)
    assert [r.lr_factor(t, 100) for t in (0, 49, 50, 74, 75, 99)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    assert "x0.1 from 0.5 of the run" in r.describe() and "epochs: 2x" in r.describe()
    for bad in (((0.5, 0.1), (0.5, 0.2)), ((1.0, 0.1),), ((0.7, 0.1), (0.2, 0.1))):
        with pytest.raises(ValueError, match="fractions must increase"):
            PaperRecipe("x", "t", "-", lr_milestones=bad)
    with pytest.raises(ValueError, match="factors must be positive"):
        PaperRecipe("x", "t", "-", lr_milestones=((0.5, 0.0),))
    with pytest.raises(ValueError, match="epochs_scale must be positive"):
        PaperRecipe("x", "t", "-", epochs_scale=0)


def test_prepared_backward_scales_the_loss_of_a_low_precision_optimizer():
    model = torch.nn.Linear(2, 1, bias=False)
    prepared = R.get("hfp8").prepare(model, seed=0)
    opt = prepared.make_optimizer(model.parameters())
    scale = opt.loss_scale  # hfp8: dynamic loss scaling
    assert scale is not None and scale > 1
    x = torch.ones(1, 2)
    prepared.backward(prepared.model(x).sum(), opt)
    # The gradient holds S times the true one (x = 1, quantized exactly) until step() divides.
    assert torch.equal(model.weight.grad, torch.full((1, 2), scale))
    plain = torch.nn.Linear(2, 1)
    R.get("fp32").prepare(plain).backward(plain(x).sum(), torch.optim.SGD(plain.parameters(), 1))
    assert torch.equal(plain.weight.grad, torch.ones(1, 2))
