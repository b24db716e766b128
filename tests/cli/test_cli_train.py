"""``lowbit train``: the three output files with the stated JSON schema, the default model per
data set, and the training loop on every embedded data set."""

import csv
import dataclasses
import json
import math

import pytest
import torch

from lowbit.cli import TrainConfig, main, train
from lowbit.cli._data import load
from lowbit.cli._models import DEFAULT_MODEL, build
from lowbit.cli._train import DEFAULT_EPOCHS

from _cli_recipe import TEST_RECIPE

PNG = b"\x89PNG\r\n\x1a\n"


def test_train_writes_results_csv_and_png(tmp_path, capsys, bf16_recipe):
    out = tmp_path / "run"
    assert main(["train", "--recipe", TEST_RECIPE, "--model", "cnn", "--data", "digits",
                 "--epochs", "2", "--seed", "3", "--out", str(out), "--steps-per-epoch", "4",
                 "--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1/2" in text and "epoch 2/2" in text and "final: test accuracy" in text
    result = json.loads((out / "results.json").read_text())
    assert {"recipe", "config", "epochs", "final"} <= set(result)
    assert result["recipe"] == TEST_RECIPE
    cfg = result["config"]
    assert (cfg["recipe"], cfg["model"], cfg["data"], cfg["epochs"], cfg["seed"],
            cfg["device"]) == (TEST_RECIPE, "cnn", "digits", 2, 3, "cpu")
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    for epoch in result["epochs"]:
        assert epoch["steps"] == 4
        assert {"train_loss", "test_loss", "test_accuracy", "seconds"} <= set(epoch)
    final = result["final"]
    assert {"test_accuracy", "test_loss", "seconds"} <= set(final)
    assert 0 <= final["test_accuracy"] <= 1 and final["test_loss"] > 0 and final["seconds"] > 0
    assert final["test_accuracy"] == result["epochs"][-1]["test_accuracy"]
    assert len(result["step_losses"]) == 8
    with open(out / "epochs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["test_loss"]) == pytest.approx(result["epochs"][1]["test_loss"])
    png = (out / "curves.png").read_bytes()
    assert png[:8] == PNG and len(png) > 10_000


def test_same_seed_same_run(bf16_recipe):
    # The seed fixes the initialisation, the data order and the recipe's rounding.
    cfg = TrainConfig(recipe=TEST_RECIPE, data="synthetic", epochs=1, seed=5, device="cpu",
                      steps_per_epoch=3)
    a, b = train(cfg, progress=False), train(cfg, progress=False)
    assert a["step_losses"] == b["step_losses"]
    assert a["final"]["test_loss"] == b["final"]["test_loss"]
    c = train(TrainConfig(**{**cfg.to_dict(), "seed": 6}), progress=False)
    assert c["step_losses"] != a["step_losses"]


@pytest.mark.parametrize("data", ["digits", "text", "synthetic"])
def test_defaults_per_data_and_a_short_run(data):
    cfg = TrainConfig(data=data, device="cpu", steps_per_epoch=2, epochs=1).resolved()
    assert cfg.model == DEFAULT_MODEL[data]
    assert TrainConfig(data=data).resolved().epochs == DEFAULT_EPOCHS[data]
    result = train(cfg, progress=False)
    assert result["task"] == ("lm" if data == "text" else "classify")
    assert math.isfinite(result["final"]["test_loss"])
    assert result["final"]["step_ms"] > 0


def test_default_models_fit_their_data():
    assert DEFAULT_MODEL == {"digits": "cnn", "text": "gpt", "synthetic": "mlp",
                             "mnist": "cnn", "cifar10": "resnet20"}
    digits, text = load("digits"), load("text")
    assert build("cnn", digits)(digits.split.x_test[:2]).shape == (2, 10)
    logits = build("gpt", text)(text.split.x_test[:2])
    assert logits.shape == (2, 64, text.classes)
    synthetic = load("synthetic")
    assert build("mlp", synthetic)(synthetic.split.x_test[:3]).shape == (3, 10)
    assert build("mlp", digits)(digits.split.x_test[:3]).shape == (3, 10)  # flattens images


def test_lr_option_reaches_the_optimizer(bf16_recipe, monkeypatch):
    seen = []
    real = bf16_recipe.prepare

    def spy(model, *, seed=0):
        prepared = real(model, seed=seed)
        make = prepared.make_optimizer

        def make_optimizer(params, *, lr=None):
            opt = make(params, lr=lr)
            seen.append(opt.param_groups[0]["lr"])
            return opt

        prepared.make_optimizer = make_optimizer
        return prepared

    monkeypatch.setattr(type(bf16_recipe), "prepare", lambda self, m, seed=0: spy(m, seed=seed))
    train(TrainConfig(recipe=TEST_RECIPE, data="synthetic", epochs=1, steps_per_epoch=1,
                      device="cpu", lr=0.0125), progress=False)
    train(TrainConfig(recipe=TEST_RECIPE, data="synthetic", epochs=1, steps_per_epoch=1,
                      device="cpu"), progress=False)
    assert seen == [0.0125, 0.05]  # --lr, then the recipe's own


def test_non_finite_numbers_are_json_null(tmp_path):
    from lowbit.cli._common import write_json

    path = write_json(str(tmp_path / "x.json"), {"a": [1.0, float("nan")], "b": float("inf")})
    with open(path) as fh:
        assert json.load(fh) == {"a": [1.0, None], "b": None}


def test_cpu_threads_rule(monkeypatch):
    from lowbit.cli._common import cpu_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with cpu_threads(None, "cpu") as what:
        assert torch.get_num_threads() == 1 and "torch 1" in what
    assert torch.get_num_threads() == before
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    with cpu_threads(None, "cpu") as what:
        assert torch.get_num_threads() == before and "unchanged" in what
    with cpu_threads(1, "cpu"):
        assert torch.get_num_threads() == 1


def test_cosine_schedule_warms_up_then_decays():
    from lowbit.cli._train import SCHEDULES

    cosine = SCHEDULES["cosine"]
    total = 100  # warm-up over the first 10 steps, then half a cosine period over 90
    assert [cosine(t, total) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cosine(10, total) == 1.0
    assert cosine(55, total) == pytest.approx(0.5)
    assert 0 < cosine(99, total) < 1e-3
    assert SCHEDULES["constant"](7, total) == 1.0


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_schedule_sets_the_rate_of_each_step(bf16_recipe, monkeypatch, schedule):
    rates = []
    real_step = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    train(TrainConfig(recipe=TEST_RECIPE, data="synthetic", epochs=2, steps_per_epoch=10,
                      device="cpu", schedule=schedule), progress=False)
    if schedule == "constant":
        assert rates == [0.05] * 20
    else:  # 2 warm-up steps of 20, then the decay
        assert rates[:3] == pytest.approx([0.025, 0.05, 0.05])
        assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] < 0.001


def test_a_recipe_that_does_not_fit_the_model_is_a_user_error(capsys, monkeypatch, bf16_recipe):
    def refuse(model, seed):
        raise ValueError("the model has batch norm layers; this recipe has none")

    from lowbit.recipes import _registry

    monkeypatch.setitem(_registry._REGISTRY, TEST_RECIPE,
                        dataclasses.replace(bf16_recipe, setup=refuse))
    assert main(["train", "--recipe", TEST_RECIPE, "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"recipe {TEST_RECIPE} does not apply to model cnn" in err
    assert "batch norm" in err


def test_a_recipe_brings_its_model_epochs_and_schedule():
    wage = TrainConfig(recipe="wage", data="digits").resolved()
    assert (wage.model, wage.epochs, wage.schedule) == ("cnn_nobn", 2 * DEFAULT_EPOCHS["digits"],
                                                        "paper")
    own = TrainConfig(recipe="wage", data="digits", model="mlp", epochs=3,
                      schedule="cosine").resolved()  # what the user says wins
    assert (own.model, own.epochs, own.schedule) == ("mlp", 3, "cosine")
    fp32 = TrainConfig(recipe="fp32", data="digits").resolved()
    assert (fp32.model, fp32.epochs, fp32.schedule) == ("cnn", DEFAULT_EPOCHS["digits"], "cosine")


def test_the_paper_schedule_follows_the_milestones(monkeypatch):
    from lowbit.cli import _train

    rates = []
    real = _train._scheduler

    def spy(opt, cfg, total):
        set_lr = real(opt, cfg, total)

        def wrapped():
            set_lr()
            rates.append(opt.param_groups[0]["lr"])
        return wrapped

    monkeypatch.setattr(_train, "_scheduler", spy)
    train(TrainConfig(recipe="wage", data="digits", epochs=1, steps_per_epoch=12, device="cpu"),
          progress=False)
    # η = 8 until 2/3 of the run, then 1, then 1/8 from 5/6 on (WAGE's Option.py, scaled).
    assert rates == [8.0] * 8 + [1.0] * 2 + [0.125] * 2


def test_the_paper_schedule_needs_a_recipe_that_has_one(capsys):
    assert main(["train", "--recipe", "fp32", "--schedule", "paper", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no schedule of its own" in err[0]
