"""``lowbit train``: one recipe, one model, one data set; per-epoch metrics, a progress bar,
and ``results.json``, ``epochs.csv`` and ``curves.png`` in the output folder.

Every recipe trains the same way, through ``lowbit.recipes``::

    prepared = lowbit.recipes.get(name).prepare(model, seed=seed)
    opt = prepared.make_optimizer(model.parameters(), lr=lr)   # lr None: the paper's
    with prepared.context():
        loss = F.cross_entropy(prepared.model(x), y)
    opt.zero_grad(); opt.backward(loss) (a LowPrecision: loss scaling) or loss.backward()
    opt.step()

``train(TrainConfig(...))`` is the loop ``lowbit train``, ``lowbit demo`` and
``benchmarks/recipes_digits.py`` share.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ._common import CliError, PeakMemory, cpu_threads, write_json
from ._data import DATA, Dataset, load
from ._models import DEFAULT_MODEL, build

__all__ = ["DEFAULT_EPOCHS", "DEFAULT_BATCH", "TrainConfig", "train", "evaluate",
           "write_outputs", "get_recipe", "resolve_device", "add_parser", "run"]

#: Epochs when ``--epochs`` is not given (digits: what ``benchmarks/recipes_digits.py`` uses).
DEFAULT_EPOCHS = {"digits": 10, "text": 2, "synthetic": 10, "mnist": 5, "cifar10": 30}
#: Batch size when ``--batch-size`` is not given.
DEFAULT_BATCH = {"digits": 64, "text": 32, "synthetic": 64, "mnist": 128, "cifar10": 128}
EVAL_BATCH = 512
#: The share of the steps over which ``cosine`` warms the learning rate up linearly.
WARMUP = 0.1


def _cosine(t: int, total: int) -> float:
    """Linear warm-up over the first ``WARMUP`` of the steps, then a cosine decay to 0."""
    warm = max(1, int(WARMUP * total))
    if t < warm:
        return (t + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))


#: Learning-rate schedules: the factor on the recipe's rate at step t of T; ``paper`` is the
#: recipe's own step schedule (``PaperRecipe.lr_milestones``), the default where it has one.
SCHEDULES = {"cosine": _cosine, "constant": lambda t, total: 1.0, "paper": None}
#: The BatchNorm-free stand-in of a default model, for recipes without BatchNorm (WAGE).
WITHOUT_BATCHNORM = {"cnn": "cnn_nobn"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run.  None fields take the data set's defaults (``resolved()``).

    Attributes:
        recipe: a name of ``lowbit.recipes.names()``.
        data: one of ``lowbit.cli._data.DATA``.
        model: a model name; None: ``DEFAULT_MODEL[data]`` (its ``WITHOUT_BATCHNORM``
            stand-in for a recipe whose ``batchnorm`` is False).
        epochs: passes over the training split; None: ``DEFAULT_EPOCHS[data]`` times the
            recipe's ``epochs_scale``, rounded.
        seed: model initialisation, data order and the recipe's stochastic rounding.
        batch_size: None: ``DEFAULT_BATCH[data]``.
        lr: the optimizer's learning rate; None: the recipe's (the paper's) default.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        data_dir: the folder of torchvision's files (mnist, cifar10).
        steps_per_epoch: stop each epoch after this many steps (smoke tests, the demo).
        schedule: ``cosine`` (per step: a linear warm-up to the recipe's learning rate over
            the first tenth of the run, then a cosine decay to 0), ``constant`` or ``paper``
            (the recipe's ``lr_milestones``); None: ``paper`` where the recipe has milestones,
            else ``cosine``.
    """

    recipe: str = "fp32"
    data: str = "digits"
    model: Optional[str] = None
    epochs: Optional[int] = None
    seed: int = 0
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    device: str = "auto"
    data_dir: Optional[str] = None
    steps_per_epoch: Optional[int] = None
    schedule: Optional[str] = None

    def resolved(self) -> "TrainConfig":
        """This config with the defaults filled in and the numbers checked (``CliError``)."""
        if self.data not in DATA:
            raise CliError(f"unknown data {self.data!r}; choose one of {', '.join(DATA)}")
        paper = get_recipe(self.recipe)
        model = self.model or DEFAULT_MODEL[self.data]
        if not self.model and not paper.batchnorm:
            model = WITHOUT_BATCHNORM.get(model, model)
        epochs = self.epochs
        if epochs is None:
            epochs = max(1, round(DEFAULT_EPOCHS[self.data] * paper.epochs_scale))
        schedule = self.schedule or ("paper" if paper.lr_milestones else "cosine")
        if schedule == "paper" and not paper.lr_milestones:
            raise CliError(f"--schedule paper: recipe {self.recipe} has no schedule of its "
                           "own; use cosine or constant")
        cfg = dataclasses.replace(
            self, model=model, epochs=epochs, schedule=schedule,
            batch_size=DEFAULT_BATCH[self.data] if self.batch_size is None else self.batch_size,
            device=resolve_device(self.device))
        for name in ("epochs", "batch_size", "steps_per_epoch"):
            value = getattr(cfg, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise CliError(f"--{name.replace('_', '-')} must be a positive integer; "
                               f"got {value}")
        if cfg.lr is not None and not (cfg.lr > 0 and math.isfinite(cfg.lr)):
            raise CliError(f"--lr must be a positive number; got {cfg.lr}")
        if cfg.schedule not in SCHEDULES:
            raise CliError(f"--schedule must be one of {', '.join(SCHEDULES)}; got "
                           f"{cfg.schedule!r}")
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when a GPU is available, else ``cpu``; other names are checked."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CliError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise CliError(f"device {name!r}: lowbit train runs on cpu or cuda")
    return str(device)


def get_recipe(name: str):
    """``lowbit.recipes.get(name)``, with an unknown name as a ``CliError``."""
    from .. import recipes

    if name not in recipes.names():
        raise CliError(f"unknown recipe {name!r}; known: {', '.join(recipes.names())} "
                       "(lowbit recipes lists them)")
    return recipes.get(name)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: str) -> Tuple[float, float]:
    """``(mean cross-entropy in nats, accuracy)`` over ``(x, y)``, in eval mode; for language
    models per token (accuracy: of the next-token prediction)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for xs, ys in zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH)):
        out = model(xs.to(device))
        out, ys = out.reshape(-1, out.shape[-1]), ys.to(device).reshape(-1)
        loss_sum += float(F.cross_entropy(out.float(), ys, reduction="sum"))
        correct += int((out.argmax(1) == ys).sum())
        count += ys.numel()
    model.train(was_training)
    return loss_sum / count, correct / count


def _steps(n: int, cfg: TrainConfig) -> int:
    """The number of batches ``_batches`` gives."""
    count = -(-n // cfg.batch_size) - (n > 1 and n % cfg.batch_size == 1)
    return min(count, cfg.steps_per_epoch) if cfg.steps_per_epoch else count


def _batches(n: int, cfg: TrainConfig, gen: torch.Generator) -> List[torch.Tensor]:
    batches = list(torch.randperm(n, generator=gen).split(cfg.batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches.pop()  # BatchNorm cannot train on a batch of one
    return batches[:cfg.steps_per_epoch] if cfg.steps_per_epoch else batches


def _epoch(prepared, opt, data: Dataset, cfg: TrainConfig, gen: torch.Generator, bar,
           set_lr: Callable[[], None]) -> Tuple[List[float], float]:
    """One pass; returns the per-step training losses and the seconds it took.  ``set_lr()``
    sets the learning rate of the next step."""
    model, device = prepared.model, cfg.device
    backward: Callable[[torch.Tensor], None] = getattr(opt, "backward", None) or (
        lambda loss: loss.backward())
    x, y = data.split.x_train, data.split.y_train
    losses = []
    model.train()
    start = time.perf_counter()
    for step, idx in enumerate(_batches(x.shape[0], cfg, gen)):
        xb, yb = x[idx].to(device), y[idx].to(device)
        with prepared.context():
            out = model(xb)
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        backward(loss)
        set_lr()
        opt.step()
        losses.append(loss.detach())
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1].item():.4f}", refresh=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return torch.stack(losses).float().cpu().tolist(), seconds


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> Callable[[], None]:
    """A function that sets every group's rate to its starting rate times the schedule's
    factor at the next step (any optimizer, ``LowPrecision`` included: it shares the inner
    optimizer's ``param_groups``)."""
    base = [group["lr"] for group in opt.param_groups]
    factor = SCHEDULES[cfg.schedule] or get_recipe(cfg.recipe).lr_factor
    step = 0

    def set_lr() -> None:
        nonlocal step
        for group, lr in zip(opt.param_groups, base):
            group["lr"] = lr * factor(step, total)
        step += 1

    return set_lr


def train(config: TrainConfig, *, data: Optional[Dataset] = None, progress: bool = True,
          log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Train ``config``; return ``{"recipe", "config", "epochs", "final", "step_losses",
    "memory"}`` (what ``results.json`` holds).

    ``final`` holds ``test_accuracy``, ``test_loss`` (nats per example, or per token),
    ``seconds`` (the training steps of every epoch, evaluation excluded), ``step_ms`` (their
    mean) and ``peak_memory_mb`` (see ``PeakMemory``).  ``data``: the loaded data set, when the
    caller runs several recipes on it.  ``progress``: a tqdm bar per epoch on stderr where
    stderr is a terminal; ``log``: where the per-epoch lines go (None: nowhere).
    """
    from tqdm import tqdm

    cfg = config.resolved()
    paper = get_recipe(cfg.recipe)
    data = load(cfg.data, cfg.data_dir) if data is None else data
    model = build(cfg.model, data, seed=cfg.seed).to(cfg.device)
    try:
        prepared = paper.prepare(model, seed=cfg.seed)
    except ValueError as err:  # the recipe does not apply to this model (e.g. WAGE and BN)
        raise CliError(f"recipe {cfg.recipe} does not apply to model {cfg.model}: "
                       f"{' '.join(str(err).split())}") from None
    opt = prepared.make_optimizer(prepared.model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    set_lr = _scheduler(opt, cfg, _steps(data.split.x_train.shape[0], cfg) * cfg.epochs)
    epochs, step_losses, seconds = [], [], 0.0
    with PeakMemory(cfg.device) as memory:
        for epoch in range(1, cfg.epochs + 1):
            with tqdm(total=_steps(data.split.x_train.shape[0], cfg),
                      desc=f"{cfg.recipe} {epoch}/{cfg.epochs}", leave=False, file=sys.stderr,
                      disable=None if progress else True, dynamic_ncols=True) as bar:
                losses, took = _epoch(prepared, opt, data, cfg, gen, bar, set_lr)
            test_loss, test_acc = evaluate(prepared.model, data.split.x_test,
                                           data.split.y_test, cfg.device)
            seconds += took
            step_losses += losses
            row = dict(epoch=epoch, steps=len(losses), train_loss=sum(losses) / len(losses),
                       test_loss=test_loss, test_accuracy=test_acc, seconds=took)
            epochs.append(row)
            if log is not None:
                log(f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                    f"test loss {test_loss:.4f}  test accuracy {test_acc:.4f}  {took:.1f} s")
    steps = len(step_losses)
    final = dict(test_accuracy=epochs[-1]["test_accuracy"], test_loss=epochs[-1]["test_loss"],
                 seconds=seconds, step_ms=1e3 * seconds / steps, steps=steps,
                 peak_memory_mb=memory.mb)
    return {"recipe": cfg.recipe, "config": cfg.to_dict(), "epochs": epochs, "final": final,
            "step_losses": step_losses, "memory": memory.what, "task": data.task}


def write_outputs(result: Dict[str, Any], out_dir: str) -> List[str]:
    """``results.json``, ``epochs.csv`` and ``curves.png`` of one run in ``out_dir``."""
    from ._plots import plot_curves

    os.makedirs(out_dir, exist_ok=True)
    paths = [write_json(os.path.join(out_dir, "results.json"), result)]
    csv_path = os.path.join(out_dir, "epochs.csv")
    with open(csv_path, "w", newline="") as fh:
        fields = ["epoch", "steps", "train_loss", "test_loss", "test_accuracy", "seconds"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result["epochs"])
    paths.append(csv_path)
    cfg = result["config"]
    paths.append(plot_curves([result], os.path.join(out_dir, "curves.png"),
                             title=f"{cfg['model']} on {cfg['data']}, recipe {result['recipe']}"))
    return paths


# -- the command ---------------------------------------------------------------------------------
def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("train", help="train one recipe on one model and data set",
                       description="Train one recipe; write results.json, epochs.csv and "
                       "curves.png to --out.")
    p.add_argument("--recipe", default="fp32", help="a recipe name (lowbit recipes; default fp32)")
    p.add_argument("--data", default="digits", help=f"{' | '.join(DATA)} (default digits)")
    p.add_argument("--model", help="default per data: " + ", ".join(
        f"{d} {m}" for d, m in DEFAULT_MODEL.items()))
    p.add_argument("--epochs", type=int, help="default per data: " + ", ".join(
        f"{d} {e}" for d, e in DEFAULT_EPOCHS.items()))
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--out", help="output folder (default runs/train/RECIPE-DATA-MODEL-sSEED)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda[:N]")
    p.add_argument("--data-dir", help="folder of torchvision's files for mnist / cifar10")
    p.add_argument("--batch-size", type=int, help="default per data: " + ", ".join(
        f"{d} {b}" for d, b in DEFAULT_BATCH.items()))
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--schedule", help="learning rate: cosine (warm-up over the first tenth, "
                   "then a cosine decay to 0), constant, or paper (the recipe's own step "
                   "schedule; the default where it has one, else cosine)")
    p.add_argument("--steps-per-epoch", type=int, help="cut each epoch short (smoke tests)")
    p.add_argument("--threads", type=int, help="CPU threads (default 1 on the CPU unless "
                   "GOMP_SPINCOUNT or OMP_WAIT_POLICY is set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = TrainConfig(recipe=args.recipe, data=args.data, model=args.model, epochs=args.epochs,
                      seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                      device=args.device, data_dir=args.data_dir,
                      steps_per_epoch=args.steps_per_epoch, schedule=args.schedule).resolved()
    get_recipe(cfg.recipe)  # the user's mistakes fail before anything is printed
    data = load(cfg.data, cfg.data_dir)
    build(cfg.model, data)
    out = args.out or os.path.join("runs", "train",
                                   f"{cfg.recipe}-{cfg.data}-{cfg.model}-s{cfg.seed}")
    with cpu_threads(args.threads, cfg.device) as threads:
        epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
        print(f"lowbit train: recipe {cfg.recipe}, model {cfg.model}, data {cfg.data}, "
              f"{epochs}, batch {cfg.batch_size}, seed {cfg.seed}, {cfg.device} ({threads})",
              flush=True)
        result = train(cfg, data=data, progress=not args.no_progress,
                       log=lambda line: print(line, flush=True))
    final = result["final"]
    print(f"final: test accuracy {final['test_accuracy']:.4f}, test loss "
          f"{final['test_loss']:.4f}, {final['seconds']:.1f} s ({final['step_ms']:.1f} ms "
          "per step)")
    for path in write_outputs(result, out):
        print(f"wrote {path}")
    return 0
