"""The ``exact`` measure: the combinatorial attacks of Khalil et al. (2019) on fully connected
BNNs, point by point (Figures 2-6 and the MILP solve times of section 5.1).

Columns (each attacks every point toward the class with the second-highest output, within the
profile's ``time_limit`` seconds per point):

- ``milp``: :class:`~bnnrobust.attacks.combinatorial.MILPAttack` (``eps``, ``backend`` cpsat or
  highs, ``hint`` fgsm or none, ``threads``; ``start = "fgsm"`` first runs iterated FGSM for the
  same time limit and starts the solver from its result, so that MILP never flips fewer points
  than the baseline: the solver then gets the time limit on top);
- ``fgsm``: iterated FGSM through the straight-through surrogate (``eps``, ``steps``,
  ``restarts``), the paper's baseline;
- ``iprop``: :class:`~bnnrobust.attacks.combinatorial.IProp` (``eps``, ``step`` "adaptive" or
  a constant, ``warm_start`` none or fgsm, ``warm_start_time``, ``sub_time_limit``: default the
  paper's ratio, 10 s of 180 s).

A unit is one chunk of points; it stores each point's status, objective, bound, time and
incumbent trace (not the perturbation). Tables: flip rate (objective > 0) in %, mean
objective, and for MILP columns the share proven optimal and the mean and median solve time.
Figures: flip-rate bars and the mean incumbent objective over time (Figure 4; the paper's
normalization is not defined, so the raw objective is shown).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnnrobust.experiments.measures.base import (
    Cell,
    Figure,
    Measure,
    MeasureError,
    Table,
    Task,
    attach_references,
    cells_by_seed,
    model_rows,
)
from bnnrobust.experiments.store import Row

PARAMS = {"milp": ("eps", "backend", "hint", "threads", "start"),
          "fgsm": ("eps", "steps", "restarts"),
          "iprop": ("eps", "step", "warm_start", "warm_start_time", "sub_time_limit")}
STATS = ("optimal %", "mean s", "median s")


class ExactMeasure(Measure):
    """See the module docstring."""

    name = "exact"
    attacks = tuple(PARAMS)

    def check_column(self, column) -> None:  # noqa: D102
        super().check_column(column)
        unknown = sorted(set(column.params) - set(PARAMS[column.attack]))
        if unknown:
            raise MeasureError(f"{column.attack} has no parameter {unknown[0]!r}; valid "
                               f"parameters: {', '.join(PARAMS[column.attack])}.")
        if column.params.get("start", "fgsm") not in ("fgsm", "none"):
            raise MeasureError(f"start must be fgsm or none, got {column.params['start']!r}.")
        eps = column.params.get("eps")
        if not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise MeasureError(f"eps must be a number in (0, 1), got {eps!r}.")

    def check_spec(self, spec) -> None:  # noqa: D102
        for name, profile in spec.profiles.items():
            if profile.time_limit is None:
                raise MeasureError(f"profiles.{name}.time_limit (seconds per point) is "
                                   "required by the exact measure.")
        for plan in (p for name in spec.profiles for p in spec.model_plans(name)):
            if plan.family != "fc-bnn":
                raise MeasureError(f"model {plan.label!r} is {plan.family!r}; the exact "
                                   "measure attacks fully connected BNNs (fc-bnn) only.")

    def unit_options(self, profile) -> dict[str, Any]:  # noqa: D102
        return {"time_limit": profile.time_limit}

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        columns = spec.columns_for(profile)
        labels = [c.label for c in columns]
        labels += [f"{c.label} objective" for c in columns]
        labels += [f"{c.label} {s}" for c in columns if c.attack == "milp" for s in STATS]
        return labels

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Each point's result (see the module docstring)."""
        from bnnrobust.attacks.combinatorial import IProp, MILPAttack, export, iterated_fgsm

        model = model.cpu()
        params = dict(task.column["params"])
        limit = task.options["time_limit"]
        ib = export(model)
        pixels = (x.flatten(1) * 255).round().to(torch.uint8).numpy().astype(np.int64)
        points = []
        for offset, p in enumerate(pixels):
            kind = task.column["attack"]
            if kind == "milp":
                options = {k: v for k, v in params.items() if k != "start"}
                start = None
                if params.get("start") == "fgsm":
                    start = iterated_fgsm(model, ib, p, eps=params["eps"], time_limit=limit,
                                          seed=task.unit.seed).perturbation
                result = MILPAttack(model, time_limit=limit, seed=task.unit.seed,
                                    **options).attack(p, start_from=start)
            elif kind == "fgsm":
                result = iterated_fgsm(model, ib, p, time_limit=limit, seed=task.unit.seed,
                                       **params)
            else:
                params.setdefault("sub_time_limit", limit * 10 / 180)
                result = IProp(model, time_limit=limit, seed=task.unit.seed,
                               **params).attack(p)
            data = result.as_dict()
            data.pop("perturbation", None)
            points.append({"index": task.points[0] + offset, "label": int(y[offset]), **data})
        return {"points": points}

    # ---------------------------------------------------------------- tables
    def _cells(self, spec, profile, rows, column, value_of) -> dict[tuple[str, str], Cell]:
        units = [t.unit for t in self.tasks(spec, profile) if t.unit.attack == column.label]
        return cells_by_seed(rows, lambda got: value_of(
            [p for r in got for p in r.value["points"]]), expected=units)

    def tables(self, spec, profile, rows: dict[str, Row]) -> list[Table]:  # noqa: D102
        columns = spec.columns_for(profile.name)
        flips = Table(f"{spec.title}: flip rate", [c.label for c in columns],
                      model_rows(spec, profile))
        objective = Table(f"{spec.title}: mean objective f_target − f_prediction",
                          [f"{c.label} objective" for c in columns],
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
            if column.attack != "milp":
                continue
            for stat, fn in zip(STATS, (
                    lambda pts: 100.0 * sum(p["status"] == "optimal" for p in pts) / len(pts),
                    lambda pts: statistics.fmean(p["seconds"] for p in pts),
                    lambda pts: statistics.median(p["seconds"] for p in pts)), strict=True):
                for (model, _), cell in self._cells(spec, profile, rows, column, fn).items():
                    stats.rows[model][f"{column.label} {stat}"] = cell
        tables = [flips, objective] + ([stats] if milp else [])
        return [attach_references(spec, t) for t in tables]

    def figures(self, spec, profile, rows: dict[str, Row], out: Path) -> list[Figure]:  # noqa: D102
        from bnnrobust.experiments.plots import bars, figure_path, traces

        flips = self.tables(spec, profile, rows)[0]
        figures = [bars(flips, figure_path(out, spec.name))]
        series: dict[str, list] = {}
        for row in rows.values():
            for p in row.value["points"]:
                series.setdefault(f"{row.unit.model} {row.unit.attack}", []).append(p["trace"])
        if series:
            figures.append(traces(spec, series, out, horizon=profile.time_limit))
        return figures
