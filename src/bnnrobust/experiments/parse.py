"""Reading spec files: one TOML file per table or figure, parsed once into the typed objects of
:mod:`.spec` and validated on load.

Sweep variables (``[profiles.<name>.grid]``, e.g. ``K = [64, 128, 256]``) are substituted into
model and attack entries written as ``"{K}"``; each entry is repeated for every combination of
the variables it uses. An entry with ``only = ["paper"]`` belongs to the listed profiles only.
A model entry with ``compare = "B{K}"`` is a variant of the paper's row ``B{K}``: the report
puts that row's printed values beside it too.
An adversarial-training schedule's ``start_epoch`` is stated for the ``paper`` profile and
scaled to the other profile's epochs (10 of 15 becomes 1 of 2, rounded). An attack entry's
``params`` go to the attack (validated by its ``Params`` dataclass from the catalogue), its
``options`` to the measure (validated by the measure's ``Options``).

Every error is a :class:`~.spec.SpecError` naming the file, the key and the valid choices.
Example (abridged Galloway Table 1)::

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
    options = { passes = 5 }
    [[reference]]
    model = "A64"
    attack = "FGSM ε=0.1"
    value = 74
    pm = 2
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from bnnrobust.attacks import ADV_KINDS, AdversarialTraining
from bnnrobust.data import GENERATED, REGISTRY
from bnnrobust.errors import BnnRobustError
from bnnrobust.experiments.measures import Measure, measure_named
from bnnrobust.experiments.spec import (
    PAPERS,
    PROFILES,
    Column,
    FigureSettings,
    ModelPlan,
    Profile,
    Reference,
    Spec,
    SpecError,
)
from bnnrobust.models import available, resolve_params
from bnnrobust.train.loop import SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: datasets a spec may name without a reader here: such a spec reports what it needs
TOP_KEYS = {"title": str, "paper": str, "dataset": str, "measure": str, "notes": str,
            "profiles": dict, "models": list, "attacks": list, "reference": list,
            "figure": dict}
PROFILE_KEYS = {"epochs": int, "train_limit": int, "test_points": int, "seeds": list,
                "chunk": int, "grid": dict, "time_limit": float}
MODEL_KEYS = {"label": str, "family": str, "params": dict, "adversarial": dict,
              "training": dict, "note": str, "only": list, "compare": str}
ADVERSARIAL_KEYS = {"kind": str, "eps": float, "start_epoch": int, "steps": int,
                    "alpha": float, "label": str, "loss_label": str, "crafting_bn": str,
                    "sigma": str, "fresh_optimizer": bool, "running_stats": str,
                    "pgd_start": str}
TRAINING_KEYS = {"lr": float, "batch_size": int, "optimizer": str, "clip_weights": bool,
                 "epochs": int, "schedule": str, "weight_decay": float, "center_weights": bool,
                 "augment": str}
ATTACK_KEYS = {"label": str, "attack": str, "params": dict, "options": dict, "adaptive": bool,
               "metric": str, "note": str, "only": list}
REFERENCE_KEYS = {"model": str, "attack": str, "value": float, "pm": float, "printed": str,
                  "note": str}
FIGURE_KEYS = {"kind": str, "x": str, "xlabel": str, "ylabel": str, "log_x": bool}
FIGURE_KINDS = ("bars", "lines")
_VARIABLE = re.compile(r"\{(\w+)\}")


def load(path: Path | str) -> Spec:
    """Read, substitute and validate one spec file; its name is ``<parent folder>/<stem>``,
    e.g. ``galloway2018/table1``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist; 'bnnrobust reproduce --list' shows "
                        "the specs.") from None
    except IsADirectoryError:
        raise SpecError(f"spec path {path} is a folder; give a .toml file.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}.") from None
    _keys(path, "", data, TOP_KEYS, required=("title", "paper", "dataset", "measure",
                                              "profiles", "models"))
    _choice(path, "paper", data["paper"], PAPERS)
    _choice(path, "dataset", data["dataset"], (*REGISTRY, *GENERATED))
    try:
        measure = measure_named(data["measure"], where=f"{path}: measure")
    except BnnRobustError as exc:
        raise SpecError(str(exc)) from None
    extra = sorted(set(data["profiles"]) - set(PROFILES))
    if extra:
        raise SpecError(f"{path}: unknown profile {extra[0]!r} under [profiles]; valid "
                        f"profiles: {', '.join(PROFILES)}.")
    profiles = {name: _profile(path, name, data["profiles"].get(name)) for name in PROFILES}
    models = [_entry(path, "models", i, m, MODEL_KEYS, ("label", "family"))
              for i, m in enumerate(data["models"])]
    if not models:
        raise SpecError(f"{path}: the spec has no [[models]].")
    attacks = [_entry(path, "attacks", i, a, ATTACK_KEYS, ("label", "attack"))
               for i, a in enumerate(data.get("attacks", []))]
    reference = tuple(Reference(**_entry(path, "reference", i, r, REFERENCE_KEYS,
                                         ("model", "attack", "value")))
                      for i, r in enumerate(data.get("reference", [])))
    figure = data.get("figure", {})
    _keys(path, "figure", figure, FIGURE_KEYS, required=())
    if "kind" in figure:
        _choice(path, "figure.kind", figure["kind"], FIGURE_KINDS)
    plans = {name: _plans(path, models, profiles[name], profiles["paper"].epochs)
             for name in PROFILES}
    columns = {name: _columns(path, attacks, profiles[name], measure) for name in PROFILES}
    spec = Spec(f"{path.parent.name}/{path.stem}", path, data["title"], data["paper"],
                data["dataset"], data["measure"], profiles, plans, columns, reference,
                FigureSettings(**figure), data.get("notes", ""))
    try:
        measure.check_spec(spec)
    except BnnRobustError as exc:
        raise SpecError(f"{path}: {exc}") from None
    _check_references(spec, measure.table_columns(spec))
    return spec


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


def _expanded(entries: list[dict[str, Any]], profile: Profile
              ) -> list[tuple[int, dict, dict[str, Any]]]:
    """``(index, entry with its grid variables substituted, their values)`` for every entry of
    the profile and every assignment of the variables it uses."""
    return [(i, substitute(entry, assignment), assignment) for i, entry in enumerate(entries)
            if profile.name in entry.get("only", PROFILES)
            for assignment in profile.assignments(variables(entry))]


def _plans(path: Path, models: list[dict[str, Any]], profile: Profile,
           paper_epochs: int) -> tuple[ModelPlan, ...]:
    plans = tuple(_model_plan(path, i, entry, profile, paper_epochs, grid)
                  for i, entry, grid in _expanded(models, profile))
    labels = [p.label for p in plans]
    _unique(path, labels, kind="model", profile=profile.name, example="A{K}")
    for plan in plans:
        if plan.compare and (plan.compare == plan.label or plan.compare not in labels):
            raise SpecError(f"{path}: model {plan.label!r}: compare = {plan.compare!r} must be "
                            f"another model row of profile {profile.name!r} (the paper's row "
                            f"whose values it sits beside); its rows: {', '.join(labels)}.")
    return plans


def _columns(path: Path, attacks: list[dict[str, Any]], profile: Profile,
             measure: Measure) -> tuple[Column, ...]:
    columns = tuple(_column(path, i, entry, profile, measure, grid)
                    for i, entry, grid in _expanded(attacks, profile))
    _unique(path, [c.label for c in columns], kind="attack", profile=profile.name,
            example="FGSM ε={E}")
    return columns


def _unique(path: Path, labels: list[str], *, kind: str, profile: str, example: str) -> None:
    """Refuse labels that occur twice in one profile (grid variables missing from a label)."""
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise SpecError(f"{path}: {kind} label(s) {', '.join(dup)} occur more than once in "
                        f"profile {profile!r}; put the grid variables in the label (e.g. "
                        f"label = \"{example}\").")


def _check_references(spec: Spec, columns: list[str]) -> None:
    models = {p.label for p in spec.model_plans("paper")}
    seen: dict[tuple[str, str], int] = {}
    for i, ref in enumerate(spec.reference):
        if (ref.model, ref.attack) in seen:
            raise SpecError(f"{spec.path}: reference[{i}] repeats reference"
                            f"[{seen[ref.model, ref.attack]}] (model {ref.model!r}, column "
                            f"{ref.attack!r}); a cell has one paper value: remove one of them.")
        seen[ref.model, ref.attack] = i
        if ref.model not in models:
            raise SpecError(f"{spec.path}: reference[{i}].model = {ref.model!r} is not a model "
                            f"of the paper profile; valid models: {', '.join(sorted(models))}.")
        if ref.attack not in columns:
            raise SpecError(f"{spec.path}: reference[{i}].attack = {ref.attack!r} is not an "
                            f"attack column; valid columns: {', '.join(sorted(columns))}.")


def _model_plan(path: Path, index: int, entry: dict[str, Any], profile: Profile,
                paper_epochs: int, grid: dict[str, Any]) -> ModelPlan:
    where = f"models[{index}]"
    _choice(path, f"{where}.family", entry["family"], tuple(available()))
    try:
        params = resolve_params(entry["family"], entry.get("params", {}))
    except BnnRobustError as exc:
        raise SpecError(f"{path}: {where}.params: {exc}") from None
    training = dict(entry.get("training", {}))
    _keys(path, f"{where}.training", training, TRAINING_KEYS, required=())
    if training.get("schedule", "constant") not in SCHEDULES:
        raise SpecError(f"{path}: {where}.training.schedule = {training['schedule']!r} is "
                        f"unknown; valid choices: {', '.join(SCHEDULES)}.")
    own_epochs = training.get("epochs", paper_epochs)  # this model's paper-profile epochs
    if own_epochs < 1:
        raise SpecError(f"{path}: {where}.training.epochs = {own_epochs} must be >= 1.")
    if "epochs" in training:  # scaled to the profile like the profile's own epochs
        training["epochs"] = max(1, round(own_epochs * profile.epochs / paper_epochs)) \
            if paper_epochs else own_epochs
    adversarial = entry.get("adversarial")
    if adversarial is not None:
        _keys(path, f"{where}.adversarial", adversarial, ADVERSARIAL_KEYS, required=("kind",))
        _choice(path, f"{where}.adversarial.kind", adversarial["kind"], ADV_KINDS)
        adversarial = dict(adversarial)
        start = adversarial.get("start_epoch", 0)
        if not 0 <= start < max(own_epochs, 1):
            raise SpecError(f"{path}: {where}.adversarial.start_epoch = {start} must be in "
                            f"0..{own_epochs - 1} (the model's paper-profile epochs).")
        adversarial["start_epoch"] = round(start * profile.epochs / paper_epochs) \
            if paper_epochs else 0
        if adversarial.get("running_stats") == "mnist-attack":  # it acts in the last epoch
            adversarial["epochs"] = training.get("epochs", profile.epochs)
        try:  # every option's value, as training will build the schedule
            AdversarialTraining(**adversarial)
        except BnnRobustError as exc:
            raise SpecError(f"{path}: {where}.adversarial: {exc}") from None
    return ModelPlan(entry["label"], entry["family"], params, adversarial, training, grid,
                     entry.get("compare", ""))


def _column(path: Path, index: int, entry: dict[str, Any], profile: Profile,
            measure: Measure, grid: dict[str, Any]) -> Column:
    where = f"{path}: attacks[{index}] ({entry['label']!r})"
    _choice(path, f"attacks[{index}].attack", entry["attack"], measure.attacks,
            what=f"an attack the {measure.name!r} measure runs")
    metric = entry.get("metric", measure.metrics[0])
    _choice(path, f"attacks[{index}].metric", metric, measure.metrics)
    values = dict(entry.get("params", {}))
    try:
        options = measure.Options.create(measure.name, dict(entry.get("options", {})))
        params = measure.column_params(entry["attack"], values, options, profile)
        column = Column(entry["label"], entry["attack"], params, tuple(sorted(values)),
                        options, entry.get("adaptive", False), metric, entry.get("note", ""),
                        index, grid)
        measure.check_column(column)
    except BnnRobustError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return column


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


def _choice(path: Path, key: str, value: Any, valid: tuple[str, ...], *,
            what: str = "") -> None:
    if value not in valid:
        kind = f" ({what})" if what else ""
        raise SpecError(f"{path}: {key} = {value!r} is unknown{kind}; valid choices: "
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
