"""The checkpoint cache: the same training request never trains twice.

The key is a hash of everything that determines the trained weights: the model family and all
its parameters, the dataset and how much of it, epochs, batch size, learning rate, optimizer,
seed, weight clipping and centring, weight decay, augmentation, the batch hook's configuration
(e.g. adversarial training), the identity of the training data (the md5s of the files it is
read from: :func:`bnnrobust.data.identity`) and a fingerprint of the training code
(:func:`training_code`: the source of the training loop, the model's family, the layers, the
data readers and adversarial training; another family's source is not part of it).

Training resumes after its last saved epoch when killed: the state after a finished epoch (at
most every :data:`~bnnrobust.train.loop.SAVE_EVERY` seconds) is kept beside the checkpoint
(``<name>.partial.pt``, see :mod:`bnnrobust.train.resume`) until the checkpoint is written.
Files live in ``<cache>/checkpoints/`` (``$BNNROBUST_CACHE``, default
``~/.cache/bnnrobust``). The device is not part of the key: a GPU run and a CPU run of the
same request share one entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bnnrobust.code import closure, fingerprint
from bnnrobust.data import STREAMED, identity, images, load
from bnnrobust.device import global_seed
from bnnrobust.errors import CheckpointError, TrainingError
from bnnrobust.files import cache_root
from bnnrobust.models import ZooModel, build, entry, resolve_params
from bnnrobust.train.checkpoint import load as load_checkpoint
from bnnrobust.train.checkpoint import save
from bnnrobust.train.loop import BatchHook, fit

#: the module whose code (with everything it imports) determines a trained model; with a
#: batch hook (adversarial training) the hook's module too
TRAINING_MODULE = "bnnrobust.train.cache"
HOOK_MODULE = "bnnrobust.attacks.adversarial_training"
#: the model zoo: a fingerprint takes the one family a model is built by, not the package
MODELS_PACKAGE = "bnnrobust.models"


def family_modules(family: str) -> tuple[str, ...]:
    """The modules that build a model of zoo ``family``: the family's own module and
    everything it imports (the zoo's base, the layers, the data readers), but not the
    other families, so that editing one family leaves the others' fingerprints alone."""
    return closure(entry(family).builder.__module__)


def training_code(*, family: str, hook: bool = False) -> str:
    """A fingerprint of the code that trains a model of zoo ``family`` (see
    :mod:`bnnrobust.code`): the training loop and everything it imports except the model
    zoo, the family's modules (:func:`family_modules`), and the adversarial training code
    when ``hook``."""
    loop = closure(TRAINING_MODULE, *([HOOK_MODULE] if hook else []), stop=(MODELS_PACKAGE,))
    return fingerprint((*loop, *family_modules(family)))


@dataclass(frozen=True)
class TrainRequest:
    """Everything that determines a trained model (the cache key is its hash)."""

    model: str
    params: dict[str, Any]
    dataset: str
    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    optimizer: str = "adam"
    clip_weights: bool = False
    train_limit: int | None = None
    hook: dict[str, Any] | None = None
    schedule: str = "constant"
    weight_decay: float = 0.0
    center_weights: bool = False
    augment: str = "none"

    def as_dict(self, *, data_root: str | Path | None = None) -> dict[str, Any]:
        """Plain data, with the model parameters resolved (defaults filled in) and the identity
        of the training data under ``data_root`` (:func:`bnnrobust.data.identity`)."""
        data = dict(self.__dict__)
        data["params"] = resolve_params(self.model, self.params)
        data["training_code"] = training_code(family=self.model, hook=self.hook is not None)
        data["data"] = list(identity(self.dataset, "train", root=data_root))
        return data

    def key(self, *, data_root: str | Path | None = None) -> str:
        """A stable hash of the request and of the data it trains on."""
        text = json.dumps(self.as_dict(data_root=data_root), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CachedModel:
    """A trained model, where its checkpoint is (None when the cache could not be written),
    whether it came from the cache, its metrics and training configuration."""

    model: ZooModel
    path: Path | None
    hit: bool
    metrics: dict[str, Any]
    train_config: dict[str, Any]


def checkpoint_dir(cache_dir: str | Path | None = None) -> Path:
    """Where cached checkpoints live."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "checkpoints"


def cache_path(request: TrainRequest, *, cache_dir: str | Path | None = None,
               data_root: str | Path | None = None) -> Path:
    """Where the checkpoint of ``request`` is (or will be) cached."""
    return checkpoint_dir(cache_dir) / f"{request.model}-{request.key(data_root=data_root)}.pt"


def partial_path(path: Path) -> Path:
    """Where the state after each finished epoch of the checkpoint ``path`` is kept."""
    return path.with_name(path.stem + ".partial.pt")


def saved_epochs(request: TrainRequest, *, cache_dir: str | Path | None = None,
                 data_root: str | Path | None = None) -> int:
    """Epochs of ``request`` already finished: all of them when its checkpoint is cached,
    those of its saved training state when one is kept, else 0."""
    path = cache_path(request, cache_dir=cache_dir, data_root=data_root)
    if path.exists():
        return request.epochs
    partial = partial_path(path)
    if not partial.exists():
        return 0
    try:
        return int(torch.load(partial, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # an unreadable state is retrained from the first epoch
        return 0


def _data(request: TrainRequest, model: ZooModel, data_root: str | Path | None):
    """The training and test data of ``request``: tensors, or for a streamed data set
    (ImageNet) datasets of crops the model's size (random crops and flips for training)."""
    if request.dataset not in STREAMED:
        return (load(request.dataset, "train", root=data_root, limit=request.train_limit),
                load(request.dataset, "test", root=data_root))
    size = model.input_shape[-1]
    return (images(request.dataset, "train", size=size, train=True, root=data_root,
                   limit=request.train_limit, seed=request.seed),
            images(request.dataset, "test", size=size, train=False, root=data_root))


def train_cached(request: TrainRequest, *, batch_hook: BatchHook | None = None,
                 device: str | torch.device = "auto", cache_dir: str | Path | None = None,
                 data_root: str | Path | None = None, progress: bool = True,
                 console: Console | None = None, workers: int | None = None) -> CachedModel:
    """Return the model ``request`` describes: from the cache, or trained and then cached.

    ``batch_hook`` must match ``request.hook`` (its ``config()``), so that the key describes it;
    a hook whose configuration holds ``restart_optimizer_at`` has the optimizer's state cleared
    at that epoch (see :func:`~bnnrobust.train.loop.fit`).
    ``workers``: DataLoader processes for a streamed data set (default: the CPU count less
    one, at most 8; not part of the key, it does not change the weights' distribution).
    """
    hook_config = batch_hook.config() if batch_hook is not None else None
    if hook_config != request.hook:
        raise TrainingError("the batch hook's config() must equal request.hook so that the "
                            f"cache key describes it (hook: {hook_config}, request: "
                            f"{request.hook}).")
    path = cache_path(request, cache_dir=cache_dir, data_root=data_root)
    if path.exists():
        try:
            ckpt = load_checkpoint(path, expected_model=request.model)
            return CachedModel(ckpt.model, path, True, ckpt.metrics, ckpt.train_config)
        except CheckpointError as exc:
            (console or Console(stderr=True)).print(f"[yellow]ignoring damaged cache entry: {exc}")
    with global_seed(request.seed):
        model = build(request.model, **request.params)
    train, test = _data(request, model, data_root)
    if workers is None:
        workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if request.dataset in STREAMED else 0
    partial = partial_path(path)
    history = fit(model, train, test, epochs=request.epochs, batch_size=request.batch_size,
                  lr=request.lr, seed=request.seed, device=device, optimizer=request.optimizer,
                  clip_weights=request.clip_weights, center_weights=request.center_weights,
                  weight_decay=request.weight_decay, augment=request.augment,
                  batch_hook=batch_hook, schedule=request.schedule,
                  restart_optimizer_at=(request.hook or {}).get("restart_optimizer_at"),
                  workers=workers,
                  resume=partial, progress=progress, console=console)
    metrics = history.as_dict()
    config = request.as_dict(data_root=data_root)
    try:
        save(model, path, train_config=config, metrics=metrics)
    except OSError as exc:  # an unwritable or full cache must not lose the trained model
        (console or Console(stderr=True)).print(
            f"[yellow]warning: the trained model could not be written to the checkpoint cache "
            f"({path.parent}: {exc.strerror or exc}); it is not cached and will be trained again "
            "next time. Set BNNROBUST_CACHE to a writable folder.")
        return CachedModel(model, None, False, metrics, config)
    partial.unlink(missing_ok=True)
    return CachedModel(model, path, False, metrics, config)
