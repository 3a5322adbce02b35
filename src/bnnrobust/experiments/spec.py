"""Experiment specs: one TOML file per table or figure of the papers (``experiments/``).

A spec names the dataset, the measure (what is computed per unit), the models, the attacks,
the paper's reported values, and two profiles (``paper``: the paper's settings; ``quick``: a
CPU-sized version). Sweep variables (``[profiles.<name>.grid]``, e.g. ``K = [64, 128]``) are
substituted into model labels and parameters written as ``"{K}"``. Loading validates every
key; an error names the file, the key and the valid choices.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnrobust.errors import BnnRobustError

PAPERS = ("galloway2018", "khalil2019", "panda2019")
PROFILES = ("paper", "quick")
TOP_KEYS = {"title": str, "paper": str, "dataset": str, "measure": str, "source": str,
            "profiles": dict, "models": list, "attacks": list, "reference": list, "notes": str}
PROFILE_KEYS = {"epochs": int, "train_limit": int, "test_points": int, "seeds": list,
                "chunk": int, "grid": dict, "time_limit": float}
MODEL_KEYS = {"label": str, "family": str, "params": dict, "adversarial": dict, "training": dict}
ATTACK_KEYS = {"label": str, "attack": str, "params": dict, "adaptive": bool, "note": str}
REFERENCE_KEYS = {"model": str, "attack": str, "value": float, "pm": float, "unit": str,
                  "printed": str, "note": str}
_VARIABLE = re.compile(r"\{(\w+)\}")


class SpecError(BnnRobustError):
    """A spec file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Profile:
    """Settings of one profile; ``grid``: sweep variable -> values."""

    epochs: int
    test_points: int
    seeds: tuple[int, ...]
    chunk: int
    train_limit: int | None = None
    time_limit: float | None = None
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def assignments(self) -> list[dict[str, Any]]:
        """Every combination of the sweep variables (one empty dict when there are none)."""
        names = sorted(self.grid)
        return [dict(zip(names, values, strict=True))
                for values in itertools.product(*(self.grid[n] for n in names))]


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
    reference: tuple[dict[str, Any], ...]

    def profile(self, name: str) -> Profile:
        """The profile ``name`` or an error listing the valid ones."""
        if name not in self.profiles:
            raise SpecError(f"{self.path}: no profile {name!r}; valid profiles: "
                            f"{', '.join(self.profiles)}.")
        return self.profiles[name]


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


def load(path: Path | str, *, root: Path | None = None) -> Spec:
    """Read and validate one spec file (see the module doc)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist; 'bnnrobust reproduce --list' shows "
                        "the specs.") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}.") from None
    _keys(path, "", data, TOP_KEYS, required=("title", "paper", "dataset", "measure",
                                              "profiles", "models"))
    if data["paper"] not in PAPERS:
        raise SpecError(f"{path}: paper = {data['paper']!r} is unknown; valid papers: "
                        f"{', '.join(PAPERS)}.")
    profiles = {name: _profile(path, name, data["profiles"].get(name)) for name in PROFILES}
    extra = sorted(set(data["profiles"]) - set(PROFILES))
    if extra:
        raise SpecError(f"{path}: unknown profile(s) {', '.join(extra)} under [profiles]; "
                        f"valid profiles: {', '.join(PROFILES)}.")
    models = tuple(_entry(path, "models", i, m, MODEL_KEYS, ("label", "family"))
                   for i, m in enumerate(data["models"]))
    attacks = tuple(_entry(path, "attacks", i, a, ATTACK_KEYS, ("label", "attack"))
                    for i, a in enumerate(data.get("attacks", [])))
    reference = tuple(_entry(path, "reference", i, r, REFERENCE_KEYS, ("model", "value"))
                      for i, r in enumerate(data.get("reference", [])))
    name = f"{path.parent.name}/{path.stem}" if root is None else \
        path.relative_to(root).with_suffix("").as_posix()
    return Spec(name, path, data["title"], data["paper"], data["dataset"], data["measure"],
                profiles, models, attacks, reference)


def _profile(path: Path, name: str, data: Any) -> Profile:
    where = f"profiles.{name}"
    if not isinstance(data, dict):
        raise SpecError(f"{path}: [{where}] is missing; every spec has a 'paper' and a "
                        "'quick' profile.")
    _keys(path, where, data, PROFILE_KEYS, required=("epochs", "test_points", "seeds",
                                                     "chunk"))
    for key in ("epochs", "test_points", "chunk"):
        if data[key] < 1 if key != "epochs" else data[key] < 0:
            raise SpecError(f"{path}: {where}.{key} = {data[key]} must be positive.")
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
    return Profile(epochs=data["epochs"], test_points=data["test_points"], seeds=tuple(seeds),
                   chunk=data["chunk"], train_limit=limit, time_limit=data.get("time_limit"),
                   grid=grid)


def _entry(path: Path, table: str, index: int, data: Any, keys: dict[str, type],
           required: tuple[str, ...]) -> dict[str, Any]:
    where = f"{table}[{index}]"
    if not isinstance(data, dict):
        raise SpecError(f"{path}: {where} must be a table ([[{table}]]).")
    _keys(path, where, data, keys, required=required)
    return dict(data)


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
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            if kind is float else isinstance(value, kind) and not (
                kind is int and isinstance(value, bool))
        if not ok:
            raise SpecError(f"{path}: {prefix}{key} must be {kind.__name__}, got {value!r}.")
