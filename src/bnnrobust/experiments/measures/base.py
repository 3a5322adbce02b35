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

import dataclasses
import functools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from bnnrobust.attacks import AdversarialTraining, AttackParams
from bnnrobust.attacks.catalogue import CATALOGUE, entry
from bnnrobust.code import closure, fingerprint
from bnnrobust.data import STREAMED, images, load
from bnnrobust.errors import BnnRobustError
from bnnrobust.experiments.spec import Column, ModelPlan, Profile, Spec
from bnnrobust.experiments.store import StoredRow, Unit
from bnnrobust.train import TrainRequest, train_cached
from bnnrobust.train.cache import MODELS_PACKAGE, TRAINING_MODULE, family_modules


@dataclass(frozen=True)
class Task:
    """One unit of work: fills ``unit``; everything else says how to compute it.

    ``column``: the spec's attack column; ``params``: its attack's parameters for this
    model's seed (None for a measure's own column kind); ``options``: profile settings the
    value depends on (see :meth:`Measure.unit_options`).
    """

    unit: Unit
    measure: str
    dataset: str
    model: dict[str, Any] | None
    column: Column
    params: AttackParams | None
    points: tuple[int, int] = (0, 0)
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class Computed:
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


class MeasureError(BnnRobustError):
    """A measure that cannot run a task (bad column options, a missing model)."""


@dataclass(frozen=True, kw_only=True)
class Options:
    """A measure's column options (``[[attacks]] options = {...}``); none by default.
    Subclasses add keyword-only fields and validate them in ``__post_init__``."""

    @classmethod
    def create(cls, measure: str, values: dict[str, Any]) -> Options:
        """``cls(**values)``, an unknown name reported with the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            valid = ", ".join(names) if names else "none"
            raise MeasureError(f"the {measure} measure has no option {unknown[0]!r}; valid "
                               f"options: {valid}.")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_count(name: str, value: Any, low: int = 1) -> int:
    """Raise a :class:`MeasureError` unless ``value`` is an integer >= ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise MeasureError(f"{name} must be an integer >= {low}, got {value!r}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Raise a :class:`MeasureError` unless ``value`` is true or false."""
    if not isinstance(value, bool):
        raise MeasureError(f"{name} must be true or false, got {value!r}.")
    return value


class Measure:
    """Base class; subclasses set ``name``, ``attacks`` (the column kinds they take: catalogue
    attacks, and ``own`` kinds such as ``"clean"`` that take no attack parameters),
    ``Options`` and ``metrics``, and implement :meth:`compute` and :meth:`tables`."""

    name = "measure"
    attacks: tuple[str, ...] = ()
    own: tuple[str, ...] = ()
    Options: ClassVar[type[Options]] = Options
    metrics: tuple[str, ...] = ("accuracy",)
    chunked = True
    trains_models = True

    # ---------------------------------------------------------------- validation
    def column_params(self, attack: str, values: dict[str, Any], options: Options,
                      profile: Profile) -> AttackParams | None:
        """The column's attack parameters, validated once when the spec is loaded (``None``
        for an own column kind, which takes none)."""
        if attack in self.own:
            if values:
                raise MeasureError(f"{attack} takes no attack parameters; got "
                                   f"{', '.join(sorted(values))} (measure settings go in "
                                   "options).")
            return None
        return entry(attack).check(values)

    def check_column(self, column: Column) -> None:
        """Checks across a column's parameters and options (none by default)."""

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
        extra = self.unit_options(profile)
        codes = {c.attack: self.code(c.attack) for c in spec.columns_for(profile.name)}
        for plan in spec.model_plans(profile.name):
            for seed in profile.seeds:
                request = train_request(plan, profile, spec.dataset, seed) \
                    if self.trains_models else None
                for column in spec.columns_for(profile.name):
                    params = column.params_for(seed)
                    for index, points in enumerate(chunks):
                        unit = Unit(spec.name, profile.name, plan.label, seed, column.label,
                                    {"model": request_key(request, plan, data_root),
                                     "attack": column.attack,
                                     "params": {} if params is None else params.as_dict(),
                                     "options": column.options.as_dict(),
                                     "points": [points.start, points.stop],
                                     "code": codes[column.attack], **extra},
                                    index)
                        out.append(Task(unit, self.name, spec.dataset, request, column,
                                        params, (points.start, points.stop), extra, device,
                                        data_root, cache_dir))
        return out

    def code(self, attack: str) -> str:
        """A fingerprint of the code that computes this measure's units of column kind
        ``attack``: the closure of the measure's module (without the attacks package), of the
        attack's module and of the training code, without the model families (see
        :mod:`bnnrobust.code`); a unit's model key holds its family's code."""
        return unit_code(type(self).__module__, attack)

    def unit_options(self, profile: Profile) -> dict[str, Any]:
        """Profile settings a unit's value depends on beyond its model, column and points."""
        return {}

    def time_bound(self, task: Task) -> float | None:
        """An upper bound of the seconds ``task`` takes, for measures whose cost a calibration
        cannot predict (None: calibrate; see :mod:`bnnrobust.experiments.estimate`)."""
        return None

    # ---------------------------------------------------------------- computing
    def compute(self, task: Task, model: torch.nn.Module | None, x: torch.Tensor,
                y: torch.Tensor) -> Any:
        """The unit's value (plain JSON data)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- reporting
    def tables(self, spec: Spec, profile: Profile, rows: dict[str, StoredRow]) -> list[Table]:
        """The report's tables from the stored rows (by unit key) of this spec and profile."""
        raise NotImplementedError

    def first_seed_rows(self, spec: Spec, profile: Profile, rows: dict[str, StoredRow]
                        ) -> list[StoredRow]:
        """The stored rows of the profile's first seed, in planning order (what a figure that
        shows one run draws)."""
        seed = profile.seeds[0]
        return [rows[t.unit.key] for t in self.tasks(spec, profile)
                if t.unit.seed == seed and t.unit.key in rows]


@functools.cache
def unit_code(measure_module: str, attack: str) -> str:
    """See :meth:`Measure.code`."""
    modules = set(closure(measure_module, stop=("bnnrobust.attacks", MODELS_PACKAGE)))
    if attack in CATALOGUE:
        # an attack that trains a model of its own (the substitute) keeps every family
        own_models = CATALOGUE[attack].kind == "transfer"
        modules |= set(closure(CATALOGUE[attack].module,
                               stop=() if own_models else (MODELS_PACKAGE,)))
    modules |= set(closure(TRAINING_MODULE, stop=(MODELS_PACKAGE,)))
    modules |= set(closure(f"{MODELS_PACKAGE}.base"))
    return fingerprint(modules)


def train_request(plan: ModelPlan, profile: Profile, dataset: str, seed: int) -> dict[str, Any]:
    """The checkpoint-cache request of one model and seed, as plain data."""
    return {"model": plan.family, "params": plan.params, "dataset": dataset,
            "epochs": profile.epochs, "seed": seed, "train_limit": profile.train_limit,
            "adversarial": plan.adversarial, **plan.training}


def request_key(request: dict[str, Any] | None, plan: ModelPlan,
                data_root: str | None = None) -> str:
    """A short hash of the training request and its data (so a changed spec, or other data,
    never reuses old units)."""
    if request is None:
        return f"untrained:{plan.family}:{fingerprint(family_modules(plan.family))}"
    req, _ = request_and_hook(request)
    return req.key(data_root=data_root)


def request_and_hook(request: dict[str, Any]):
    """The :class:`~bnnrobust.train.TrainRequest` of a plain-data training ``request`` (see
    :func:`train_request`), and its adversarial-training hook (None without one)."""
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
    req, hook = request_and_hook(request)
    cached = train_cached(req, batch_hook=hook, device=device, cache_dir=cache_dir,
                          data_root=data_root, progress=progress)
    return cached


@functools.lru_cache(maxsize=4)
def model_for(request_json: str, device: str, data_root: str | None, cache_dir: str | None):
    cached = trained_model(json.loads(request_json), device=device, data_root=data_root,
                           cache_dir=cache_dir)
    return cached.model.to(device).eval()


@functools.lru_cache(maxsize=2)
def _test_arrays(dataset: str, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    return load(dataset, "test", root=data_root, download=False)


@functools.lru_cache(maxsize=2)
def _test_stream(dataset: str, data_root: str | None, size: int):
    return images(dataset, "test", size=size, train=False, root=data_root)


def test_points(task: Task, model: torch.nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test points ``task.points`` of the task's data set (for a streamed data set such as
    ImageNet, the centre crops at the model's input size, decoded for this chunk only)."""
    start, stop = task.points
    if stop <= start:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    if task.dataset in STREAMED:
        size = getattr(model, "input_shape", (224,))[-1]
        data = _test_stream(task.dataset, task.data_root, size)
        total = len(data)
    else:
        x, y = _test_arrays(task.dataset, task.data_root)
        total = len(x)
    if stop > total:
        raise MeasureError(f"{task.unit.spec}: asks for test points up to {stop} but "
                           f"{task.dataset} has {total}.")
    return data.batch(start, stop) if task.dataset in STREAMED else (x[start:stop], y[start:stop])


def cells_by_seed(rows: dict[str, StoredRow], value_of, *, expected: Sequence[Unit]
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


def per_unit_stats(table: Table, rows: dict[str, StoredRow], units: Sequence[Unit],
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
    """Put the paper's values (and ±) into the cells they belong to — the paper row's own and
    those of the rows compared with it (:meth:`Spec.paper_row`) — (adding empty cells for
    rows the profile did not run only when the row exists), and the spec's column and
    reference notes for what the table shows into its notes."""
    for ref in spec.reference:
        if ref.attack not in table.columns:
            continue
        for row in [r for r in table.rows if spec.paper_row(r) == ref.model]:
            cell = table.rows[row].setdefault(ref.attack, Cell(complete=False))
            cell.paper, cell.pm = ref.value, ref.pm
            if ref.note:
                _add_note(table, f"{ref.model}, {ref.attack} (paper: "
                                 f"{ref.printed or ref.value}): {ref.note}")
    for columns in spec.columns.values():
        for column in columns:
            if column.note and any(c == column.label or c.startswith(column.label + " ")
                                   for c in table.columns):
                _add_note(table, f"{column.label}: {column.note}")
    return table


def _add_note(table: Table, note: str) -> None:
    if note not in table.notes:
        table.notes.append(note)
