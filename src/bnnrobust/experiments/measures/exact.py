"""The ``exact`` measure: the combinatorial attacks of Khalil et al. (2019) on fully connected
BNNs, point by point (Figures 2-6 and the MILP solve times of section 5.1).

Columns (each attacks every point toward the class with the second-highest output, within the
profile's ``time_limit`` seconds per point):

- ``milp``: :class:`~bnnrobust.attacks.combinatorial.MILPAttack` (``eps``, ``backend`` cpsat or
  highs, ``hint`` fgsm or none, ``threads``); the option ``start = "fgsm"`` first runs iterated
  FGSM for a share of the time limit (``start_share``, default 5/180) and starts the solver
  from its result for the rest of it: the point's time includes the warm start;
- ``iterated-fgsm``: iterated FGSM through the straight-through surrogate (``eps``,
  ``steps``, ``restarts``), the paper's baseline;
- ``iprop``: :class:`~bnnrobust.attacks.combinatorial.IProp` (``eps``, ``step`` "adaptive" or
  a constant, ``warm_start`` none or fgsm, ``warm_start_time``, ``sub_time_limit``: default the
  paper's ratio, 10 s of 180 s).

A unit is one chunk of points; it stores each point's status, objective, bound, time and
incumbent trace and the objective at the unperturbed input (not the perturbation). Tables:
flip rate (objective > 0) in %, mean objective, mean normalized objective (the objective over
the point's starting gap ``|f_t − f_p|`` at ``x``: −1 = no change, > 0 = a flip; the paper
plots a "normalized objective" without defining it, this is our reading), and for MILP columns
the share proven optimal and the mean and median solve time. Figures: flip-rate bars, box
plots of the normalized objective (Figure 3) and the mean normalized incumbent objective over
time (Figure 4).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from bnnrobust.attacks.catalogue import entry
from bnnrobust.experiments.measures.base import (
    Cell,
    Measure,
    MeasureError,
    Options,
    Table,
    Task,
    attach_references,
    cells_by_seed,
    model_rows,
)
from bnnrobust.experiments.store import StoredRow

STATS = ("optimal %", "mean s", "median s")


@dataclass(frozen=True, kw_only=True)
class ExactOptions(Options):
    """``start``: ``"fgsm"`` runs iterated FGSM first and starts the attack from its result;
    ``"none"`` (default) starts from the attack's own solution. The warm start comes out of
    the same time limit ("all methods are run with a time cutoff of 3 minutes"): it gets
    ``start_share`` of it (default 5/180, the paper's 5 s warm start of Figure 6 in its 3
    minutes), the attack the rest, and a point's time is the sum."""

    start: str = "none"
    start_share: float = 5 / 180

    def __post_init__(self) -> None:
        if self.start not in ("fgsm", "none"):
            raise MeasureError(f"start must be fgsm or none, got {self.start!r}.")
        share = self.start_share
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share < 1:
            raise MeasureError(f"start_share must be a number in (0, 1), got {share!r}.")


class ExactMeasure(Measure):
    """See the module docstring."""

    name = "exact"
    attacks = ("milp", "iterated-fgsm", "iprop")
    Options = ExactOptions

    def column_params(self, attack, values, options, profile):  # noqa: D102
        if "time_limit" in values:
            raise MeasureError("time_limit comes from the profile's time_limit; remove it.")
        if profile.time_limit is None:
            raise MeasureError(f"profiles.{profile.name}.time_limit (seconds per point) is "
                               "required by the exact measure.")
        values = {"time_limit": profile.time_limit, **values}
        if attack == "iprop":  # the paper's ratio: 10 s subproblems in a 180 s budget
            values.setdefault("sub_time_limit", profile.time_limit * 10 / 180)
        return super().column_params(attack, values, options, profile)

    def check_column(self, column) -> None:  # noqa: D102
        if column.options.start == "fgsm" and column.attack != "milp":
            raise MeasureError("start = \"fgsm\" applies to milp columns only.")

    def check_spec(self, spec) -> None:  # noqa: D102
        for plan in (p for name in spec.profiles for p in spec.model_plans(name)):
            if plan.family != "fc-bnn":
                raise MeasureError(f"model {plan.label!r} is {plan.family!r}; the exact "
                                   "measure attacks fully connected BNNs (fc-bnn) only.")

    def time_bound(self, task: Task) -> float | None:
        """Every point at its time limit: a solve time on a network the calibration could
        use (an untrained one) says nothing about the trained one's."""
        return (task.points[1] - task.points[0]) * task.params.time_limit

    def unit_options(self, profile) -> dict[str, Any]:  # noqa: D102
        return {"time_limit": profile.time_limit}

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        columns = spec.columns_for(profile)
        labels = [c.label for c in columns]
        labels += [f"{c.label} objective" for c in columns]
        labels += [f"{c.label} normalized" for c in columns]
        labels += [f"{c.label} {s}" for c in columns if c.attack == "milp" for s in STATS]
        return labels

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Each point's result (see the module docstring)."""
        model = model.cpu()
        x, y = x.cpu(), y.cpu()
        options, params = task.column.options, task.params
        if options.start == "none":
            attack = entry(task.column.attack).make(model, params)
            result = attack.run(x, y)
            clean = clean_objectives(attack, x, result.extra["points"])
            return {"points": [{"index": task.points[0] + i, "label": int(y[i]), **p,
                                "clean_objective": c}
                               for i, (p, c) in enumerate(zip(result.extra["points"], clean,
                                                              strict=True))]}
        warm_limit = params.time_limit * options.start_share
        rest = dataclasses.replace(params, time_limit=params.time_limit - warm_limit)
        attack = entry(task.column.attack).make(model, rest)
        warm = entry("iterated-fgsm").make(
            model, {"eps": params.eps, "time_limit": warm_limit, "seed": params.seed,
                    "domain": "continuous" if attack.continuous else "grid"}).run(x, y)
        result = attack.run(x, y, start=warm.x_adv)
        clean = clean_objectives(attack, x, result.extra["points"])
        points = []
        for i, (p, w, c) in enumerate(zip(result.extra["points"], warm.extra["points"], clean,
                                          strict=True)):
            points.append({"index": task.points[0] + i, "label": int(y[i]), **p,
                           "seconds": w["seconds"] + p["seconds"],
                           "warm_start_seconds": w["seconds"], "clean_objective": c,
                           "trace": [[t + w["seconds"], v] for t, v in p["trace"]]})
        return {"points": points}

    # ---------------------------------------------------------------- tables
    def _cells(self, spec, profile, rows, column, value_of) -> dict[tuple[str, str], Cell]:
        units = [t.unit for t in self.tasks(spec, profile) if t.unit.attack == column.label]
        return cells_by_seed(rows, lambda got: value_of(
            [p for r in got for p in r.value["points"]]), expected=units)

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        columns = spec.columns_for(profile.name)
        flips = Table(f"{spec.title}: flip rate", [c.label for c in columns],
                      model_rows(spec, profile))
        objective = Table(f"{spec.title}: mean objective f_target − f_prediction",
                          [f"{c.label} objective" for c in columns],
                          model_rows(spec, profile), unit="objective")
        normalized = Table(f"{spec.title}: mean normalized objective (f_t − f_p) / |f_t − f_p "
                           "at x| (−1: no change; > 0: a flip)",
                           [f"{c.label} normalized" for c in columns],
                           model_rows(spec, profile), unit="objective")
        milp = [c for c in columns if c.attack == "milp"]
        stats = Table(f"{spec.title}: MILP solve statistics",
                      [f"{c.label} {s}" for c in milp for s in STATS], model_rows(spec, profile),
                      unit="% proven / seconds")
        for column in columns:
            for (model, _), cell in self._cells(
                    spec, profile, rows, column,
                    lambda pts: 100.0 * sum(p["flipped"] for p in pts) / len(pts)).items():
                flips.rows[model][column.label] = cell
            for (model, _), cell in self._cells(
                    spec, profile, rows, column,
                    lambda pts: statistics.fmean(p["objective"] for p in pts)).items():
                objective.rows[model][f"{column.label} objective"] = cell
            for (model, _), cell in self._cells(
                    spec, profile, rows, column,
                    lambda pts: statistics.fmean(normalized_objective(p) for p in pts)).items():
                normalized.rows[model][f"{column.label} normalized"] = cell
            if column.attack != "milp":
                continue
            for stat, fn in zip(STATS, (
                    lambda pts: 100.0 * sum(p["status"] == "optimal" for p in pts) / len(pts),
                    lambda pts: statistics.fmean(p["seconds"] for p in pts),
                    lambda pts: statistics.median(p["seconds"] for p in pts)), strict=True):
                for (model, _), cell in self._cells(spec, profile, rows, column, fn).items():
                    stats.rows[model][f"{column.label} {stat}"] = cell
        tables = [flips, objective, normalized] + ([stats] if milp else [])
        return [attach_references(spec, t) for t in tables]


def clean_objectives(attack, x: torch.Tensor, points: list[dict[str, Any]]) -> list[float]:
    """Each point's objective ``f_target − f_prediction`` at the unperturbed input."""
    # the combinatorial package needs OR-Tools: imported where a unit runs, not when the
    # spec is loaded
    from bnnrobust.attacks.combinatorial.attack import grid_pixels
    from bnnrobust.attacks.combinatorial.problem import objective_of

    pixels = grid_pixels(x)
    return [objective_of(attack.integer, pix, p["target"], p["prediction"])
            for pix, p in zip(pixels, points, strict=True)]


def normalized_objective(point: dict[str, Any], value: float | None = None) -> float:
    """The objective divided by the size of the point's starting gap ``|f_t − f_p|`` at the
    unperturbed input: −1 where the attack changed nothing, > 0 where it flipped the point.
    (Khalil et al. plot a "normalized objective" without defining it: our reading.)"""
    value = point["objective"] if value is None else value
    return value / max(abs(point["clean_objective"]), 1e-12)
