"""Randomness and state: stable seeds, fresh noise per module/role/GEMM/step, state_dict
round trips with weights_only=True, bit-exact resume."""

import copy
import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import lowbit.nn as lnn
from lowbit.nn.rng import derive_seed, splitmix64, stable_key
from _nn_oracles import assert_same

SR = "stochastic"


def test_splitmix64_matches_the_reference_sequence():
    # Vigna's splitmix64.c from state 0: the first three outputs
    state, out = 0, []
    for _ in range(3):
        out.append(splitmix64(state))
        state += 0x9E3779B97F4A7C15
    assert out == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_seeds_are_the_same_in_every_process():
    # rng.py imports only hashlib: load it by path so the child skips importing torch
    path = os.path.join(os.path.dirname(__file__), "..", "..", "src", "lowbit", "nn", "rng.py")
    code = ("import importlib.util as u, sys;"
            "s = u.spec_from_file_location('rng', sys.argv[1]); m = u.module_from_spec(s);"
            "s.loader.exec_module(m);"
            "print(m.derive_seed(5, m.stable_key('layer1.conv', 'weight', 'forward'), 3))")
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code, os.path.abspath(path)], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == derive_seed(5, stable_key("layer1.conv", "weight", "forward"), 3)


def test_derive_seed_rejects_negative_or_non_int_parts():
    with pytest.raises(TypeError, match="step"):
        derive_seed(0, 1, -1)
    with pytest.raises(TypeError, match="key parts"):
        stable_key("a", 3)


def _sr_net():
    torch.manual_seed(13)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3))


SR_RECIPE = lnn.Recipe(input=lnn.Role("e4m3fn", rounding=SR), weight=lnn.Role("e4m3fn",
                       rounding=SR), grad_output=lnn.Role("e5m2", rounding=SR),
                       grad_weight=lnn.Role("bf16", rounding=SR, rbits=10))


def test_every_quantization_of_a_run_gets_its_own_seed():
    model = lnn.convert(_sr_net(), SR_RECIPE, seed=1)
    with lnn.trace() as events:
        for _ in range(3):
            model(torch.randn(4, 6)).sum().backward()
    seeds = [e.seed for e in events]
    assert None not in seeds and len(seeds) == 3 * 3 * 5
    assert len(set(seeds)) == len(seeds)
    assert [m.lowbit.step for m in model if isinstance(m, lnn.QuantizedModule)] == [3, 3, 3]


def test_same_seed_same_noise_and_identical_layers_draw_different_noise():
    x = torch.randn(8, 64)
    recipe = lnn.Recipe(weight=lnn.Role("e4m3fn", rounding=SR))

    def pair(seed):
        torch.manual_seed(0)
        first = nn.Linear(64, 64)
        return lnn.convert(nn.Sequential(first, copy.deepcopy(first)), recipe, seed=seed)

    a, b, c = pair(3), pair(3), pair(4)
    ya = [a[0](x), a[1](x)]
    assert not torch.equal(ya[0], ya[1])  # same weights, other name: other noise
    assert_same([b[0](x), b[1](x)], ya)  # same run seed, name and step: same noise
    assert not torch.equal(c[0](x), ya[0])  # another run seed
    assert not torch.equal(a[0](x), ya[0])  # the next step


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _resume_model():
    torch.manual_seed(15)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          lnn.Quantize(forward=lnn.Role("e4m3fn", rounding=SR),
                                       backward=lnn.Role("e5m2", rounding=SR)),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    recipe = lnn.Recipe(
        input=lnn.Role("e4m3fn", rounding=SR),
        weight=lnn.Role("e4m3fn", scaling=lnn.Scaling("channel", history=3)),
        grad_output=lnn.Role("e5m2", rounding=SR, scaling="tensor"),
        overrides={nn.BatchNorm2d: {"stats": lnn.Role("fixed<16,10>", rounding=SR),
                                    "normalized": "fixed<8,5>"}})
    return lnn.convert(model, recipe, seed=11)


def test_resumed_training_is_bit_exact_and_checkpoints_load_weights_only():
    torch.manual_seed(16)
    batches = [(torch.randn(5, 1, 4, 4), torch.randint(0, 3, (5,))) for _ in range(6)]
    model = _resume_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, batches[:3])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _train(model, opt, batches[3:])

    torch.manual_seed(99)  # a different initialisation, overwritten by the checkpoint
    resumed = _resume_model()
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert ckpt["model"]["0.lowbit._extra_state"] == {"seed": 11, "step": 3}
    assert "0.lowbit.weight.amax_history" in ckpt["model"]
    resumed.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    _train(resumed, opt2, batches[3:])
    assert resumed.state_dict().keys() == model.state_dict().keys()
    tensors = [(k, v) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)]
    assert_same([resumed.state_dict()[k] for k, _ in tensors], [v for _, v in tensors])
    assert resumed[0].lowbit.step == model[0].lowbit.step == 6


def test_extra_state_is_validated():
    layer = lnn.Linear(2, 2, recipe=lnn.Recipe(weight="bf16"))
    with pytest.raises(ValueError, match="seed"):
        layer.lowbit.set_extra_state({"step": 1})
