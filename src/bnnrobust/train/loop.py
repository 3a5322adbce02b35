"""The training loop: Adam by default, per-epoch metrics, a progress bar, a per-batch hook.

The hook is how defenses plug in without rewriting the loop: it receives the clean batch and
returns the list of ``(inputs, labels)`` pairs whose mean loss is minimized. The default is the
clean batch alone; adversarial training returns the clean and the adversarial batch, giving
``(clean loss + adversarial loss) / 2`` as in Galloway et al. and Kurakin et al.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bnnrobust.device import global_seed, resolve_device
from bnnrobust.errors import TrainingError
from bnnrobust.nn import binary_layers, center_xnor_weights, clip_latent_weights, seed_stochastic
from bnnrobust.progress import LOGGER
from bnnrobust.train.metrics import accuracy, check_input_shape, correct, dataset_accuracy
from bnnrobust.train.resume import load_state, restore_state, save_state

OPTIMIZERS = ("adam", "sgd")
#: seconds of training between two saved states of a resumable run (see :func:`fit`)
SAVE_EVERY = 30.0
#: training-time augmentation of tensor data: none, or BinaryNet.pytorch's CIFAR
#: ``pad_random_crop`` (4 zero pixels of padding, a random crop of the original size, a random
#: horizontal flip). Streamed data sets (ImageNet) crop and flip in their reader.
AUGMENTATIONS = ("none", "crop-flip")


class BatchHook(Protocol):
    """Transforms a training batch into the batches whose mean loss is minimized."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]: ...

    def config(self) -> dict[str, Any]:
        """Plain data that identifies the hook (part of the checkpoint-cache key)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The hook's own random state (saved after each epoch when training can resume)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
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


#: learning-rate schedules (see :func:`schedule_factor`)
SCHEDULES = ("constant", "binarynet-mnist", "binarynet-alexnet", "binarynet-alexnet-full",
             "xnor-imagenet", "xnor-cifar", "resnet-cifar", "step30")

#: BinaryNet.pytorch ``models/alexnet_binary.py`` regime (0-based epoch: lr): 0: 5e-3, 20: 1e-3,
#: 30: 5e-4, 35: 1e-4, 40: 1e-5, as factors at the start of each 1-based epoch
_BINARYNET_ALEXNET = {21: 1e-3 / 5e-3, 31: 5e-4 / 1e-3, 36: 1e-4 / 5e-4, 41: 1e-5 / 1e-4}
#: BinaryNet.pytorch ``models/alexnet.py`` (full precision): SGD 1e-2, then 5e-3, 1e-3 (weight
#: decay off), 5e-4, 1e-4 from its epochs 10, 15, 20, 25
_BINARYNET_ALEXNET_FULL = {11: 0.5, 16: 0.2, 21: 0.5, 26: 0.2}
#: 1-based epochs at whose start the rate is cut ×0.1: XNOR-Net-PyTorch's CIFAR-10 ``main.py``
#: (``update_list = [120, 200, 240, 280]``) and He et al.'s CIFAR ResNets (iterations 32k and
#: 48k of 64k = epochs 82 and 123 of 164, counted from 0)
_STEPS = {"xnor-cifar": (120, 200, 240, 280), "resnet-cifar": (83, 124)}


def schedule_factor(schedule: str, epoch: int) -> float:
    """The factor the learning rate is multiplied by at the start of (1-based) ``epoch``.

    - ``"constant"``: 1.
    - ``"binarynet-mnist"``: BinaryNet.pytorch's ``main_mnist.py``, ×0.1 at epochs 40, 80, ...
      (its ``if epoch % 40 == 0``). The script applies that line inside its batch loop, so the
      rate is cut at every batch of epoch 40 and underflows to zero within a few hundred steps
      (the weights then stop changing); the repository's fix (commit 48e46fd) adds the
      per-epoch line. We apply it once per epoch, the evident intent.
    - ``"binarynet-alexnet"``: the regime of BinaryNet.pytorch's ``alexnet_binary.py`` (Adam
      5e-3, then 1e-3, 5e-4, 1e-4, 1e-5 from its epochs 20, 30, 35, 40, counted from 0).
    - ``"binarynet-alexnet-full"``: the regime of BinaryNet.pytorch's full-precision
      ``alexnet.py`` (SGD 1e-2, then 5e-3, 1e-3, 5e-4, 1e-4 from its epochs 10, 15, 20, 25;
      weight decay off from epoch 15: :func:`schedule_weight_decay`).
    - ``"xnor-imagenet"``: XNOR-Net-PyTorch's ImageNet ``main.py``, ×0.1 every 25 epochs
      (``lr · 0.1 ** (epoch // 25)``, epochs counted from 0).
    - ``"xnor-cifar"``: XNOR-Net-PyTorch's CIFAR-10 ``main.py``, ×0.1 at epochs 120, 200, 240
      and 280.
    - ``"resnet-cifar"``: He et al.'s CIFAR ResNet schedule, ×0.1 after epochs 82 and 123.
    - ``"step30"``: ×0.1 every 30 epochs (the PyTorch ImageNet example's AlexNet recipe).
    """
    if schedule == "binarynet-mnist" and epoch % 40 == 0:
        return 0.1
    if schedule == "binarynet-alexnet":
        return _BINARYNET_ALEXNET.get(epoch, 1.0)
    if schedule == "binarynet-alexnet-full":
        return _BINARYNET_ALEXNET_FULL.get(epoch, 1.0)
    if epoch in _STEPS.get(schedule, ()):
        return 0.1
    if schedule == "xnor-imagenet" and epoch > 1 and (epoch - 1) % 25 == 0:
        return 0.1
    if schedule == "step30" and epoch > 1 and (epoch - 1) % 30 == 0:
        return 0.1
    return 1.0


def schedule_weight_decay(schedule: str, epoch: int) -> float | None:
    """The weight decay a schedule sets at the start of (1-based) ``epoch``, or None to keep it
    (``"binarynet-alexnet-full"`` turns it off from its epoch 15, counted from 0)."""
    if schedule == "binarynet-alexnet-full" and epoch == 16:
        return 0.0
    return None


def _check_options(epochs: int, batch_size: int, lr: float, optimizer: str,
                   schedule: str = "constant", weight_decay: float = 0.0,
                   workers: int = 0, augment: str = "none",
                   restart_optimizer_at: int | None = None) -> None:
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown learning-rate schedule {schedule!r}; expected one of "
                            f"{', '.join(SCHEDULES)}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise TrainingError(f"epochs must be a positive integer, got {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise TrainingError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise TrainingError(f"lr must be a finite number > 0, got {lr!r}.")
    if optimizer not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {optimizer!r}; expected one of "
                            f"{', '.join(OPTIMIZERS)}.")
    if not (isinstance(weight_decay, int | float) and math.isfinite(weight_decay)
            and weight_decay >= 0):
        raise TrainingError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}.")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise TrainingError(f"workers must be an integer >= 0, got {workers!r}.")
    if augment not in AUGMENTATIONS:
        raise TrainingError(f"unknown augmentation {augment!r}; expected one of "
                            f"{', '.join(AUGMENTATIONS)}.")
    if restart_optimizer_at is not None and (
            not isinstance(restart_optimizer_at, int) or isinstance(restart_optimizer_at, bool)
            or not 0 <= restart_optimizer_at < epochs):
        raise TrainingError(f"restart_optimizer_at must be None or an epoch in 0..{epochs - 1} "
                            f"(0-based, below epochs = {epochs}), got {restart_optimizer_at!r}.")


def crop_flip(x: torch.Tensor, gen: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """Each N×C×H×W image zero-padded by ``pad``, cropped back to H×W at a random offset and
    flipped left-right with probability 1/2 (offsets and flips drawn from ``gen``)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    cols = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = torch.stack([padded[i, :, r:r + h, c:c + w]
                       for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True))])
    out[flips] = out[flips].flip(-1)
    return out


#: training or test data: ``(x, y)`` tensors, or a map-style dataset of ``(image, label)`` (a
#: streamed split such as ImageNet's, read by a DataLoader)
Data = tuple[torch.Tensor, torch.Tensor] | Dataset


def _size(data: Data) -> int:
    if isinstance(data, tuple):
        if len(data[0]) != len(data[1]):
            raise TrainingError(f"training set has {len(data[0])} inputs and {len(data[1])} "
                                "labels; expected the same, non-zero number.")
        return len(data[0])
    return len(data)


def _first_batch(data: Data) -> torch.Tensor:
    return data[0][:1] if isinstance(data, tuple) else data[0][0][None]


def _batches(data: Data, batch_size: int, gen: torch.Generator, workers: int
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches (tensors: indexed by a seeded permutation; a dataset: a
    DataLoader whose sampler and workers' seeds come from ``gen``)."""
    if isinstance(data, tuple):
        x, y = data
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]
        return
    yield from DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen,
                          num_workers=workers, persistent_workers=False)


def _optimizer(model: nn.Module, *, optimizer: str, lr: float,
               weight_decay: float) -> torch.optim.Optimizer:
    """Adam or SGD (momentum 0.9). Weight decay spares the latent weights of binary layers (the
    XNOR-Net code scales their gradients by 1e9, which makes its decay vanish there)."""
    latent = {id(layer.weight) for layer in binary_layers(model)}
    groups = [{"params": [p for p in model.parameters() if id(p) not in latent],
               "weight_decay": weight_decay},
              {"params": [p for p in model.parameters() if id(p) in latent],
               "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def fit(model: nn.Module, train: Data, test: Data | None = None, *, epochs: int,
        batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
        device: str | torch.device = "auto", optimizer: str = "adam",
        clip_weights: bool = False, center_weights: bool = False, weight_decay: float = 0.0,
        augment: str = "none", batch_hook: BatchHook | None = None,
        schedule: str = "constant", restart_optimizer_at: int | None = None, workers: int = 0,
        resume: str | Path | None = None, save_every: float | None = None,
        progress: bool = True, console: Console | None = None) -> History:
    """Train ``model`` in place on ``train``; evaluate on ``test`` after each epoch.

    ``train`` and ``test`` are ``(x, y)`` tensors or map-style datasets (:data:`Data`; a
    dataset is read by a DataLoader with ``workers`` processes). Defaults are the papers'
    (Galloway et al.): Adam, learning rate 1e-3, batch 128. Shuffling, stochastic layers and
    the hook draw from generators seeded with ``seed``, so a CPU run is deterministic.
    ``clip_weights`` clamps the latent weights of binary layers to [-1, 1] after each step
    (BinaryConnect). ``center_weights``: before each forward pass, the latent weights of every
    XNOR layer are centred (their mean over input channels subtracted) and clamped to [-1, 1]
    (XNOR-Net-PyTorch's ``BinOp.binarization``). A last batch of one example is skipped in a
    model with batch norm (which cannot normalize it). ``weight_decay``: L2 decay of every parameter
    but binary layers' latent weights (see :func:`_optimizer`). ``augment``: see
    :data:`AUGMENTATIONS` (tensor data only; drawn from the seeded generator). ``batch_hook`` turns each
    batch into the batches whose mean loss is minimized (see :class:`BatchHook`).
    ``schedule``: the learning-rate schedule (:func:`schedule_factor`; default constant).
    ``restart_optimizer_at``: at the start of this epoch (0-based) the optimizer's state is
    cleared (Adam's moments and step count, SGD's momentum; the learning rates stay), as a
    second call of a training function that builds a new optimizer does: Galloway et al.'s
    code trains clean, then calls ``model_train`` again for the adversarial epochs with a
    fresh Adam. Default None: one optimizer state throughout.
    ``resume``: a file that holds the state after a finished epoch (see
    :mod:`bnnrobust.train.resume`), written after every epoch that ends ``save_every`` seconds
    or more after the last write (default :data:`SAVE_EVERY`: a kill loses at most that and
    one epoch, and short epochs are not slowed by writes; the last epoch is not written, the
    caller keeps the model); when it exists, training continues after its epoch and, on CPU,
    ends with the weights of an uninterrupted run. The caller deletes it when done.
    """
    _check_options(epochs, batch_size, lr, optimizer, schedule, weight_decay, workers, augment,
                   restart_optimizer_at)
    n_train = _size(train)
    if n_train == 0:
        raise TrainingError("training set has 0 inputs; expected a non-zero number.")
    check_input_shape(model, _first_batch(train), what="training inputs")
    dev = resolve_device(device)
    with global_seed(seed):  # dropout and the like; the caller's RNG is left as it was
        gen = torch.Generator().manual_seed(seed)
        seed_stochastic(model, seed)
        model.to(dev)
        opt = _optimizer(model, optimizer=optimizer, lr=lr, weight_decay=weight_decay)
        console = console or Console(stderr=True)
        history = History()
        options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                   "optimizer": optimizer, "clip_weights": clip_weights,
                   "center_weights": center_weights, "weight_decay": weight_decay,
                   "augment": augment, "schedule": schedule, "train_size": n_train,
                   "restart_optimizer_at": restart_optimizer_at,
                   "hook": batch_hook.config() if batch_hook is not None else None}
        first = _resume(resume, options, model, opt, gen, dev, batch_hook, history)
        saved = time.monotonic()
        save_every = SAVE_EVERY if save_every is None else save_every
        n_batches = (n_train + batch_size - 1) // batch_size
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if has_bn and n_train < 2:
            raise TrainingError("a model with batch norm needs at least 2 training examples.")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
            for epoch in range(first, epochs):
                if epoch == restart_optimizer_at:
                    opt.state.clear()  # each parameter's state starts again at its next step
                factor = schedule_factor(schedule, epoch + 1)
                decay = schedule_weight_decay(schedule, epoch + 1)
                for group in opt.param_groups:
                    group["lr"] *= factor
                    if decay is not None:
                        group["weight_decay"] = decay
                start = time.perf_counter()
                model.train()
                task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=n_batches, loss=0.0)
                total_loss, total_correct, seen = 0.0, 0, 0
                for xb, yb in _batches(train, batch_size, gen, workers):
                    if len(yb) == 1 and has_bn:
                        continue  # batch norm cannot normalize a batch of one (a last remainder)
                    if augment == "crop-flip":
                        xb = crop_flip(xb, gen)
                    xb, yb = xb.to(dev), yb.to(dev)
                    if center_weights:
                        center_xnor_weights(model)
                    pairs = batch_hook(model, xb, yb, epoch=epoch) if batch_hook else [(xb, yb)]
                    opt.zero_grad(set_to_none=True)
                    logits = model(pairs[0][0])
                    loss = loss_fn(logits, pairs[0][1])
                    for xa, ya in pairs[1:]:
                        loss = loss + loss_fn(model(xa), ya)
                    loss = loss / len(pairs)
                    if not math.isfinite(loss.item()):
                        raise TrainingError(
                            f"the training loss became {loss.item()} at epoch {epoch + 1} (batch "
                            f"{seen // batch_size + 1}); training diverged and nothing is kept. "
                            f"Lower the learning rate (lr = {lr:g}) or check the data.")
                    loss.backward()
                    opt.step()
                    if clip_weights:
                        clip_latent_weights(model)
                    total_loss += loss.item() * len(yb)
                    total_correct += int(correct(logits.detach(), pairs[0][1]).sum())
                    seen += len(yb)
                    bar.update(task, advance=1, loss=total_loss / seen)
                bar.remove_task(task)
                if center_weights:
                    center_xnor_weights(model)
                test_acc = _evaluate(model, test, dev, seed, workers)
                stats = EpochStats(epoch + 1, total_loss / seen, total_correct / seen, test_acc,
                                   time.perf_counter() - start)
                history.epochs.append(stats)
                if resume is not None and epoch + 1 < epochs \
                        and time.monotonic() - saved >= save_every:
                    resume = _save_epoch(Path(resume), options, model, opt, gen, batch_hook,
                                         history)
                    saved = time.monotonic()
                if progress:
                    test_txt = f", test acc {test_acc:.2%}" if test_acc is not None else ""
                    line = (f"epoch {stats.epoch}/{epochs}: loss {stats.train_loss:.4f}, "
                            f"train acc {stats.train_accuracy:.2%}{test_txt}, "
                            f"{stats.seconds:.1f} s")
                    LOGGER.info("training: %s", line)
                    if console.is_terminal:  # elsewhere the log line is what is seen
                        console.print(line)
        seed_stochastic(model, None)
        model.eval()
        return history


def _resume(path: str | Path | None, options: dict[str, Any], model: nn.Module,
            opt: torch.optim.Optimizer, gen: torch.Generator, dev: torch.device,
            batch_hook: BatchHook | None, history: History) -> int:
    """Restore the state saved at ``path``, if any, and return the number of epochs it has
    finished (0 without one)."""
    if path is None:
        return 0
    if batch_hook is not None and not (hasattr(batch_hook, "state_dict")
                                       and hasattr(batch_hook, "load_state_dict")):
        raise TrainingError(f"resumable training saves the batch hook's random state, but "
                            f"{type(batch_hook).__name__} has no state_dict()/load_state_dict() "
                            "(see BatchHook); add them, or train without resume.")
    state = load_state(Path(path), options=options)
    if state is None:
        return 0
    restore_state(state, model=model, optimizer=opt, generator=gen, device=dev)
    if batch_hook is not None:
        batch_hook.load_state_dict(state["hook"])
    history.epochs.extend(EpochStats(**e) for e in state["history"])
    LOGGER.info("training: resuming after epoch %d of %d (%s)", state["epoch"],
                options["epochs"], path)
    return int(state["epoch"])


def _save_epoch(path: Path, options: dict[str, Any], model: nn.Module,
                opt: torch.optim.Optimizer, gen: torch.Generator,
                batch_hook: BatchHook | None, history: History) -> Path | None:
    """Save the state after the last epoch of ``history``; returns ``path``, or None (with a
    warning, training goes on without it) when it cannot be written."""
    try:
        save_state(path, options=options, epoch=history.epochs[-1].epoch, model=model,
                   optimizer=opt, generator=gen,
                   hook_state=batch_hook.state_dict() if batch_hook is not None else None,
                   history=[asdict(e) for e in history.epochs])
    except OSError as exc:
        LOGGER.warning("training: the state after epoch %d cannot be saved to %s (%s); "
                       "training goes on, but a kill now would restart it from the first "
                       "epoch", history.epochs[-1].epoch, path, exc.strerror or exc)
        return None
    return path


def _evaluate(model: nn.Module, test: Data | None, dev: torch.device, seed: int,
              workers: int) -> float | None:
    if test is None:
        return None
    if isinstance(test, tuple):
        return accuracy(model, *test, device=dev, seed=seed)
    return dataset_accuracy(model, test, device=dev, seed=seed, workers=workers)
