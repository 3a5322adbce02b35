"""What every measure shares: tasks (one stored unit each), models from the checkpoint cache,
test-point chunks, and the tables and figures a report shows.

A measure turns a spec and a profile into :class:`Task` s. A task is plain, picklable data: the
store :class:`~bnnrobust.experiments.store.Unit` it fills, the training request of its model,
its attack column and its test points. :func:`execute` runs one in any process (a pool worker,
a Ray task): it loads the model from the checkpoint cache (the runner trains every model
first), computes the value and returns it with its time and device. The measure then reads the
stored values back into :class:`Table` s (per model and column: mean ± std over seeds, beside
the paper's value) and figures.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bnnrobust.errors import BnnRobustError
from bnnrobust.experiments.store import Row, Unit

if TYPE_CHECKING:
    from bnnrobust.experiments.spec import Column, ModelPlan, Profile, Spec


@dataclass(frozen=True)
class Task:
    """One unit of work: fills ``unit``; everything else says how to compute it."""

    unit: Unit
    measure: str
    dataset: str
    model: dict[str, Any] | None
    column: dict[str, Any] | None
    points: tuple[int, int] = (0, 0)
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What :func:`execute` returns to the process that writes the store."""

    value: Any
    seconds: float
    device: str


@dataclass
class Cell:
    """One table cell: our value per seed, and the paper's value and ± where printed."""

    values: list[float] = field(default_factory=list)
    paper: float | None = None
    pm: float | None = None
    complete: bool = True

    @property
    def mean(self) -> float | None:
        """Mean over seeds (None when nothing was measured)."""
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None with fewer than two)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def diff(self) -> float | None:
        """Ours minus the paper's (None when either is missing)."""
        return None if self.mean is None or self.paper is None else self.mean - self.paper

    @property
    def outside(self) -> bool:
        """Ours lies outside the paper's printed ± (needs both a ± and our value)."""
        return self.diff is not None and self.pm is not None and abs(self.diff) > self.pm


@dataclass
class Table:
    """Rows (models) × columns (attacks) of cells; ``unit``: how values are shown."""

    title: str
    columns: list[str]
    rows: dict[str, dict[str, Cell]]
    unit: str = "%"
    adaptive: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return {"title": self.title, "columns": self.columns, "unit": self.unit,
                "adaptive": sorted(self.adaptive), "notes": self.notes,
                "rows": {m: {c: {**asdict(cell), "mean": cell.mean, "std": cell.std}
                             for c, cell in cols.items()} for m, cols in self.rows.items()}}


@dataclass(frozen=True)
class Figure:
    """A PNG a measure wrote, with its caption."""

    path: Path
    caption: str


class MeasureError(BnnRobustError):
    """A measure that cannot run a task (bad column parameters, a missing model)."""


class Measure:
    """Base class; subclasses set ``name`` and ``attacks`` (the column names they take) and
    implement :meth:`compute` and :meth:`tables` (and :meth:`figures` when they draw)."""

    name = "measure"
    attacks: tuple[str, ...] = ()
    chunked = True
    trains_models = True

    # ---------------------------------------------------------------- validation
    def check_column(self, column: Column) -> None:
        """Raise a :class:`MeasureError` if the column's attack or parameters are not valid."""
        if column.attack not in self.attacks:
            raise MeasureError(f"attack {column.attack!r} is not one the {self.name!r} measure "
                               f"runs; valid attacks: {', '.join(self.attacks)}.")

    def check_spec(self, spec: Spec) -> None:
        """Whole-spec checks beyond the columns (none by default)."""

    def table_columns(self, spec: Spec, profile: str = "paper") -> list[str]:
        """The column labels the report's tables use (what a reference may name)."""
        return [c.label for c in spec.columns_for(profile)]

    # ---------------------------------------------------------------- planning
    def tasks(self, spec: Spec, profile: Profile, *, device: str = "cpu",
              data_root: str | None = None, cache_dir: str | None = None) -> list[Task]:
        """Every unit of the profile: models × seeds × columns × chunks (the default)."""
        out = []
        chunks = profile.chunks() if self.chunked else [range(0, profile.test_points)]
        for plan in spec.model_plans(profile.name):
            for seed in profile.seeds:
                request = train_request(plan, profile, spec.dataset, seed) \
                    if self.trains_models else None
                for column in spec.columns_for(profile.name):
                    for index, points in enumerate(chunks):
                        unit = Unit(spec.name, profile.name, plan.label, seed, column.label,
                                    {"model": request_key(request, plan),
                                     "attack": column.attack, "params": column.params,
                                     "points": [points.start, points.stop],
                                     **self.unit_options(profile)},
                                    index)
                        out.append(Task(unit, self.name, spec.dataset, request,
                                        asdict(column), (points.start, points.stop),
                                        self.unit_options(profile), device, data_root,
                                        cache_dir))
        return out

    def unit_options(self, profile: Profile) -> dict[str, Any]:
        """Profile settings a unit's value depends on beyond its model, column and points."""
        return {}

    # ---------------------------------------------------------------- computing
    def compute(self, task: Task, model: torch.nn.Module | None, x: torch.Tensor,
                y: torch.Tensor) -> Any:
        """The unit's value (plain JSON data)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- reporting
    def tables(self, spec: Spec, profile: Profile, rows: dict[str, Row]) -> list[Table]:
        """The report's tables from the stored rows (by unit key) of this spec and profile."""
        raise NotImplementedError

    def first_seed_rows(self, spec: Spec, profile: Profile, rows: dict[str, Row]) -> list[Row]:
        """The stored rows of the profile's first seed, in planning order (what a figure that
        shows one run draws)."""
        seed = profile.seeds[0]
        return [rows[t.unit.key] for t in self.tasks(spec, profile)
                if t.unit.seed == seed and t.unit.key in rows]

    def figures(self, spec: Spec, profile: Profile, rows: dict[str, Row],
                out: Path) -> list[Figure]:
        """PNGs under ``out`` (none by default)."""
        return []


def train_request(plan: ModelPlan, profile: Profile, dataset: str, seed: int) -> dict[str, Any]:
    """The checkpoint-cache request of one model and seed, as plain data."""
    return {"model": plan.family, "params": plan.params, "dataset": dataset,
            "epochs": profile.epochs, "seed": seed, "train_limit": profile.train_limit,
            "adversarial": plan.adversarial, **plan.training}


def request_key(request: dict[str, Any] | None, plan: ModelPlan) -> str:
    """A short hash of the training request (so a changed spec never reuses old units)."""
    if request is None:
        return "untrained:" + plan.family
    req, _ = _request_and_hook(request)
    return req.key()


def _request_and_hook(request: dict[str, Any]):
    from bnnrobust.attacks import AdversarialTraining
    from bnnrobust.train import TrainRequest

    fields = dict(request)
    adversarial = fields.pop("adversarial", None)
    hook = None
    if adversarial:
        options = {k: v for k, v in adversarial.items() if k != "kind"}
        hook = AdversarialTraining(adversarial["kind"], seed=fields["seed"], **options)
    return TrainRequest(hook=hook.config() if hook else None, **fields), hook


def trained_model(request: dict[str, Any], *, device: str, data_root: str | None,
                  cache_dir: str | None, progress: bool = False):
    """The model of ``request`` from the checkpoint cache, trained first if absent."""
    from bnnrobust.train import train_cached

    req, hook = _request_and_hook(request)
    cached = train_cached(req, batch_hook=hook, device=device, cache_dir=cache_dir,
                          data_root=data_root, progress=progress)
    return cached


@functools.lru_cache(maxsize=4)
def _model_for(request_json: str, device: str, data_root: str | None, cache_dir: str | None):
    import json

    cached = trained_model(json.loads(request_json), device=device, data_root=data_root,
                           cache_dir=cache_dir)
    return cached.model.to(device).eval()


@functools.lru_cache(maxsize=2)
def _test_set(dataset: str, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from bnnrobust.data import load

    return load(dataset, "test", root=data_root, download=False)


def execute(task: Task) -> Outcome:
    """Compute one task (in any process): its model from the cache, its test points."""
    import json

    from bnnrobust.experiments.measures import measure_named

    measure = measure_named(task.measure)
    start = time.perf_counter()
    model = None
    if task.model is not None:
        model = _model_for(json.dumps(task.model, sort_keys=True), task.device, task.data_root,
                           task.cache_dir)
    if task.points[1] > task.points[0]:
        x, y = _test_set(task.dataset, task.data_root)
        if task.points[1] > len(x):
            raise MeasureError(f"{task.unit.spec}: asks for test points up to {task.points[1]} "
                               f"but {task.dataset} has {len(x)}.")
        x, y = x[task.points[0]:task.points[1]], y[task.points[0]:task.points[1]]
    else:
        x, y = torch.empty(0), torch.empty(0, dtype=torch.long)
    value = measure.compute(task, model, x, y)
    return Outcome(value, time.perf_counter() - start, task.device)


def cells_by_seed(rows: dict[str, Row], value_of, *, expected: Sequence[Unit]
                  ) -> dict[tuple[str, str], Cell]:
    """Group stored rows into cells keyed (model, column): ``value_of(rows of one seed)`` gives
    that seed's number; a seed with a missing chunk marks the cell incomplete and is left out."""
    wanted: dict[tuple[str, str, int], list[Unit]] = {}
    for unit in expected:
        wanted.setdefault((unit.model, unit.attack, unit.seed), []).append(unit)
    cells: dict[tuple[str, str], Cell] = {}
    for (model, column, _seed), units in wanted.items():
        cell = cells.setdefault((model, column), Cell())
        got = [rows[u.key] for u in units if u.key in rows]
        if len(got) < len(units):
            cell.complete = False
            continue
        number = value_of(got)
        if number is not None and math.isfinite(number):
            cell.values.append(number)
    return cells


def per_unit_stats(table: Table, rows: dict[str, Row], units: Sequence[Unit],
                   stats: Sequence[tuple[str, Any]]) -> None:
    """Fill ``table`` for measures whose seed has one unit: for each ``(label, read)``, the cell
    of each model holds ``read(value)`` per seed."""
    for label, read in stats:
        for (model, _), cell in cells_by_seed(rows, lambda got, read=read: read(got[0].value),
                                              expected=units).items():
            table.rows[model][label] = cell


def model_rows(spec: Spec, profile: Profile) -> dict[str, dict[str, Cell]]:
    """An empty row per model of the profile, in the spec's order (a table's starting rows)."""
    return {p.label: {} for p in spec.model_plans(profile.name)}


def attach_references(spec: Spec, table: Table) -> Table:
    """Put the paper's values (and ±) into the cells they belong to (adding empty cells for
    rows the profile did not run only when the row exists)."""
    for ref in spec.reference:
        if ref.model in table.rows and ref.attack in table.columns:
            cell = table.rows[ref.model].setdefault(ref.attack, Cell(complete=False))
            cell.paper, cell.pm = ref.value, ref.pm
    return table
