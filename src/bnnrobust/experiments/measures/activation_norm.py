"""The ``activation_norm`` measure: the L1 norm of the first hidden layer's activations on
clean and attacked inputs (Panda et al. 2019, Figure 6: binarized vs full-precision FCN1 and
FCN2 on MNIST, clean and FGSM ε = 0.1, 0.3).

Columns are those of the ``accuracy`` measure (``clean`` or an attack with its parameters;
options as the accuracy measure's, without ``all_targets``).
Per input, the value is the L1 norm of the first weight layer's output (before batch norm
and the activation: after a sign the norm would be constant), divided by the number of units:
the mean absolute pre-activation, our reading of the paper's "normalized L1 norm". A unit
stores these values for its chunk of test points. The table shows per model and column the
median and the maximum over inputs and, for attacked columns, the share of inputs whose norm
exceeds the largest clean one (the paper: a BNN's norms at small ε stay within the clean
range, at large ε they leave it). The figure is one box plot per model (whiskers at min and
max). The paper prints no numbers for this figure.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import model_device
from bnnrobust.attacks.catalogue import names
from bnnrobust.experiments.measures.accuracy import AccuracyMeasure, attacked
from bnnrobust.experiments.measures.base import (
    MeasureError,
    Table,
    Task,
    cells_by_seed,
    model_rows,
)
from bnnrobust.experiments.store import StoredRow
from bnnrobust.train import eval_mode

STATS = ("median", "max", "above clean max (%)")


def first_weight_layer(model: nn.Module) -> nn.Module:
    """The first module with a weight matrix or kernel (a linear or convolution layer)."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            return module
    raise MeasureError(f"{type(model).__name__} has no linear or convolution layer.")


def first_layer_norms(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000
                      ) -> list[float]:
    """Per input: mean |output| of :func:`first_weight_layer` (see the module docstring)."""
    captured: list[torch.Tensor] = []
    handle = first_weight_layer(model).register_forward_hook(
        lambda mod, inputs, output: captured.append(output.detach().flatten(1).abs().mean(1)))
    try:
        with torch.no_grad(), eval_mode(model):
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size].to(model_device(model)))
    finally:
        handle.remove()
    return torch.cat(captured).cpu().tolist() if captured else []


class ActivationNormMeasure(AccuracyMeasure):
    """See the module docstring (columns are validated as the accuracy measure's)."""

    name = "activation_norm"
    own = ("clean",)
    attacks = ("clean", *names("gradient"))

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        columns = spec.columns_for(profile)
        has_clean = any(c.attack == "clean" for c in columns)
        return [f"{c.label}: {stat}" for c in columns for stat in _stats(c, has_clean=has_clean)]

    def check_column(self, column) -> None:  # noqa: D102
        if column.options.all_targets:
            raise MeasureError("activation_norm takes no all_targets (one input per point).")

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The per-input norms of the chunk's (attacked) inputs."""
        _, _, x_adv, _, _ = attacked(task, model, x, y)
        return {"norms": [round(v, 6) for v in first_layer_norms(model, x_adv)]}

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        columns = spec.columns_for(profile.name)
        clean = next((c.label for c in columns if c.attack == "clean"), None)
        table = Table(spec.title, self.table_columns(spec, profile.name),
                      model_rows(spec, profile), unit="")
        clean_max: dict[tuple[str, int], float] = {}
        if clean is not None:
            for unit in expected:
                if unit.attack == clean and unit.key in rows:
                    key = (unit.model, unit.seed)
                    clean_max[key] = max(clean_max.get(key, 0.0),
                                         max(rows[unit.key].value["norms"]))
        for column in columns:
            units = [u for u in expected if u.attack == column.label]
            for stat in _stats(column, has_clean=clean is not None):
                def value_of(got: list[StoredRow], stat: str = stat) -> float | None:
                    norms = sorted(v for r in got for v in r.value["norms"])
                    if stat == "median":
                        return norms[len(norms) // 2]
                    if stat == "max":
                        return norms[-1]
                    top = clean_max.get((got[0].unit.model, got[0].unit.seed))
                    return None if top is None else \
                        100.0 * sum(v > top for v in norms) / len(norms)
                for (model, _), cell in cells_by_seed(rows, value_of, expected=units).items():
                    table.rows[model][f"{column.label}: {stat}"] = cell
        return [table]

def _stats(column, *, has_clean: bool) -> tuple[str, ...]:
    return STATS if column.attack != "clean" and has_clean else STATS[:2]
