"""Recipe: normalisation of role values, validation errors, JSON/TOML round trips."""

import json
import re
import tomllib

import pytest
import torch
from torch import nn

import lowbit.nn as lnn
from lowbit.formats import get
from lowbit.nn import _serial
from lowbit.ops.accumulate import Accumulate


def test_role_values_are_normalised():
    r = lnn.Recipe(input="e4m3fn", weight=get("e5m2"),
                   grad_output={"format": "e5m2", "rounding": "stochastic", "rbits": 8},
                   output=lnn.Role("bf16", scaling="tensor"), bias="none")
    assert r.input == lnn.Role(get("e4m3fn"))
    assert r.weight == lnn.Role(get("e5m2"))
    assert r.grad_output.rounding.value == "stochastic" and r.grad_output.rbits == 8
    assert r.output.scaling == lnn.Scaling("tensor")
    assert r.bias is None
    assert set(r.roles()) == {"input", "weight", "grad_output", "output"}
    assert r.active and not lnn.Recipe().active


def test_accumulate_applies_to_every_gemm_or_per_gemm():
    acc = Accumulate(acc="e6m9", chunk=64)
    both = lnn.Recipe(accumulate=acc)
    assert [both.accumulate_for(g) for g in lnn.GEMMS] == [acc, acc, acc]
    per = lnn.Recipe(accumulate={"dgrad": acc, "wgrad": {"acc": "bf16"}})
    assert per.accumulate_for("forward") is None and per.accumulate_for("dgrad") == acc
    assert per.accumulate_for("wgrad") == Accumulate(acc="bf16")
    assert lnn.Recipe(accumulate={"acc": "e6m9"}).accumulate_for("forward").acc == get("e6m9")


def test_mapping_overrides_merge_into_the_recipe():
    r = lnn.Recipe(input="e4m3fn", weight="e4m3fn",
                   overrides={"fc": {"weight": "bf16"}, "conv1": None, nn.Conv2d: {}})
    fc = dict(r.overrides)["fc"]
    assert fc.input == r.input and fc.weight == lnn.Role("bf16") and not fc.overrides
    assert dict(r.overrides)["conv1"] is None
    assert dict(r.overrides)[nn.Conv2d] == r.replace(overrides=())


ERRORS = [
    (lambda: lnn.Recipe(inputs="e4m3fn"), TypeError, "inputs"),
    (lambda: lnn.Recipe(input="e9m9x"), ValueError, "input: format: unknown format name"),
    (lambda: lnn.Recipe(input=3), TypeError, "input"),
    (lambda: lnn.Recipe(input={"fmt": "e4m3fn"}), ValueError, "unknown fields"),
    (lambda: lnn.Recipe(input=lnn.Role("e4m3fn", rbits=8)), ValueError, "stochastic"),
    (lambda: lnn.Recipe(input={"format": "e4m3fn", "rounding": "round"}), ValueError,
     "rounding must be one of"),
    (lambda: lnn.Recipe(overrides={"fc": {"inptu": "bf16"}}), ValueError, "unknown fields"),
    (lambda: lnn.Recipe(overrides={"fc": 3}), TypeError, "override 'fc'"),
    (lambda: lnn.Recipe(overrides={3: None}), TypeError, "override keys"),
    (lambda: lnn.Recipe(overrides={int: None}), TypeError, "nn.Module subclass"),
    (lambda: lnn.Recipe(overrides={"": None}), ValueError, "empty"),
    (lambda: lnn.Recipe(overrides=[("a", None), ("a", None)]), ValueError, "twice"),
    (lambda: lnn.Recipe(overrides={"a": lnn.Recipe(overrides={"b": None})}), ValueError,
     "cannot have overrides"),
    (lambda: lnn.Recipe(accumulate="e6m9"), TypeError, "accumulate"),
    (lambda: lnn.Recipe(accumulate={"acc": "e6m9", "chunks": 4}), ValueError, "chunks"),
    (lambda: lnn.Recipe(weight={"quantizer": "no-such-quantizer"}), ValueError,
     "unknown quantizer"),
    (lambda: lnn.Recipe.from_dict({"inputs": "bf16"}), ValueError, "unknown recipe fields"),
    (lambda: lnn.Recipe.from_dict({"overrides": {"type:no.such.Module": "none"}}), ValueError,
     "no importable type"),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_bad_recipes_raise_clear_errors(i):
    make, exc, match = ERRORS[i]
    with pytest.raises(exc, match=re.escape(match)):
        make()


class _Quant(nn.Module):
    def __init__(self, bits=8):
        super().__init__()
        self.bits = bits

    def forward(self, x):
        return x


lnn.register_quantizer("test-recipe-q", _Quant)


def _rich_recipe():
    acc = Accumulate(acc="e6m9", chunk=64, rounding="stochastic")
    return lnn.Recipe(
        input="e4m3fn",
        weight=lnn.Role("fixed<8,6>", rounding="stochastic", rbits=12,
                        scaling=lnn.Scaling("channel", history=16, pow2=True)),
        grad_output=lnn.Role("e5m2", scaling="row"),
        grad_weight={"quantizer": "test-recipe-q", "bits": 4},
        accumulate={"forward": acc, "wgrad": Accumulate(acc="bf16")},
        overrides=[
            ("fc", None),
            ("layer1.0.conv1", {"weight": "bf16", "input": None}),
            (r"layer\d+\..*conv2", lnn.Recipe(weight="mxfp4")),
            (nn.BatchNorm2d, {"stats": "fixed<16,10>", "accumulate": None}),
            ("first", {"accumulate": Accumulate(acc="fp16")}),
        ],
    )


def test_dict_json_and_toml_round_trip():
    r = _rich_recipe()
    data = r.to_dict()
    assert data["overrides"]["fc"] == "none"
    assert data["overrides"]["layer1.0.conv1"] == {"input": "none", "weight": "bf16"}
    assert data["overrides"]["type:torch.nn.modules.batchnorm.BatchNorm2d"]["accumulate"] == \
        "none"
    assert lnn.Recipe.from_dict(data) == r
    assert lnn.Recipe.from_json(r.to_json()) == r
    text = r.to_toml()
    assert tomllib.loads(text) == json.loads(r.to_json())
    assert lnn.Recipe.from_toml(text) == r


def test_compiled_regex_keys_serialise_as_patterns():
    r = lnn.Recipe(weight="bf16", overrides={re.compile(r"fc\d"): None})
    assert lnn.Recipe.from_dict(r.to_dict()).overrides == (("fc\\d", None),)
    with pytest.raises(ValueError, match="flags"):
        lnn.Recipe(overrides={re.compile("fc", re.I): None}).to_dict()


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_and_load_files(tmp_path, suffix):
    r = _rich_recipe()
    path = tmp_path / f"recipe{suffix}"
    r.save(path)
    assert lnn.Recipe.load(path) == r
    with pytest.raises(ValueError, match=".toml or .json"):
        r.save(tmp_path / "recipe.yaml")


def test_toml_writer_quotes_keys_and_escapes_strings():
    data = {"plain": "a\"b\\c\n\t\x01\x7f é", "table": {"odd key.\"x\"": 1, "list": [1, 2.5],
                                                       "flags": True, "neg": -0.5}}
    assert tomllib.loads(_serial.dumps_toml(data)) == data
    with pytest.raises(TypeError, match="TOML cannot hold"):
        _serial.dumps_toml({"x": None})


def test_recipe_applies_only_through_convert_not_to_modules_directly():
    with pytest.raises(ValueError, match="overrides"):
        lnn.Linear(2, 2, recipe=lnn.Recipe(overrides={"x": None}))
    with pytest.raises(TypeError, match="Recipe"):
        lnn.Linear(2, 2, recipe={"input": "bf16"})
    plain = lnn.Linear(2, 2)  # no recipe: nothing is quantized
    assert torch.equal(plain(torch.ones(1, 2)), torch.nn.functional.linear(
        torch.ones(1, 2), plain.weight, plain.bias))
