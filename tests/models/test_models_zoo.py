"""lowbit.models: shapes, published parameter counts, GPT's causality and tying, conversion,
and (slow tier) training to accuracy under low-precision recipes."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import lowbit.models as models
import lowbit.nn as lnn
from lowbit import data

SMALL = {
    "resnet20": dict(in_channels=1, width=4),
    "resnet56": dict(in_channels=1, width=2),
    "preact_resnet18": dict(in_channels=1, width=4),
    "vgg7": dict(in_channels=1, image_size=8, width=1 / 16),
    "mobilenetv2": dict(in_channels=1, width=0.25),
}

E4M3_E5M2 = lnn.Recipe(input="e4m3fn", weight="e4m3fn", grad_output="e5m2",
                       overrides={"first": None, "last": None})


def test_names_and_errors():
    assert set(models.names()) == set(SMALL) | {"gpt"}
    with pytest.raises(ValueError, match="unknown model"):
        models.get("resnet18")
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ImportError, match="torchvision"):
            models.get("torchvision.resnet18")


# resnet56 is resnet20 with more blocks: its parameter count is checked below
@pytest.mark.parametrize("name", sorted(set(SMALL) - {"resnet56"}))
def test_cnns_run_and_convert(name):
    torch.manual_seed(21)
    model = models.get(name, num_classes=7, **SMALL[name])
    x = torch.randn(4, 1, 8, 8)
    assert model(x).shape == (4, 7)
    lnn.convert(model, E4M3_E5M2)
    with lnn.trace() as events:
        model(x).sum().backward()
    gemms = {e.module for e in events}
    assert gemms and all(p.grad is not None for p in model.parameters())
    first = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    assert first not in gemms and "fc" not in gemms and "classifier.3" not in gemms


@pytest.mark.parametrize("name,kwargs,millions", [
    ("resnet20", {}, 0.27), ("resnet56", {}, 0.85), ("preact_resnet18", {}, 11.17),
])
def test_parameter_counts_match_the_papers(name, kwargs, millions):
    n = sum(p.numel() for p in models.get(name, **kwargs).parameters())
    assert round(n / 1e6, 2) == millions


def test_gpt_is_causal_tied_and_converts_its_attention():
    torch.manual_seed(22)
    model = models.get("gpt", vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16)
    assert model.head.weight is model.wte.weight
    idx = torch.randint(0, 30, (2, 10))
    out = model(idx)
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 30
    assert torch.equal(model(changed)[:, :6], out[:, :6])
    assert not torch.equal(model(changed)[:, 6:], out[:, 6:])
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 13, dtype=torch.long))
    lnn.convert(model, lnn.Recipe(input="bf16", weight="bf16", grad_output="bf16"))
    with lnn.trace() as events:
        F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    assert {"blocks.0.attn.attn.qk", "blocks.1.attn.attn.pv", "head"} <= {e.module
                                                                        for e in events}
    torch.testing.assert_close(model(idx), out, rtol=0.05, atol=0.05)


def _train_digits(model, recipe, epochs, lr=0.05, seed=0, max_steps=None):
    torch.manual_seed(seed)
    split = data.digits()
    x, y = torch.as_tensor(split.x_train).float(), torch.as_tensor(split.y_train).long()
    if recipe is not None:
        lnn.convert(model, recipe, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64)[:max_steps]:
            b = perm[i:i + 64]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[b]), y[b])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        xt = torch.as_tensor(split.x_test).float()
        acc = (model(xt).argmax(1) == torch.as_tensor(split.y_test)).float().mean().item()
    return losses, acc


def test_a_few_low_precision_steps_reduce_the_loss():
    model = models.get("vgg7", in_channels=1, image_size=8, width=1 / 16)
    losses, _ = _train_digits(model, E4M3_E5M2, epochs=1, lr=0.05, max_steps=10)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [
    None, E4M3_E5M2,
    lnn.Recipe(input="mxfp4", weight="mxfp4", grad_output="mxfp8_e5m2",
               overrides={"first": None, "last": None}),
    lnn.Recipe(input=lnn.Role("e4m3fn", scaling="tensor"),
               weight=lnn.Role("e4m3fn", scaling=lnn.Scaling("channel", history=4)),
               grad_output=lnn.Role("e5m2", rounding="stochastic", scaling="tensor")),
], ids=["fp32", "e4m3-e5m2", "mxfp4", "scaled-fp8"])
def test_resnet20_learns_digits_in_low_precision(recipe):
    model = models.get("resnet20", in_channels=1, width=4)
    _, acc = _train_digits(model, recipe, epochs=4)
    assert acc > 0.85, acc
