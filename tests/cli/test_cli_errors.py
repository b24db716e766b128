"""A user's mistake is one line on stderr and exit status 2, before anything is printed or
trained; torchvision's data sets are read with download=False and never fetched."""

import sys
import types

import numpy as np
import pytest
import torch

from lowbit.cli import main
from lowbit.cli._common import CliError
from lowbit.cli._data import load


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.endswith("\n"), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("argv, needles", [
    (["train", "--recipe", "no_such"], ["lowbit train: error:", "unknown recipe 'no_such'",
                                        "fp32"]),
    (["train", "--data", "imagenet"], ["unknown data 'imagenet'", "digits", "cifar10"]),
    (["train", "--model", "no_such"], ["unknown model 'no_such'", "resnet20"]),
    (["train", "--data", "text", "--model", "cnn"], ["does not fit data 'text'"]),
    (["train", "--data", "digits", "--model", "gpt"], ["needs --data text"]),
    (["train", "--data", "synthetic", "--model", "resnet20"], ["needs image data"]),
    (["train", "--epochs", "0"], ["--epochs must be a positive integer"]),
    (["train", "--epochs", "two"], ["invalid int value: 'two'"]),
    (["train", "--device", "tpu"], ["device"]),
    (["train", "--threads", "0"], ["--threads must be a positive integer"]),
    (["train", "--data", "mnist"], ["--data mnist needs --data-dir DIR"]),
    (["demo", "--recipes", "fp32,no_such"], ["lowbit demo: error:", "'no_such'"]),
    (["recipes", "no_such"], ["unknown recipe 'no_such'"]),
    (["formats", "--plot", "e4m3fn", "e9m99q"], ["--plot e9m99q"]),
    (["bench", "--numel", "1000", "--device", "cpu"], ["multiple of 1024"]),
    (["no_such_command"], ["invalid choice"]),
])
def test_user_errors(capsys, argv, needles):
    _one_line_error(capsys, argv, *needles)


def test_missing_data_dir(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    _one_line_error(capsys, ["train", "--data", "cifar10", "--data-dir", str(missing)],
                    f"--data-dir {missing}: no such directory")
    assert not missing.exists()  # nothing created, nothing downloaded


def test_missing_torchvision(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    _one_line_error(capsys, ["train", "--data", "mnist", "--data-dir", str(tmp_path)],
                    "needs torchvision, which is not installed")


class _FakeSet:
    """Stands in for a torchvision data set: records its arguments, holds tiny data."""

    calls = []
    files = True

    def __init__(self, root, train=True, download=True):
        type(self).calls.append((self.__class__.__name__, root, train, download))
        if not type(self).files:
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        n = 40 if train else 12
        gen = np.random.default_rng(0 if train else 1)
        self.data, self.targets = self.make(gen, n)


class _MNIST(_FakeSet):
    @staticmethod
    def make(gen, n):  # torchvision's MNIST: a uint8 tensor (N, 28, 28), a tensor of labels
        return (torch.from_numpy(gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                torch.arange(n) % 10)


class _CIFAR10(_FakeSet):
    @staticmethod
    def make(gen, n):  # torchvision's CIFAR10: a uint8 array (N, 32, 32, 3), a list of labels
        return gen.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), [i % 10 for i in range(n)]


@pytest.fixture
def fake_torchvision(monkeypatch):
    _FakeSet.calls, _FakeSet.files = [], True
    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(MNIST=_MNIST, CIFAR10=_CIFAR10)
    monkeypatch.setitem(sys.modules, "torchvision", module)
    return _FakeSet


@pytest.mark.parametrize("name, shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_torchvision_sets_load_without_download(fake_torchvision, tmp_path, name, shape):
    data = load(name, str(tmp_path))
    cls = {"mnist": "MNIST", "cifar10": "CIFAR10"}[name]
    assert fake_torchvision.calls == [(f"_{cls}", str(tmp_path), True, False),
                                      (f"_{cls}", str(tmp_path), False, False)]
    split = data.split
    assert data.task == "classify" and data.classes == 10 and data.input_shape == shape
    assert split.x_train.shape == (40, *shape) and split.x_test.shape == (12, *shape)
    assert split.y_train.dtype == torch.int64 and split.y_train.tolist() == [
        i % 10 for i in range(40)]
    # standardised per channel with the training split's statistics
    mean = split.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)


def test_torchvision_files_missing(capsys, fake_torchvision, tmp_path):
    fake_torchvision.files = False
    _one_line_error(capsys, ["train", "--data", "mnist", "--data-dir", str(tmp_path)],
                    f"no usable MNIST files under {tmp_path}", "Dataset not found",
                    "downloads nothing")


def test_train_on_a_torchvision_set(capsys, fake_torchvision, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "1",
                 "--steps-per-epoch", "2", "--out", str(out), "--no-progress"]) == 0
    assert "model cnn, data mnist" in capsys.readouterr().out
    assert (out / "results.json").is_file()


def test_cli_error_is_an_exception():
    with pytest.raises(CliError, match="unknown data"):
        load("imagenet")
