"""convert / unconvert: in place, keeping parameters, buffers, hooks, modes; override rules;
errors before anything changes."""

import copy
import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import lowbit.nn as lnn
from _nn_oracles import FP32_EVERYWHERE, assert_same


class Block(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn1(self.conv1(x))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.layer1 = Block(3)
        self.layer2 = Block(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.layer2(torch.relu(self.layer1(self.stem(x))))
        x = self.layer2(torch.relu(x))  # a module called twice in one forward
        return self.fc(self.pool(x).flatten(1))


def _who(model, recipe):
    chosen = lnn.resolve(model, recipe)
    return {n: (None if r is None else r.weight and repr(r.weight.format))
            for n, r in chosen.items()}


def test_override_precedence():
    model = Net()
    recipe = lnn.Recipe(
        weight="e4m3fn",
        overrides=[
            ("layer1", {"weight": "e5m2"}),          # ancestor: rule 5
            ("layer1.conv2", {"weight": "bf16"}),    # exact: rule 1
            (r"layer\d\.conv1", {"weight": "fp16"}),  # regex: rule 3
            ("last", None),                          # position: rule 2
            (nn.BatchNorm2d, {"weight": "fixed<8,6>"}),  # type: rule 4 (opts norms in)
            ("first", {"weight": "e3m4"}),
        ],
    )
    assert _who(model, recipe) == {
        "stem": "e3m4", "layer1.conv1": "fp16", "layer1.bn1": "fixed<8,6>",
        "layer1.conv2": "bf16", "layer2.conv1": "fp16", "layer2.bn1": "fixed<8,6>",
        "layer2.conv2": "e4m3fn", "fc": None,
    }


def test_norms_are_left_alone_unless_an_override_selects_them():
    model = Net()
    chosen = lnn.resolve(model, lnn.Recipe(weight="e4m3fn", overrides={"layer2": {}}))
    assert chosen["layer1.bn1"] is None and chosen["layer2.bn1"] is None
    assert chosen["layer1.conv1"] is not None


@pytest.mark.parametrize("key,match", [
    ("layer3", "matches no quantizable module"),
    ("pool", "matches no quantizable module"),
    (r"layer\d\.conv3", "matches no quantizable module"),
    ("layer(", "not a valid regular expression"),
    (nn.GRU, "matches no quantizable module"),
])
def test_override_keys_that_reach_nothing_are_errors(key, match):
    model = Net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        lnn.convert(model, lnn.Recipe(weight="e4m3fn", overrides={key: None}))
    assert not any(isinstance(m, lnn.QuantizedModule) for m in model.modules())
    assert_same(list(model.state_dict().values()), list(before.values()))


def test_first_and_last_need_a_gemm_module():
    with pytest.raises(ValueError, match="no GEMM module"):
        lnn.convert(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)),
                    lnn.Recipe(weight="bf16", overrides={"first": None}))


def test_a_module_error_leaves_the_whole_model_unchanged():
    model = nn.Sequential(nn.Linear(3, 3), nn.Conv3d(1, 1, 1))
    acc = {"acc": "bf16"}
    with pytest.raises(NotImplementedError, match=r"module '1' \(Conv3d\).*Conv3d"):
        lnn.convert(model, lnn.Recipe(weight="bf16", accumulate=acc))
    assert type(model[0]) is nn.Linear and type(model[1]) is nn.Conv3d


def test_convert_keeps_everything_and_unconvert_restores_it():
    torch.manual_seed(12)
    model = Net().train()
    model.layer1.eval()
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    keys = list(model.state_dict())
    calls = []
    model.fc.register_forward_hook(lambda m, i, o: calls.append("fwd"))
    model.stem.register_forward_pre_hook(lambda m, i: calls.append("pre"))
    x = torch.randn(2, 3, 5, 5)
    want = model(x)
    calls.clear()

    assert lnn.convert(model, FP32_EVERYWHERE) is model
    assert isinstance(model.fc, nn.Linear) and isinstance(model.fc, lnn.QuantizedModule)
    assert dict(model.named_parameters()) == params
    assert all(model.get_buffer(n) is b for n, b in buffers.items())
    assert model.training and not model.layer1.training and not model.layer1.conv1.lowbit.training
    assert_same(model(x).detach(), want.detach())
    assert calls == ["pre", "fwd"]

    assert lnn.unconvert(model) is model
    assert type(model.fc) is nn.Linear and type(model.layer1.conv1) is nn.Conv2d
    assert list(model.state_dict()) == keys
    assert dict(model.named_parameters()) == params
    assert_same(model(x).detach(), want.detach())


def test_convert_twice_is_an_error_and_the_root_can_be_a_layer():
    layer = nn.Linear(3, 2)
    assert lnn.convert(layer, lnn.Recipe(weight="bf16")) is layer
    assert isinstance(layer, lnn.QuantizedModule)
    with pytest.raises(ValueError, match="already converted"):
        lnn.convert(layer, lnn.Recipe(weight="bf16"))
    with pytest.raises(TypeError, match="Recipe"):
        lnn.convert(nn.Linear(2, 2), {"weight": "bf16"})
    with pytest.raises(TypeError, match="nn.Module"):
        lnn.convert("model", lnn.Recipe())


class PlainSub(nn.Linear):
    """A subclass that keeps Linear's forward: quantizable."""


class CustomForward(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


def test_subclasses_convert_only_when_they_keep_the_forward():
    model = nn.Sequential(PlainSub(3, 3), CustomForward(3, 3))
    lnn.convert(model, lnn.Recipe(weight="bf16"))
    assert isinstance(model[0], PlainSub) and isinstance(model[0], lnn.QuantizedModule)
    assert type(model[1]) is CustomForward
    lnn.unconvert(model)
    assert type(model[0]) is PlainSub


def test_a_recipe_that_sets_nothing_leaves_a_module_alone():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    lnn.convert(model, lnn.Recipe(weight="bf16", overrides={"1": {"weight": None}}))
    assert isinstance(model[0], lnn.QuantizedModule) and type(model[1]) is nn.Linear


def test_dtype_and_device_are_kept():
    model = nn.Sequential(nn.Linear(4, 4)).to(torch.bfloat16)
    delayed = lnn.Role("e4m3fn", scaling=lnn.Scaling(history=2))
    lnn.convert(model, lnn.Recipe(input="e4m3fn", weight=delayed, grad_output="e5m2"))
    x = torch.randn(2, 4, dtype=torch.bfloat16, requires_grad=True)
    y = model(x)
    y.sum().backward()
    assert y.dtype == torch.bfloat16 and model[0].weight.grad.dtype == torch.bfloat16
    assert model[0].lowbit.weight.amax_history.device == model[0].weight.device


def test_quantize_modules_take_their_name_and_seed_from_convert():
    model = nn.Sequential(nn.Linear(3, 3), lnn.Quantize(forward=lnn.Role(
        "e4m3fn", rounding="stochastic")))
    lnn.convert(model, lnn.Recipe(weight="bf16"), seed=7)
    assert (model[1].lowbit.site_name, model[1].lowbit.seed) == ("1", 7)
    lnn.unconvert(model)
    assert (model[1].lowbit.site_name, model[1].lowbit.seed) == ("", 0)


def test_importing_nn_and_models_loads_no_compiler_or_gpu_runtime():
    code = ("import sys, torch, lowbit.nn, lowbit.models, lowbit.nn.functional;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('triton', 'numba')"
            " or m.startswith('torch._dynamo')];"
            "print(bad, torch.cuda.is_initialized())")
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[] False"


def test_torchvision_models_convert_where_torchvision_is_installed():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    lnn.convert(model, lnn.Recipe(input="e5m2", weight="e5m2", grad_output="e5m2"))
    y = model(torch.randn(2, 3, 32, 32))
    y.sum().backward()
    assert isinstance(model.conv1, lnn.QuantizedModule) and y.shape == (2, 10)


def test_a_converted_model_pickles_whole():
    model = lnn.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                                      nn.Linear(2, 3)),
                        lnn.Recipe(weight=lnn.Role("e4m3fn", rounding="stochastic"),
                                   overrides={nn.BatchNorm2d: {}}), seed=5)
    x = torch.randn(2, 1, 3, 3)
    model(x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded[0]) is type(model[0]) and loaded[3].lowbit.step == 1
    assert_same(loaded(x), model(x))
