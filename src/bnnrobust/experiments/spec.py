"""Experiment specs as typed, frozen objects: what :func:`bnnrobust.experiments.parse.load`
makes of one TOML file per table or figure of the papers (``experiments/``).

A :class:`Spec` names the dataset, the *measure* (what is computed per unit of work, see
:mod:`bnnrobust.experiments.measures`), and per profile (``paper``: the paper's settings;
``quick``: CPU-sized) the concrete model rows (:class:`ModelPlan`) and attack columns
(:class:`Column`, with the attack's validated parameters and the measure's validated options),
grid variables already substituted; and the paper's reported values (:class:`Reference`).
Nothing here reads files or validates: parsing happens once, in :mod:`.parse`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnrobust.attacks.base import AttackParams
from bnnrobust.errors import BnnRobustError

PAPERS = ("galloway2018", "khalil2019", "panda2019")
PROFILES = ("paper", "quick")


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
    """One concrete model row of a profile: label, family, resolved parameters, the
    adversarial-training schedule (``start_epoch`` already scaled to the profile), training
    overrides, the values of the sweep variables it was made with (``grid``) and the row of
    the paper's table whose printed values it sits beside (``compare``; empty: its own
    label), e.g. a variant of a paper's model."""

    label: str
    family: str
    params: dict[str, Any]
    adversarial: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    compare: str = ""


@dataclass(frozen=True)
class Column:
    """One attack column of a profile.

    ``attack``: a catalogue attack or a measure's own column kind (``"clean"``,
    ``"surface"``); ``params``: the attack's validated parameters (None for an own kind);
    ``given``: the parameter names the spec set (the others are defaults; an attack's
    ``seed`` defaults to the model's seed); ``options``: the measure's validated options
    (``[[attacks]] options = {...}``); ``source``: index of its ``[[attacks]]`` entry;
    ``grid``: the values of the sweep variables it was made with.
    """

    label: str
    attack: str
    params: AttackParams | None
    given: tuple[str, ...] = ()
    options: Any = None
    adaptive: bool = False
    metric: str = "accuracy"
    note: str = ""
    source: int = 0
    grid: dict[str, Any] = field(default_factory=dict)

    def params_for(self, seed: int) -> AttackParams | None:
        """The attack's parameters for a model trained with ``seed``: the column's, with the
        attack seed set to ``seed`` unless the spec gave one."""
        if self.params is None or "seed" in self.given:
            return self.params
        return dataclasses.replace(self.params, seed=seed)


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
class FigureSettings:
    """How a measure that can draw lines draws them (``[figure]``): ``kind`` ``"lines"`` (values
    against the attack parameter ``x``) or ``"bars"`` (default)."""

    kind: str = "bars"
    x: str = "eps"
    xlabel: str | None = None
    ylabel: str | None = None
    log_x: bool = False


@dataclass(frozen=True)
class Spec:
    """A parsed, validated spec; ``name``: ``<paper folder>/<file stem>``."""

    name: str
    path: Path
    title: str
    paper: str
    dataset: str
    measure: str
    profiles: dict[str, Profile]
    plans: dict[str, tuple[ModelPlan, ...]]
    columns: dict[str, tuple[Column, ...]]
    reference: tuple[Reference, ...]
    figure: FigureSettings = field(default_factory=FigureSettings)
    notes: str = ""

    def profile(self, name: str) -> Profile:
        """The profile ``name`` or an error listing the valid ones."""
        if name not in self.profiles:
            raise SpecError(f"{self.path}: no profile {name!r}; valid profiles: "
                            f"{', '.join(self.profiles)}.")
        return self.profiles[name]

    def model_plans(self, profile: str) -> tuple[ModelPlan, ...]:
        """The concrete models of ``profile``, in the spec's order (grid-major)."""
        self.profile(profile)
        return self.plans[profile]

    def paper_row(self, label: str) -> str:
        """The paper's row that model row ``label`` is compared with (its ``compare``, else
        the label itself)."""
        for plans in self.plans.values():
            for plan in plans:
                if plan.label == label and plan.compare:
                    return plan.compare
        return label

    def columns_for(self, profile: str) -> tuple[Column, ...]:
        """The attack columns of ``profile``, in the spec's order."""
        self.profile(profile)
        return self.columns[profile]

    def sliced(self, profile: str, *, models: Sequence[str] = (),
               columns: Sequence[str] = (),
               grid: Mapping[str, Sequence[Any]] | None = None) -> Spec:
        """This spec with ``profile`` cut to a slice: the model rows labelled in ``models``
        and the attack columns labelled in ``columns`` (all when empty), and the rows and
        columns whose sweep variables take only the values in ``grid`` (e.g.
        ``{"K": [64]}``). The units of a slice are the full profile's, so its results are
        the full run's. An unknown label, variable or value is a :class:`SpecError` listing
        the valid ones."""
        prof = self.profile(profile)
        wanted: dict[str, list[Any]] = {}
        for var, values in (grid or {}).items():
            if var not in prof.grid:
                raise SpecError(f"{self.name}: profile {profile!r} has no sweep variable "
                                f"{var!r}; its variables: {', '.join(prof.grid) or 'none'}.")
            by_text = {str(v): v for v in prof.grid[var]}  # "64" from a command line is 64
            bad = [v for v in values if str(v) not in by_text]
            if bad or not values:
                raise SpecError(f"{self.name}: {var} = {bad[0] if bad else 'nothing'} is not "
                                f"in profile {profile!r}; its values: "
                                f"{', '.join(by_text)}.")
            wanted[var] = [by_text[str(v)] for v in values]
        grid = wanted

        def kept(assignment: dict[str, Any]) -> bool:
            return all(assignment[v] in grid[v] for v in grid if v in assignment)

        plans = [p for p in self.plans[profile] if kept(p.grid)]
        labels = [p.label for p in self.plans[profile]]
        unknown = [m for m in models if m not in labels]
        if unknown:
            raise SpecError(f"{self.name}: no model row {unknown[0]!r} in profile {profile!r}; "
                            f"its rows: {', '.join(labels)}.")
        plans = [p for p in plans if not models or p.label in models]
        if not plans:
            raise SpecError(f"{self.name}: the slice (models {', '.join(models)}, grid "
                            f"{grid}) holds no model row of profile {profile!r}.")
        names = [c.label for c in self.columns[profile]]
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise SpecError(f"{self.name}: no attack column {unknown[0]!r} in profile "
                            f"{profile!r}; its columns: {', '.join(names)}.")
        kept_columns = tuple(c for c in self.columns[profile]
                             if kept(c.grid) and (not columns or c.label in columns))
        if not kept_columns:
            raise SpecError(f"{self.name}: the slice (columns {', '.join(columns)}, grid "
                            f"{grid}) holds no attack column of profile {profile!r}.")
        return dataclasses.replace(self, plans={**self.plans, profile: tuple(plans)},
                                   columns={**self.columns, profile: kept_columns})
