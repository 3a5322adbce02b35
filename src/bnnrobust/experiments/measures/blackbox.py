"""The ``blackbox`` measure: Papernot et al.'s substitute attack against each model as an
oracle that answers labels only (Galloway et al. 2018, Tables 4 and 5).

The column's attack is ``substitute``; its parameters are those of
:class:`bnnrobust.attacks.blackbox.SubstituteParams` (``holdout``, ``rounds``, ``lmbda``,
``epochs``, ``substitute``, ``substitute_params``, ``craft``, ``eps``: the budget on the
substitute, default 0.3, ``tau``, ``reservoir``). One unit per model, seed and column uses the
profile's test points: the first ``holdout`` seed the substitute, the rest are attacked. The
table shows the oracle's accuracy on the transferred examples (``metric = "accuracy"``) or on
the clean evaluation set (``metric = "clean"``).
"""

from __future__ import annotations

from typing import Any

import torch

from bnnrobust.attacks import blackbox_attack
from bnnrobust.experiments.measures.base import (
    Measure,
    Table,
    Task,
    attach_references,
    cells_by_seed,
    model_rows,
)
from bnnrobust.experiments.store import StoredRow

METRICS = {"accuracy": "oracle_adversarial_accuracy", "clean": "oracle_clean_accuracy"}


class BlackBoxMeasure(Measure):
    """See the module docstring."""

    name = "blackbox"
    attacks = ("substitute",)
    metrics = tuple(METRICS)
    chunked = False

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The attack's result (accuracies, query counts, substitute rounds)."""
        params = {name: getattr(task.params, name) for name in task.params.names()}
        return blackbox_attack(model, x, y, **params).as_dict()

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
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
