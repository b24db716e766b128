"""Whole-model preparation: torch.fx conversion of ResNet-18 and MobileNetV2 (local replicas,
and torchvision's in the slow tier), bypass bit-identity, the module-swap fallback."""

import copy
import importlib.util

import pytest
import torch
from torch import fx, nn

from _qat_models import MobileNetV2, ResNet18, randomize_bn
from lowbit.qat import (
    ConvertMethod, FusedConv2d, FusedLinear, QATConfig, QOp, Quantizer, QuantizerSpec, QuantMode,
    TracingFallbackWarning, get_mode, prepare, quant_mode, set_mode,
)


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def _check_bypass_identical(model, x):
    """Bypass mode equals the float model bit for bit, in eval and in train (BN stats too)."""
    model = randomize_bn(model)
    q = prepare(model, QATConfig(mode="bypass"), example_inputs=x[:1])
    for training in (False, True):
        ref = copy.deepcopy(model).train(training)
        q.train(training)
        torch.manual_seed(0)  # the same dropout masks
        y = q(x)
        torch.manual_seed(0)
        assert torch.equal(y, ref(x))
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    qbns = [m for m in q.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(qbns) and all(torch.equal(a.running_mean, b.running_mean)
                                         for a, b in zip(bns, qbns))
    return q


def test_resnet18_fx_conversion():
    # width 16 keeps torchvision's ResNet-18 structure at 1/16 of its compute (fast tier);
    # the full-width model runs in test_resnet18_full_width (slow tier)
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, width=16)
    x = torch.randn(2, 3, 32, 32)
    q = _check_bypass_identical(model, x)
    assert isinstance(q, fx.GraphModule)
    assert _count(q, FusedConv2d) == 20 and _count(q, FusedLinear) == 1
    assert not any(type(m) is nn.BatchNorm2d for _, m in q.named_children())
    assert all(m.bn is not None for m in q.modules() if isinstance(m, FusedConv2d))
    # the residual adds became QOps with the block's final ReLU fused in
    qops = [m for m in q.modules() if isinstance(m, QOp)]
    assert len(qops) == 8 and all(isinstance(m.act, nn.ReLU) for m in qops)
    # weights are kept: the fused layer holds the original values
    assert torch.equal(q.get_submodule("layer1.0.conv1").layer.weight,
                       model.layer1[0].conv1.weight)
    # QAT: outputs move, gradients reach the float weights and BN parameters
    set_mode(q, "qat")
    q.train()
    ref = copy.deepcopy(model).train()
    y = q(x)
    assert not torch.equal(y, ref(x))
    y.square().mean().backward()
    conv1 = q.get_submodule("conv1")
    assert conv1.layer.weight.grad is not None and conv1.bn.weight.grad is not None
    assert conv1.input_quantizer is None and "x_quantizer" in dict(q.named_children())


def test_resnet18_quantized_eval_is_close_to_float():
    torch.manual_seed(1)
    model = randomize_bn(ResNet18(num_classes=10, width=16)).eval()
    x = torch.randn(4, 3, 32, 32)
    q = prepare(model, example_inputs=x[:1]).eval()
    with quant_mode(q, "calibrate"):
        q(x)
    with quant_mode(q, "eval"):
        y = q(x)
    ref = model(x)
    rel = (y - ref).norm() / ref.norm()
    assert 0 < rel < 0.1  # int8 per-channel weights, int8 activations


def test_mobilenetv2_fx_conversion():
    torch.manual_seed(2)
    model = MobileNetV2()
    x = torch.randn(2, 3, 32, 32)
    q = _check_bypass_identical(model, x)
    convs = [m for m in q.modules() if isinstance(m, FusedConv2d)]
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(convs) == n_convs
    assert sum(isinstance(m.act, nn.ReLU6) for m in convs) == 2 + 2 * 5 - 1  # stem, head, blocks
    assert _count(q, QOp) == 2  # blocks with a residual connection
    assert "adaptive_avg_pool2d_quantizer" in dict(q.named_children())


def test_skip_patterns_keep_layers_float():
    model = ResNet18(num_classes=10, width=16)
    q = prepare(model, QATConfig(skip=("conv1", "fc", "bn1")), example_inputs=torch.randn(1, 3, 32, 32))
    assert type(q.get_submodule("conv1")) is nn.Conv2d and type(q.get_submodule("fc")) is nn.Linear
    assert isinstance(q.get_submodule("layer1.0.conv1"), FusedConv2d)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.body(x)
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = y * 2
        return self.head(y.mean((2, 3)))


def test_swap_fallback_warns_and_converts():
    model = randomize_bn(Untraceable())
    x = torch.randn(2, 3, 6, 6)
    with pytest.warns(TracingFallbackWarning, match="could not trace"):
        q = prepare(model, QATConfig(mode="bypass"), example_inputs=x)
    assert isinstance(q.body[0], FusedConv2d) and isinstance(q.body[1], nn.Identity)
    assert isinstance(q.head, FusedLinear) and q.body[0].input_quantizer is not None
    q.eval()
    assert torch.equal(q(x), model.eval()(x))
    set_mode(q, "qat")
    assert not torch.equal(q(x), model(x))
    with pytest.raises(Exception):
        prepare(model, QATConfig(method="fx"), example_inputs=x)
    swapped = prepare(model, QATConfig(method="swap"), example_inputs=x)  # no warning
    assert isinstance(swapped.head, FusedLinear)


def test_prepare_leaves_the_original_untouched():
    model = ResNet18(num_classes=10, width=16)
    before = copy.deepcopy(model.state_dict())
    q = prepare(model, example_inputs=torch.randn(1, 3, 32, 32))
    q.train()
    q(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert get_mode(q) is QuantMode.QAT


def test_config_parsing_and_validation():
    c = QATConfig(weight={"quantizer": "lsq", "bits": 4}, activation="pact", skip=["fc"],
                  mode="calibrate", method="swap")
    assert c.weight == QuantizerSpec("lsq", (("bits", 4),))
    assert c.weight.to_dict() == {"quantizer": "lsq", "bits": 4}
    assert c.activation == QuantizerSpec("pact") and c.skip == ("fc",)
    assert c.mode is QuantMode.CALIBRATE and c.method is ConvertMethod.SWAP
    assert isinstance(c.weight.build(__import__("lowbit.qat").qat.Role.WEIGHT), Quantizer)
    assert QATConfig.from_dict(c.to_dict()) == c
    assert c.to_dict()["weight"] == {"quantizer": "lsq", "bits": 4} and c.to_dict()["version"] == 1
    with pytest.raises(ValueError, match="version"):
        QATConfig.from_dict({"version": 2})
    with pytest.raises(ValueError, match="unknown"):
        QATConfig.from_dict({"bits": 2})
    with pytest.raises(TypeError):
        QATConfig(weight=8)
    with pytest.raises(ValueError):
        QATConfig(mode="train")
    with pytest.raises(TypeError):
        QATConfig(skip="fc")
    with pytest.raises(TypeError):
        QATConfig(share_inputs=1)
    with pytest.raises(TypeError):
        prepare(nn.Linear(2, 2), example_inputs=[torch.randn(1, 2)])


def test_lsq_config_on_mobilenet():
    model = MobileNetV2()
    x = torch.randn(2, 3, 32, 32)
    cfg = QATConfig(weight={"quantizer": "lsq", "bits": 4, "axis": 0},
                    activation={"quantizer": "lsq", "bits": 4})
    q = prepare(model, cfg, example_inputs=x[:1]).train()
    params = dict(q.named_parameters())
    assert params["features.0.0.weight_quantizer.scale"].shape == (16,)  # shaped at prepare
    q(x).sum().backward()
    assert params["features.0.0.output_quantizer.scale"].grad is not None


@pytest.mark.slow  # 11.7M weights fake-quantized per step: seconds on 2 CPU cores
def test_resnet18_full_width():
    torch.manual_seed(3)
    model = ResNet18(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    q = _check_bypass_identical(model, x)
    assert _count(q, FusedConv2d) == 20 and _count(q, QOp) == 8
    set_mode(q, "qat")
    q(x).sum().backward()


_HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.mark.slow  # torchvision has no CPU wheel for the CI torch; runs where it is installed
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models(name):
    if not _HAS_TORCHVISION:
        pytest.skip("torchvision is not installed (make TORCH=vision venv)")
    import torchvision

    model = getattr(torchvision.models, name)(num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    q = _check_bypass_identical(model, x)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert _count(q, FusedConv2d) == n_convs
    set_mode(q, "qat")
    q.train()
    q(x).sum().backward()
