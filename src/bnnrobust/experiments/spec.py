"""Experiment specs: one TOML file per table or figure of the papers (``experiments/``).

A spec names the dataset, the *measure* (what is computed per unit of work, see
:mod:`bnnrobust.experiments.measures`), the models (rows), the attacks (columns), the paper's
reported values, and two profiles: ``paper`` (the paper's settings) and ``quick`` (CPU-sized).
Sweep variables (``[profiles.<name>.grid]``, e.g. ``K = [64, 128, 256]``) are substituted into
model and attack entries written as ``"{K}"``; each entry is repeated for every combination of
the variables it uses (a model that uses K, an attack column that uses E). An entry with
``only = ["paper"]`` belongs to the listed profiles only. An adversarial-training schedule's
``start_epoch`` is stated for the ``paper`` profile and scaled to the other profile's epochs
(10 of 15 becomes 1 of 2, rounded).

Loading validates everything: an unknown key, model family, model parameter, attack, attack
parameter or reference label is a :class:`SpecError` that names the file, the key and the
valid choices. Example (abridged Galloway Table 1)::

    title = "Galloway et al. 2018, Table 1"
    paper = "galloway2018"
    dataset = "mnist"
    measure = "accuracy"
    [profiles.paper]
    epochs = 15
    test_points = 10000
    seeds = [1234, 1235, 1236, 1237]
    chunk = 1000
    grid = { K = [64, 128, 256] }
    [[models]]
    label = "A{K}"
    family = "galloway-cnn"
    params = { precision = "full", width = "{K}" }
    [[attacks]]
    label = "FGSM ε=0.1"
    attack = "fgsm"
    params = { eps = 0.1 }
    [[reference]]
    model = "A64"
    attack = "FGSM ε=0.1"
    value = 74
    pm = 2
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnrobust.errors import BnnRobustError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PAPERS = ("galloway2018", "khalil2019", "panda2019")
PROFILES = ("paper", "quick")
#: datasets a spec may name: the readers' datasets, the generated ones (the toy AND problem),
#: and ImageNet (no reader: such a spec reports what it needs and does not run)
UNSUPPORTED_DATASETS = {"imagenet": "ImageNet ILSVRC2012 (ILSVRC2012_img_train.tar, "
                                    "ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz); "
                                    "bnnrobust has no ImageNet reader yet"}
TOP_KEYS = {"title": str, "paper": str, "dataset": str, "measure": str, "notes": str,
            "profiles": dict, "models": list, "attacks": list, "reference": list,
            "figure": dict}
PROFILE_KEYS = {"epochs": int, "train_limit": int, "test_points": int, "seeds": list,
                "chunk": int, "grid": dict, "time_limit": float}
MODEL_KEYS = {"label": str, "family": str, "params": dict, "adversarial": dict,
              "training": dict, "note": str, "only": list}
ADVERSARIAL_KEYS = {"kind": str, "eps": float, "start_epoch": int, "steps": int,
                    "alpha": float, "label": str}
TRAINING_KEYS = {"lr": float, "batch_size": int, "optimizer": str, "clip_weights": bool}
ATTACK_KEYS = {"label": str, "attack": str, "params": dict, "adaptive": bool, "metric": str,
               "note": str, "only": list}
REFERENCE_KEYS = {"model": str, "attack": str, "value": float, "pm": float, "printed": str,
                  "note": str}
FIGURE_KEYS = {"kind": str, "x": str, "xlabel": str, "ylabel": str, "log_x": bool}
_VARIABLE = re.compile(r"\{(\w+)\}")


class SpecError(BnnRobustError):
    """A spec file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Profile:
    """Settings of one profile; ``grid``: sweep variable -> values."""

    name: str
    epochs: int
    test_points: int
    seeds: tuple[int, ...]
    chunk: int
    train_limit: int | None = None
    time_limit: float | None = None
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def assignments(self, used: set[str] | None = None) -> list[dict[str, Any]]:
        """Every combination of the sweep variables (those in ``used``, default all; one
        empty dict when there are none)."""
        names = sorted(self.grid if used is None else set(self.grid) & used)
        return [dict(zip(names, values, strict=True))
                for values in itertools.product(*(self.grid[n] for n in names))]

    def chunks(self) -> list[range]:
        """The test points split into chunks of ``chunk`` (the last may be shorter)."""
        return [range(s, min(s + self.chunk, self.test_points))
                for s in range(0, self.test_points, self.chunk)]


@dataclass(frozen=True)
class ModelPlan:
    """One concrete model row of a profile: label, family, validated parameters, training."""

    label: str
    family: str
    params: dict[str, Any]
    adversarial: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """One attack column: ``attack`` is a name the spec's measure knows."""

    label: str
    attack: str
    params: dict[str, Any]
    adaptive: bool = False
    metric: str = "accuracy"
    note: str = ""
    source: int = 0  # index of its [[attacks]] entry


@dataclass(frozen=True)
class Reference:
    """A value printed in the paper (in percent for rates), with its ± where printed."""

    model: str
    attack: str
    value: float
    pm: float | None = None
    printed: str = ""
    note: str = ""


@dataclass(frozen=True)
class Spec:
    """A validated spec; ``name``: ``<paper folder>/<file stem>``."""

    name: str
    path: Path
    title: str
    paper: str
    dataset: str
    measure: str
    profiles: dict[str, Profile]
    models: tuple[dict[str, Any], ...]
    attacks: tuple[dict[str, Any], ...]
    reference: tuple[Reference, ...]
    figure: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def profile(self, name: str) -> Profile:
        """The profile ``name`` or an error listing the valid ones."""
        if name not in self.profiles:
            raise SpecError(f"{self.path}: no profile {name!r}; valid profiles: "
                            f"{', '.join(self.profiles)}.")
        return self.profiles[name]

    def model_plans(self, profile: str) -> list[ModelPlan]:
        """The concrete models of ``profile``: every model entry for every grid assignment, in
        the spec's order (grid-major), parameters validated; adversarial ``start_epoch``
        scaled from the paper profile's epochs to this one's."""
        prof = self.profile(profile)
        paper_epochs = self.profiles["paper"].epochs
        plans: list[ModelPlan] = []
        for i, entry in enumerate(self.models):
            if profile not in entry.get("only", PROFILES):
                continue
            for assignment in prof.assignments(variables(entry)):
                plans.append(_model_plan(self.path, i, substitute(entry, assignment), prof,
                                         paper_epochs))
        _unique(self.path, [p.label for p in plans], kind="model", profile=profile,
                example="A{K}")
        return plans

    def columns_for(self, profile: str) -> tuple[Column, ...]:
        """The attack columns of ``profile``: every entry for every grid assignment of the
        variables it uses, in the spec's order."""
        prof = self.profile(profile)
        columns = tuple(_column(self.path, i, substitute(entry, assignment))
                        for i, entry in enumerate(self.attacks)
                        if profile in entry.get("only", PROFILES)
                        for assignment in prof.assignments(variables(entry)))
        _unique(self.path, [c.label for c in columns], kind="attack", profile=profile,
                example="FGSM ε={E}")
        return columns


def _unique(path: Path, labels: list[str], *, kind: str, profile: str, example: str) -> None:
    """Refuse labels that occur twice in one profile (grid variables missing from a label)."""
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise SpecError(f"{path}: {kind} label(s) {', '.join(dup)} occur more than once in "
                        f"profile {profile!r}; put the grid variables in the label (e.g. "
                        f"label = \"{example}\").")


def variables(entry: Any) -> set[str]:
    """The sweep variables an entry uses (``{NAME}`` anywhere in its strings)."""
    if isinstance(entry, dict):
        return set().union(*(variables(v) for v in entry.values())) if entry else set()
    if isinstance(entry, list):
        return set().union(*(variables(v) for v in entry)) if entry else set()
    return set(_VARIABLE.findall(entry)) if isinstance(entry, str) else set()


def substitute(value: Any, assignment: dict[str, Any]) -> Any:
    """Replace ``"{VAR}"`` (the whole string: the variable's value, typed) or ``{VAR}`` inside
    a longer string (its text) in nested data."""
    if isinstance(value, dict):
        return {k: substitute(v, assignment) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, assignment) for v in value]
    if isinstance(value, str):
        whole = _VARIABLE.fullmatch(value)
        if whole and whole.group(1) in assignment:
            return assignment[whole.group(1)]
        return _VARIABLE.sub(lambda m: str(assignment.get(m.group(1), m.group(0))), value)
    return value


def load(path: Path | str) -> Spec:
    """Read and validate one spec file (see the module doc); its name is
    ``<parent folder>/<stem>``, e.g. ``galloway2018/table1``."""
    from bnnrobust.experiments.measures import measure_named

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist; 'bnnrobust reproduce --list' shows "
                        "the specs.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}.") from None
    _keys(path, "", data, TOP_KEYS, required=("title", "paper", "dataset", "measure",
                                              "profiles", "models"))
    _choice(path, "paper", data["paper"], PAPERS)
    _check_dataset(path, data["dataset"])
    extra = sorted(set(data["profiles"]) - set(PROFILES))
    if extra:
        raise SpecError(f"{path}: unknown profile {extra[0]!r} under [profiles]; valid "
                        f"profiles: {', '.join(PROFILES)}.")
    profiles = {name: _profile(path, name, data["profiles"].get(name)) for name in PROFILES}
    models = tuple(_entry(path, "models", i, m, MODEL_KEYS, ("label", "family"))
                   for i, m in enumerate(data["models"]))
    if not models:
        raise SpecError(f"{path}: the spec has no [[models]].")
    attacks = tuple(_entry(path, "attacks", i, a, ATTACK_KEYS, ("label", "attack"))
                    for i, a in enumerate(data.get("attacks", [])))
    reference = tuple(Reference(**_entry(path, "reference", i, r, REFERENCE_KEYS,
                                         ("model", "attack", "value")))
                      for i, r in enumerate(data.get("reference", [])))
    figure = data.get("figure", {})
    _keys(path, "figure", figure, FIGURE_KEYS, required=())
    spec = Spec(f"{path.parent.name}/{path.stem}", path, data["title"], data["paper"],
                data["dataset"], data["measure"], profiles, models, attacks, reference,
                figure, data.get("notes", ""))
    plans = {name: spec.model_plans(name) for name in PROFILES}  # validates every model
    try:
        measure = measure_named(data["measure"], where=f"{path}: measure")
    except BnnRobustError as exc:
        raise SpecError(str(exc)) from None
    for name in PROFILES:
        for col in spec.columns_for(name):
            try:
                measure.check_column(col)
            except BnnRobustError as exc:
                raise SpecError(f"{path}: attacks[{col.source}] ({col.label!r}): {exc}") \
                    from None
    try:
        measure.check_spec(spec)
    except BnnRobustError as exc:
        raise SpecError(f"{path}: {exc}") from None
    _check_references(spec, plans["paper"], measure.table_columns(spec))
    return spec


def _check_dataset(path: Path, name: str) -> None:
    from bnnrobust.data import GENERATED, REGISTRY

    valid = (*REGISTRY, *GENERATED, *UNSUPPORTED_DATASETS)
    _choice(path, "dataset", name, valid)


def _check_references(spec: Spec, plans: list[ModelPlan], columns: list[str]) -> None:
    models = {p.label for p in plans}
    for i, ref in enumerate(spec.reference):
        if ref.model not in models:
            raise SpecError(f"{spec.path}: reference[{i}].model = {ref.model!r} is not a model "
                            f"of the paper profile; valid models: {', '.join(sorted(models))}.")
        if ref.attack not in columns:
            raise SpecError(f"{spec.path}: reference[{i}].attack = {ref.attack!r} is not an "
                            f"attack column; valid columns: {', '.join(sorted(columns))}.")


def _model_plan(path: Path, index: int, entry: dict[str, Any], profile: Profile,
                paper_epochs: int) -> ModelPlan:
    from bnnrobust.attacks import ADV_KINDS
    from bnnrobust.models import available, resolve_params

    where = f"models[{index}]"
    _choice(path, f"{where}.family", entry["family"], tuple(available()))
    try:
        params = resolve_params(entry["family"], entry.get("params", {}))
    except BnnRobustError as exc:
        raise SpecError(f"{path}: {where}.params: {exc}") from None
    adversarial = entry.get("adversarial")
    if adversarial is not None:
        _keys(path, f"{where}.adversarial", adversarial, ADVERSARIAL_KEYS, required=("kind",))
        _choice(path, f"{where}.adversarial.kind", adversarial["kind"], ADV_KINDS)
        adversarial = dict(adversarial)
        start = adversarial.get("start_epoch", 0)
        if not 0 <= start < max(paper_epochs, 1):
            raise SpecError(f"{path}: {where}.adversarial.start_epoch = {start} must be in "
                            f"0..{paper_epochs - 1} (the paper profile's epochs).")
        adversarial["start_epoch"] = round(start * profile.epochs / paper_epochs) \
            if paper_epochs else 0
    training = entry.get("training", {})
    _keys(path, f"{where}.training", training, TRAINING_KEYS, required=())
    return ModelPlan(entry["label"], entry["family"], params, adversarial, dict(training))


def _column(path: Path, index: int, entry: dict[str, Any]) -> Column:
    return Column(entry["label"], entry["attack"], dict(entry.get("params", {})),
                  entry.get("adaptive", False), entry.get("metric", "accuracy"),
                  entry.get("note", ""), index)


def _profile(path: Path, name: str, data: Any) -> Profile:
    where = f"profiles.{name}"
    if not isinstance(data, dict):
        raise SpecError(f"{path}: [{where}] is missing; every spec has a 'paper' and a "
                        "'quick' profile.")
    _keys(path, where, data, PROFILE_KEYS, required=("epochs", "test_points", "seeds",
                                                     "chunk"))
    for key, low in (("epochs", 0), ("test_points", 1), ("chunk", 1)):
        if data[key] < low:
            raise SpecError(f"{path}: {where}.{key} = {data[key]} must be >= {low}.")
    seeds = data["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpecError(f"{path}: {where}.seeds must be a non-empty list of integers, got "
                        f"{seeds!r}.")
    grid = {}
    for var, values in data.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: {where}.grid.{var} must be a non-empty list, got "
                            f"{values!r}.")
        grid[var] = tuple(values)
    limit = data.get("train_limit") or None
    time_limit = data.get("time_limit")
    if time_limit is not None and time_limit <= 0:
        raise SpecError(f"{path}: {where}.time_limit = {time_limit} must be > 0 seconds.")
    return Profile(name=name, epochs=data["epochs"], test_points=data["test_points"],
                   seeds=tuple(seeds), chunk=data["chunk"], train_limit=limit,
                   time_limit=None if time_limit is None else float(time_limit), grid=grid)


def _entry(path: Path, table: str, index: int, data: Any, keys: dict[str, type],
           required: tuple[str, ...]) -> dict[str, Any]:
    where = f"{table}[{index}]"
    if not isinstance(data, dict):
        raise SpecError(f"{path}: {where} must be a table ([[{table}]]).")
    _keys(path, where, data, keys, required=required)
    for name in data.get("only", []):
        _choice(path, f"{where}.only", name, PROFILES)
    return dict(data)


def _choice(path: Path, key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SpecError(f"{path}: {key} = {value!r} is unknown; valid choices: "
                        f"{', '.join(valid)}.")


def _keys(path: Path, where: str, data: dict[str, Any], keys: dict[str, type], *,
          required: tuple[str, ...]) -> None:
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise SpecError(f"{path}: unknown key {prefix}{unknown[0]}; valid keys"
                        f"{' in [' + where + ']' if where else ''}: {', '.join(keys)}.")
    for key in required:
        if key not in data:
            raise SpecError(f"{path}: missing key {prefix}{key}.")
    for key, value in data.items():
        kind = keys[key]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise SpecError(f"{path}: {prefix}{key} must be {kind.__name__}, got {value!r}.")
