"""The training loop: Adam by default, per-epoch metrics, a progress bar, a per-batch hook.

The hook is how defenses plug in without rewriting the loop: it receives the clean batch and
returns the list of ``(inputs, labels)`` pairs whose mean loss is minimized. The default is the
clean batch alone; adversarial training returns the clean and the adversarial batch, giving
``(clean loss + adversarial loss) / 2`` as in Galloway et al. and Kurakin et al.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from bnnrobust.device import global_seed, resolve_device
from bnnrobust.errors import TrainingError
from bnnrobust.nn import clip_latent_weights, seed_stochastic
from bnnrobust.train.metrics import accuracy, check_input_shape, correct

OPTIMIZERS = ("adam", "sgd")


class BatchHook(Protocol):
    """Transforms a training batch into the batches whose mean loss is minimized."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]: ...

    def config(self) -> dict[str, Any]:
        """Plain data that identifies the hook (part of the checkpoint-cache key)."""
        ...


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch (accuracies are fractions in [0, 1])."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float | None
    seconds: float


@dataclass
class History:
    """Per-epoch metrics of a training run."""

    epochs: list[EpochStats] = field(default_factory=list)

    @property
    def final_test_accuracy(self) -> float | None:
        """Test accuracy after the last epoch."""
        return self.epochs[-1].test_accuracy if self.epochs else None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints and JSON."""
        return {"epochs": [asdict(e) for e in self.epochs],
                "final_test_accuracy": self.final_test_accuracy}


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on logits; binary cross-entropy when the model has one output."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y)


#: learning-rate schedules: name -> (1-based epoch -> factor applied at its start)
SCHEDULES = ("constant", "binarynet-mnist")


def schedule_factor(schedule: str, epoch: int) -> float:
    """The factor the learning rate is multiplied by at the start of (1-based) ``epoch``.

    ``"constant"``: 1. ``"binarynet-mnist"``: BinaryNet.pytorch's ``main_mnist.py``, ×0.1 at
    epochs 40, 80, ... (its ``if epoch % 40 == 0``). The script applies that line inside its
    batch loop, so the rate is cut at every batch of epoch 40 and underflows to zero within
    a few hundred steps (the weights then stop changing); the repository's fix (commit
    48e46fd) adds the per-epoch line. We apply it once per epoch, the evident intent.
    """
    if schedule == "binarynet-mnist" and epoch % 40 == 0:
        return 0.1
    return 1.0


def _check_options(epochs: int, batch_size: int, lr: float, optimizer: str,
                   schedule: str = "constant") -> None:
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown learning-rate schedule {schedule!r}; expected one of "
                            f"{', '.join(SCHEDULES)}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise TrainingError(f"epochs must be a positive integer, got {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise TrainingError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not lr > 0:
        raise TrainingError(f"lr must be > 0, got {lr!r}.")
    if optimizer not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {optimizer!r}; expected one of "
                            f"{', '.join(OPTIMIZERS)}.")


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor] | None = None, *, epochs: int,
        batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
        device: str | torch.device = "auto", optimizer: str = "adam",
        clip_weights: bool = False, batch_hook: BatchHook | None = None,
        schedule: str = "constant", progress: bool = True,
        console: Console | None = None) -> History:
    """Train ``model`` in place on ``train = (x, y)``; evaluate on ``test`` after each epoch.

    Defaults are the papers' (Galloway et al.): Adam, learning rate 1e-3, batch 128. Shuffling,
    stochastic layers and the hook draw from generators seeded with ``seed``, so a CPU run is
    deterministic. ``clip_weights`` clamps the latent weights of binary layers to [-1, 1] after
    each step (BinaryConnect). ``batch_hook`` turns each batch into the batches whose mean loss
    is minimized (see :class:`BatchHook`). ``schedule``: the learning-rate schedule
    (:func:`schedule_factor`; default constant).
    """
    _check_options(epochs, batch_size, lr, optimizer, schedule)
    x_train, y_train = train
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise TrainingError(f"training set has {len(x_train)} inputs and {len(y_train)} labels; "
                            "expected the same, non-zero number.")
    check_input_shape(model, x_train, what="training inputs")
    dev = resolve_device(device)
    with global_seed(seed):  # dropout and the like; the caller's RNG is left as it was
        gen = torch.Generator().manual_seed(seed)
        seed_stochastic(model, seed)
        model.to(dev)
        opt = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
               else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
        console = console or Console(stderr=True)
        history = History()
        n_batches = (len(x_train) + batch_size - 1) // batch_size
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
            for epoch in range(epochs):
                for group in opt.param_groups:
                    group["lr"] *= schedule_factor(schedule, epoch + 1)
                start = time.perf_counter()
                model.train()
                task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=n_batches, loss=0.0)
                order = torch.randperm(len(x_train), generator=gen)
                total_loss, total_correct, seen = 0.0, 0, 0
                for b in range(n_batches):
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    xb, yb = x_train[idx].to(dev), y_train[idx].to(dev)
                    pairs = batch_hook(model, xb, yb, epoch=epoch) if batch_hook else [(xb, yb)]
                    opt.zero_grad(set_to_none=True)
                    logits = model(pairs[0][0])
                    loss = loss_fn(logits, pairs[0][1])
                    for xa, ya in pairs[1:]:
                        loss = loss + loss_fn(model(xa), ya)
                    loss = loss / len(pairs)
                    loss.backward()
                    opt.step()
                    if clip_weights:
                        clip_latent_weights(model)
                    total_loss += loss.item() * len(idx)
                    total_correct += int(correct(logits.detach(), pairs[0][1]).sum())
                    seen += len(idx)
                    bar.update(task, advance=1, loss=total_loss / seen)
                bar.remove_task(task)
                test_acc = (accuracy(model, *test, device=dev, seed=seed) if test is not None
                            else None)
                stats = EpochStats(epoch + 1, total_loss / seen, total_correct / seen, test_acc,
                                   time.perf_counter() - start)
                history.epochs.append(stats)
                if progress:
                    test_txt = f", test acc {test_acc:.2%}" if test_acc is not None else ""
                    console.print(f"epoch {stats.epoch}/{epochs}: loss {stats.train_loss:.4f}, "
                                  f"train acc {stats.train_accuracy:.2%}{test_txt}, "
                                  f"{stats.seconds:.1f} s")
        seed_stochastic(model, None)
        model.eval()
        return history
