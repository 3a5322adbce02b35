"""What a reproduction will cost on this machine, before it is paid (``reproduce --estimate``).

For one spec and profile, the estimate covers what a run would still do — the models not in
the checkpoint cache (a training state saved after some epochs counts only the epochs left)
and the units not in the results store — from a short calibration measured on the spot:

- **training**, per model row: a few batches of the model at its batch size on random inputs
  of its input shape, timed after one warm-up batch, clean and, with adversarial training,
  with the adversarial batch hook; plus the per-epoch evaluation on the test set (a timed
  forward pass). Expected = epochs × batches per epoch × seconds per batch (clean epochs
  before the hook starts, adversarial ones after) + epochs × evaluation. The seeds of a row
  share one calibration.
- **attacks**, per column: the column's measure computed on the first ``points`` test points
  of one unit (after a one-point warm-up) with the model from the cache, or the untrained model
  of the same architecture when it is not trained yet; seconds per point × the points of
  every unit left. A measure whose unit is not split into chunks (a sweep, the substitute
  attack) is calibrated on one whole unit. The exact attacks are bounded instead: every point
  at the profile's time limit (``≤``), since a solve time on an untrained network says
  nothing about a trained one.

Random inputs replace the data when it is not here (the cost of a forward pass does not
depend on the pixels), so a CIFAR or ImageNet profile can be estimated on a machine without
them; the decoding of streamed ImageNet images is not counted. Attacks that stop early on
success (JSMA, CW's search) cost less on an untrained model than on a trained one.

The calibration times the machine as it is: other work running beside it slows it down, and
far more than its share for small models (PyTorch's threads wait for each other on an
oversubscribed CPU: on a 2-core machine under a load of 7, the 100 epochs of a 2×100 BNN were
estimated at 9 to 17 h, against 5 min on the idle machine and 3.3 min measured).
:attr:`Estimate.load` keeps the load that the calibration started under, and the command line
warns when the machine was busy (:data:`BUSY`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bnnrobust.data import GENERATED, REGISTRY, STREAMED, load, status
from bnnrobust.device import global_seed
from bnnrobust.errors import BnnRobustError
from bnnrobust.experiments.measures import Task, measure_named
from bnnrobust.experiments.measures.base import model_for, request_and_hook, test_points
from bnnrobust.experiments.results import committed
from bnnrobust.experiments.runner import missing_data, plan
from bnnrobust.experiments.spec import Spec
from bnnrobust.experiments.store import ResultStore
from bnnrobust.models import build
from bnnrobust.train import accuracy, fit
from bnnrobust.train.cache import cache_path, saved_epochs

#: load (runnable tasks per usable CPU, over the last minute) above which an estimate is
#: flagged as calibrated on a busy machine
BUSY = 0.5


def machine_load() -> float:
    """The 1-minute load average per CPU this process may use (0 where the system has none)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return 0.0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    return load / cpus


@dataclass(frozen=True)
class Line:
    """One line of an estimate: ``kind`` "training" (``label``: a model row; ``count``: models
    to train) or "attack" (``label``: a column; ``count``: units to compute); ``seconds``:
    expected; ``bound``: ``seconds`` is an upper bound; ``basis``: how it was found."""

    kind: str
    label: str
    count: int
    seconds: float
    basis: str
    bound: bool = False


@dataclass
class Estimate:
    """The estimate of one spec and profile (see the module docstring)."""

    spec: str
    profile: str
    lines: list[Line] = field(default_factory=list)
    calibration_seconds: float = 0.0
    stored: int = 0
    cached: int = 0
    load: float = 0.0  # machine_load() when the calibration began

    @property
    def busy(self) -> bool:
        """Whether the calibration began on a busy machine (its times are then too high)."""
        return self.load > BUSY

    @property
    def seconds(self) -> float:
        """Expected seconds of the whole run (an upper bound when a line is one)."""
        return sum(line.seconds for line in self.lines)

    @property
    def bound(self) -> bool:
        """Whether the total is an upper bound."""
        return any(line.bound for line in self.lines)


def examples(dataset: str, split: str, *, data_root: str | None = None) -> int:
    """Examples in a split of a data set: counted when its files are here (the streamed
    ImageNet excepted), else as published (:attr:`~bnnrobust.data.DatasetSpec.examples`)."""
    if dataset in GENERATED:
        return len(GENERATED[dataset]()[1])
    if dataset not in STREAMED and status(dataset, root=data_root, verify=False).state != "missing":
        return len(load(dataset, split, root=data_root)[1])
    published = dict(REGISTRY[dataset].examples)
    if split not in published:
        raise BnnRobustError(f"{dataset} is not here and its size is not registered; put its "
                             "files under BNNROBUST_DATA to estimate it.")
    return published[split]


def estimate(spec: Spec, profile: str, *, store: ResultStore, device: str = "cpu",
             data_root: str | None = None, cache_dir: str | None = None,
             results: Path | None = None, batches: int = 3, points: int = 64) -> Estimate:
    """The expected compute of running ``spec`` under ``profile`` here (see the module
    docstring); units in the committed ``results`` that a run would import cost nothing;
    ``batches``: training batches timed per model row, ``points``: test points an attack
    column is timed on."""
    start = time.perf_counter()
    out = Estimate(spec.name, profile, load=machine_load())
    tasks = plan(spec, profile, device=device, data_root=data_root, cache_dir=cache_dir)
    done = store.done(t.unit for t in tasks)
    if results is not None:
        done |= set(committed(results, spec.name, profile).rows) & {t.unit.key for t in tasks}
    todo = [t for t in tasks if t.unit.key not in done]
    out.stored = len(done)
    prof = spec.profile(profile)
    requests: dict[str, dict[str, dict[str, Any]]] = {}  # model row -> its distinct requests
    trainings: dict[str, tuple[Callable[[int], float], str]] = {}
    for task in todo:
        if task.model is not None:
            requests.setdefault(task.unit.model, {})[_json(task.model)] = task.model
    for label, by_json in requests.items():
        left = [r for r in by_json.values()
                if not cache_path(request_and_hook(r)[0], cache_dir=cache_dir,
                                  data_root=data_root).exists()]
        out.cached += len(by_json) - len(left)
        if not left:
            continue
        first = left[0]
        shape = _json({k: v for k, v in first.items() if k not in ("seed", "epochs")}
                      | {"adversarial": _without(first.get("adversarial"), "start_epoch")})
        if shape not in trainings:  # the seeds and schedules of one architecture share it
            trainings[shape] = _training(first, spec.dataset, device=device, batches=batches,
                                         data_root=data_root)
        seconds, basis = trainings[shape]
        total = sum(seconds(saved_epochs(request_and_hook(r)[0], cache_dir=cache_dir,
                                         data_root=data_root)) for r in left)
        out.lines.append(Line("training", label, len(left), total, basis))
    real_data = missing_data(spec, data_root=data_root) is None
    groups: dict[str, list[Task]] = {}
    for task in todo:
        groups.setdefault(task.column.label, []).append(task)
    measure = measure_named(spec.measure)
    timings: dict[str, float] = {}
    for label, group in groups.items():
        bounds = [measure.time_bound(t) for t in group]
        if all(b is not None for b in bounds):
            out.lines.append(Line("attack", label, len(group), sum(bounds),
                                  f"every point at the time limit ({prof.time_limit:g} s)",
                                  bound=True))
            continue
        total = 0.0
        for task in group:
            # one timing per architecture and attack: seeds, weights and ε do not change the
            # work of a fixed number of steps
            key = _json({"model": _without(task.model, "seed", "adversarial", "epochs"),
                         "attack": task.column.attack, "options": task.column.options.as_dict(),
                         "params": _without(task.params.as_dict() if task.params else {},
                                            "eps", "seed")})
            if key not in timings:
                timings[key] = _per_point(task, measure.chunked, points=points,
                                          real_data=real_data)
            total += timings[key] * _points(task)
        timed = f"{min(points, max(_points(t) for t in group))} point(s)" if measure.chunked \
            else "one whole unit"
        out.lines.append(Line("attack", label, len(group), total,
                              f"timed on {timed} per architecture and attack"))
    out.calibration_seconds = time.perf_counter() - start
    return out


def _json(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True)


def _without(data: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    return None if data is None else {k: v for k, v in data.items() if k not in keys}


def _points(task: Task) -> int:
    return max(0, task.points[1] - task.points[0])


def _synthetic(model: torch.nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random inputs of the model's input shape and random labels (fixed seed)."""
    gen = torch.Generator().manual_seed(0)
    shape = tuple(getattr(model, "input_shape", ()))
    classes = max(2, int(getattr(model, "num_classes", 2)))
    x = torch.rand((n, *shape), generator=gen)
    return x, torch.randint(classes, (n,), generator=gen)


def _training(request: dict[str, Any], dataset: str, *, device: str, batches: int,
              data_root: str | None) -> tuple[Callable[[int], float], str]:
    """A function of the epochs already finished that gives the seconds left to train
    ``request``, and how it was calibrated."""
    req, hook = request_and_hook(request)
    with global_seed(req.seed):
        model = build(req.model, **req.params)
    size = req.batch_size
    x, y = _synthetic(model, size * (batches + 1))
    if model.num_classes == 1:
        y = y % 2
    options = {"batch_size": size, "lr": req.lr, "seed": req.seed, "optimizer": req.optimizer,
               "clip_weights": req.clip_weights, "center_weights": req.center_weights,
               "weight_decay": req.weight_decay, "device": device, "progress": False,
               "augment": req.augment if dataset not in STREAMED else "none"}

    def per_batch(batch_hook) -> float:
        fit(model, (x[:size], y[:size]), epochs=1, batch_hook=batch_hook, **options)  # warm-up
        begin = time.perf_counter()
        fit(model, (x[size:], y[size:]), epochs=1, batch_hook=batch_hook, **options)
        return (time.perf_counter() - begin) / batches

    clean = per_batch(None)
    adversarial, start = clean, req.epochs
    last = adversarial  # the last epoch's batches (a copied TF graph adds passes there)
    if hook is not None:
        now = dict(request, adversarial={**request["adversarial"], "start_epoch": 0})
        adversarial, start = per_batch(request_and_hook(now)[1]), hook.start_epoch
        last = adversarial
        if hook.running_stats == "mnist-attack" and hook.kind == "pgd":
            one = dict(now, epochs=1, adversarial={**now["adversarial"], "epochs": 1})
            last = per_batch(request_and_hook(one)[1])
    n_test = examples(dataset, "test", data_root=data_root)
    probe = min(n_test, 256)
    begin = time.perf_counter()
    accuracy(model, *_synthetic(model, probe), device=device)
    evaluation = (time.perf_counter() - begin) * n_test / probe
    n_train = min(examples(dataset, "train", data_root=data_root), req.train_limit or math.inf)
    per_epoch = math.ceil(n_train / size)

    def seconds(finished: int) -> float:
        clean_epochs = max(0, min(start, req.epochs) - finished)
        adversarial_epochs = max(0, req.epochs - max(start, finished))
        batches_cost = clean_epochs * clean + adversarial_epochs * adversarial
        if adversarial_epochs:
            batches_cost += last - adversarial
        return per_epoch * batches_cost + (req.epochs - finished) * evaluation

    basis = f"{batches} batch(es) of {size} timed" + (", clean and adversarial"
                                                      if hook is not None else "")
    return seconds, basis


def _per_point(task: Task, chunked: bool, *, points: int, real_data: bool) -> float:
    """Seconds per test point of ``task``'s column on its model (see the module docstring)."""
    measure = measure_named(task.measure)
    model = _model(task)
    n = min(points, _points(task)) if chunked else _points(task)
    if n == 0:
        return 0.0
    start = task.points[0]
    calibration = dataclasses.replace(task, points=(start, start + n))
    if real_data:
        x, y = test_points(calibration, model)
    else:
        x, y = _synthetic(model, n)
    if chunked:  # lazy set-up (imports, solver start) is not a cost per point
        measure.compute(dataclasses.replace(task, points=(start, start + 1)), model, x[:1], y[:1])
    begin = time.perf_counter()
    measure.compute(calibration, model, x, y)
    return (time.perf_counter() - begin) / n


def _model(task: Task) -> torch.nn.Module | None:
    """The task's trained model from the cache, else the untrained one of its architecture."""
    if task.model is None:
        return None
    req = request_and_hook(task.model)[0]
    if cache_path(req, cache_dir=task.cache_dir, data_root=task.data_root).exists():
        return model_for(_json(task.model), task.device, task.data_root, task.cache_dir)
    with global_seed(req.seed):
        return build(req.model, **req.params).to(task.device).eval()


def format_seconds(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
