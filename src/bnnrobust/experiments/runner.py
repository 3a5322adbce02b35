"""The runner behind ``bnnrobust reproduce``: spec + profile -> units -> the results store.

For each spec: check that its data is here (else say in one line which files it needs), plan
its units, skip those the store already holds, train the models the rest need (checkpoint
cache: never twice), then compute the units through an executor (local processes or Ray). The
process that runs the executor writes each unit to the store as soon as it arrives, in one
transaction, so a run killed at any moment loses only the units in flight, and a rerun
computes only what is missing.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

import bnnrobust
from bnnrobust.data import GENERATED, get_spec, status
from bnnrobust.data import data_root as resolve_root
from bnnrobust.experiments.executors import Executor, run
from bnnrobust.experiments.measures import Computed, Task, execute, measure_named
from bnnrobust.experiments.measures.base import request_and_hook, trained_model
from bnnrobust.experiments.parse import load
from bnnrobust.experiments.results import committed, export, import_rows
from bnnrobust.experiments.spec import Spec, SpecError
from bnnrobust.experiments.store import ResultStore
from bnnrobust.train import load as load_checkpoint
from bnnrobust.train.cache import cache_path


@dataclass
class RunSummary:
    """What one spec's run did: units planned, found stored, computed; ``stale``: units to
    compute whose earlier rows in the store came from other code (or another version of the
    spec); seconds; and why it did not run (``missing``) when its data is absent."""

    spec: str
    profile: str
    exported: Path | None = None
    planned: int = 0
    stored_before: int = 0
    computed: int = 0
    stale: int = 0
    imported: int = 0
    models_trained: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    missing: str | None = None
    notes: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, with the git commit when run from a checkout (``+dirty`` when the
    working tree has changes)."""
    version = bnnrobust.__version__
    here = Path(bnnrobust.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode != 0:
        return version
    return f"{version}+g{commit.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"


def missing_data(spec: Spec, *, data_root: str | Path | None = None) -> str | None:
    """One line naming what the spec needs when its dataset is not here, else None."""
    if spec.dataset in GENERATED:
        return None
    state = status(spec.dataset, root=data_root, verify=False)
    if state.state != "missing":
        return None
    files = ", ".join(f.name for f in get_spec(spec.dataset).files())
    return (f"{spec.name}: needs {spec.dataset} in {resolve_root(data_root) / spec.dataset} "
            f"({state.detail}; the files: {files}). Set BNNROBUST_DATA to the folder that "
            "holds it.")


def plan(spec: Spec, profile: str, *, device: str = "cpu", data_root: str | None = None,
         cache_dir: str | None = None) -> list[Task]:
    """Every unit of ``spec`` under ``profile``, as tasks."""
    measure = measure_named(spec.measure)
    return measure.tasks(spec, spec.profile(profile), device=device, data_root=data_root,
                         cache_dir=cache_dir)


def _train(item: tuple[str, str, str | None, str | None]) -> str:
    request, device, data_root, cache_dir = item
    cached = trained_model(json.loads(request), device=device, data_root=data_root,
                           cache_dir=cache_dir)
    return str(cached.path)


#: the profiles whose results a run exports to the results folder (see
#: :mod:`bnnrobust.experiments.results`)
EXPORTED_PROFILES = ("paper",)
#: seconds between exports while a run computes units (and once at its end)
EXPORT_EVERY = 600.0


def reproduce(spec: Spec, *, profile: str, store: ResultStore, executor: Executor,
              device: str = "cpu", data_root: str | None = None, cache_dir: str | None = None,
              results: Path | None = None, progress: bool = True,
              console: Console | None = None) -> RunSummary:
    """Run whatever units of ``spec`` the store lacks; see the module docstring. With a
    ``results`` folder, first import the committed rows of the units planned, and for a
    profile of :data:`EXPORTED_PROFILES` export the spec's rows there afterwards (also when
    interrupted)."""
    console = console or Console(stderr=True)
    summary = RunSummary(spec.name, profile)
    missing = missing_data(spec, data_root=data_root)
    if missing is not None:
        summary.missing = missing
        return summary
    start = time.perf_counter()
    with store.exclusive(waiting=lambda: console.print(
            f"{spec.name}: another run is computing into {store.path}; waiting for it (what "
            "it stores is reused, not computed again)")):
        try:
            _run_units(spec, profile, store, executor, summary, device=device,
                       data_root=data_root, cache_dir=cache_dir, results=results,
                       progress=progress)
        finally:
            if results is not None and profile in EXPORTED_PROFILES:
                summary.exported = export_spec(spec, profile, store, results,
                                               data_root=data_root, cache_dir=cache_dir)
    summary.seconds = time.perf_counter() - start
    return summary


def _run_units(spec: Spec, profile: str, store: ResultStore, executor: Executor,
               summary: RunSummary, *, device: str, data_root: str | None,
               cache_dir: str | None, results: Path | None, progress: bool) -> None:
    """Plan, import the committed rows, train and compute what the store lacks, counting
    into ``summary`` (under the store's run lock)."""
    tasks = plan(spec, profile, device=device, data_root=data_root, cache_dir=cache_dir)
    if results is not None:
        summary.imported = import_rows(store, committed(results, spec.name, profile).rows,
                                       [t.unit for t in tasks])
    done = store.done(t.unit for t in tasks)
    todo = [t for t in tasks if t.unit.key not in done]
    summary.planned, summary.stored_before = len(tasks), len(done)
    summary.stale = store.superseded(t.unit for t in todo)
    requests = sorted({json.dumps(t.model, sort_keys=True) for t in todo if t.model is not None})
    if requests:
        items = [(r, device, data_root, cache_dir) for r in requests]
        trained = run(executor, _train, items, description=f"{spec.name}: models",
                      progress=progress)
        summary.models_trained = len(trained.results)
        if trained.interrupted:
            summary.interrupted = True
            return
    version = code_version()
    exported = time.monotonic()

    def save(index: int, outcome: Computed) -> None:
        nonlocal exported
        if store.put(todo[index].unit, outcome.value, seconds=outcome.seconds,
                     device=outcome.device, code_version=version):
            summary.computed += 1
        if results is not None and profile in EXPORTED_PROFILES \
                and time.monotonic() - exported > EXPORT_EVERY:  # a kill loses little
            export_spec(spec, profile, store, results, data_root=data_root,
                        cache_dir=cache_dir)
            exported = time.monotonic()

    outcome = run(executor, execute, todo, description=f"{spec.name}: units",
                  progress=progress, on_result=save)
    summary.interrupted = outcome.interrupted


def export_spec(spec: Spec, profile: str, store: ResultStore, results: Path, *,
                data_root: str | None = None, cache_dir: str | None = None) -> Path | None:
    """Export the rows of the whole spec's plan (a slice's spec is read again from its file)
    with the training record of every model in the checkpoint cache; see
    :func:`bnnrobust.experiments.results.export`."""
    whole = load(spec.path)
    tasks = plan(whole, profile, data_root=data_root, cache_dir=cache_dir)
    models: dict[str, dict[str, Any]] = {}
    for task in tasks:
        name = f"{task.unit.model} seed {task.unit.seed}"
        if task.model is None or name in models:
            continue
        request = request_and_hook(task.model)[0]
        path = cache_path(request, cache_dir=cache_dir, data_root=data_root)
        if path.exists():
            metrics = load_checkpoint(path).metrics
            epochs = metrics.get("epochs", [])
            models[name] = {"epochs": len(epochs),
                            "train_seconds": round(sum(e["seconds"] for e in epochs), 3),
                            "test_accuracy": metrics.get("final_test_accuracy"),
                            "checkpoint": path.name}
    return export([t.unit for t in tasks], store, results, spec=spec.name, profile=profile,
                  title=spec.title, models=models)


def spec_files(root: Path) -> list[Path]:
    """Every spec file under ``root`` (``<paper>/<name>.toml``), sorted."""
    return sorted(root.glob("*/*.toml"))


def resolve_specs(names: Sequence[str], root: Path) -> list[Path]:
    """Spec files from names (``galloway2018/table1``), paths, or paper folders
    (``galloway2018`` = all its specs); an unknown name lists the valid ones."""
    known = {p.relative_to(root).with_suffix("").as_posix(): p for p in spec_files(root)}
    out: list[Path] = []
    for name in names:
        path = Path(name)
        if path.suffix == ".toml" and path.exists():
            out.append(path)
        elif name.rstrip("/") in known:
            out.append(known[name.rstrip("/")])
        elif any(k.startswith(name.rstrip("/") + "/") for k in known):
            out.extend(p for k, p in known.items() if k.startswith(name.rstrip("/") + "/"))
        else:
            raise SpecError(f"no spec {name!r}; valid specs: {', '.join(known)} (or a paper "
                            f"folder: {', '.join(sorted({k.split('/')[0] for k in known}))}).")
    return out


def default_specs_root() -> Path:
    """The ``experiments/`` folder of the checkout (``$BNNROBUST_EXPERIMENTS`` overrides)."""
    env = os.environ.get("BNNROBUST_EXPERIMENTS")
    if env:
        return Path(env)
    return Path(bnnrobust.__file__).resolve().parents[2] / "experiments"


def summary_line(summary: RunSummary) -> str:
    """One line for the console."""
    if summary.missing:
        return f"{summary.spec} [{summary.profile}]: not run — {summary.missing}"
    state = "interrupted" if summary.interrupted else "done"
    stale = f" ({summary.stale} of them replace stale rows: their code changed)" \
        if summary.stale else ""
    imported = f", {summary.imported} taken from the committed results" \
        if summary.imported else ""
    exported = f"; results in {summary.exported}" if summary.exported else ""
    return (f"{summary.spec} [{summary.profile}]: {state}; {summary.planned} units, "
            f"{summary.stored_before} already stored{imported}, {summary.computed} "
            f"computed{stale}, {summary.models_trained} model(s) prepared, "
            f"{summary.seconds:.1f} s{exported}")

