"""The ``blackbox`` measure: Papernot et al.'s substitute attack against each model as an
oracle that answers labels only (Galloway et al. 2018, Tables 4 and 5).

The column's attack is ``substitute``; its parameters go to
:func:`bnnrobust.attacks.blackbox_attack` (``holdout``, ``rounds``, ``lmbda``, ``epochs``,
``substitute``, ``substitute_params``, ``attack``, ``tau``, ``reservoir``) except ``eps``, the
FGSM budget on the substitute (default 0.3). One unit per model, seed and column uses the
profile's test points: the first ``holdout`` seed the substitute, the rest are attacked. The
table shows the oracle's accuracy on the transferred examples (``metric = "accuracy"``) or on
the clean evaluation set (``metric = "clean"``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from bnnrobust.attacks import blackbox_attack
from bnnrobust.attacks.base import model_device
from bnnrobust.experiments.measures.base import (
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

METRICS = {"accuracy": "oracle_adversarial_accuracy", "clean": "oracle_clean_accuracy"}
_OWN = ("oracle", "x_test", "y_test", "attack_options", "seed", "device", "progress")


def parameters() -> list[str]:
    """The column parameters this measure takes."""
    names = [p for p in inspect.signature(blackbox_attack).parameters if p not in _OWN]
    return sorted([*names, "eps"])


class BlackBoxMeasure(Measure):
    """See the module docstring."""

    name = "blackbox"
    attacks = ("substitute",)
    chunked = False

    def check_column(self, column) -> None:  # noqa: D102
        super().check_column(column)
        unknown = sorted(set(column.params) - set(parameters()))
        if unknown:
            raise MeasureError(f"substitute has no parameter {unknown[0]!r}; valid parameters: "
                               f"{', '.join(parameters())}.")
        if column.metric not in METRICS:
            raise MeasureError(f"metric {column.metric!r} is unknown; valid metrics: "
                               f"{', '.join(METRICS)}.")

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The attack's result (accuracies, query counts, substitute rounds)."""
        params = dict(task.column["params"])
        eps = params.pop("eps", 0.3)
        result = blackbox_attack(model, x, y, attack_options={"eps": eps}, seed=task.unit.seed,
                                 device=model_device(model), progress=False, **params)
        return result.as_dict()

    def tables(self, spec, profile, rows: dict[str, Row]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        table = Table(spec.title, [c.label for c in spec.columns_for(profile.name)],
                      model_rows(spec, profile))
        for column in spec.columns_for(profile.name):
            key = METRICS[column.metric]
            units = [u for u in expected if u.attack == column.label]
            for (model, col), cell in cells_by_seed(
                    rows, lambda got, key=key: 100.0 * got[0].value[key], expected=units).items():
                table.rows[model][col] = cell
        return [attach_references(spec, table)]

    def figures(self, spec, profile, rows: dict[str, Row], out: Path) -> list[Figure]:  # noqa: D102
        from bnnrobust.experiments.plots import bars, figure_path

        (table,) = self.tables(spec, profile, rows)
        return [bars(table, figure_path(out, spec.name))]
