"""The ``toy_surface`` measure: decision surface and forward derivative of a two-input model
on a grid (Galloway et al. 2018, Appendix B, Figures 3 and 4; after Papernot et al. 2016).

The column's attack is ``surface``, with options (:class:`SurfaceOptions`) ``grid`` (points per
axis, default 101) and ``range`` (``[low, high]`` of both inputs, default ``[0, 1]``). A unit
stores, for one model and seed, the model's output F = sigmoid(logit) at every grid point, the
forward derivative ∂F/∂x2 computed by autograd (through the straight-through estimator of a
quantized layer: the gradient a saliency-map attacker sees), and how many of the AND truth
table's four points the model gets right. The table shows per model: the truth-table accuracy
(%), the share of the grid where ∂F/∂x2 is exactly zero (%: the "destroyed" derivative of the
paper's Figure 4) and the largest |∂F/∂x2|. The figure draws both surfaces per model as heat
maps (the paper draws them in 3-D). The paper prints no numbers for these figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bnnrobust.attacks.base import model_device
from bnnrobust.experiments.measures.base import (
    Measure,
    MeasureError,
    Options,
    Table,
    Task,
    model_rows,
    per_unit_stats,
)
from bnnrobust.experiments.store import StoredRow
from bnnrobust.train import eval_mode

STATS = ("AND accuracy (%)", "∂F/∂x2 = 0 (% of grid)", "max of abs(∂F/∂x2)")


@dataclass(frozen=True, kw_only=True)
class SurfaceOptions(Options):
    """``grid``: points per axis, 2..1001 (101); ``range``: ``[low, high]`` of both inputs,
    low < high (``[0, 1]``)."""

    grid: int = 101
    range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        grid, low_high = self.grid, self.range
        if not isinstance(grid, int) or isinstance(grid, bool) or not 2 <= grid <= 1001:
            raise MeasureError(f"grid must be an integer from 2 to 1001, got {grid!r}.")
        if not (isinstance(low_high, (list, tuple)) and len(low_high) == 2
                and all(isinstance(v, (int, float)) for v in low_high)
                and low_high[0] < low_high[1]):
            raise MeasureError(f"range must be [low, high] with low < high, got {low_high!r}.")
        object.__setattr__(self, "range", (float(low_high[0]), float(low_high[1])))


def surface(model: torch.nn.Module, *, grid: int, low: float, high: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, ∂F/∂x2)`` on a ``grid`` × ``grid`` mesh of [low, high]² (rows: x2, columns: x1),
    F = sigmoid of the model's single logit; the derivative by autograd, in eval mode."""
    axis = torch.linspace(low, high, grid)
    x2, x1 = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([x1.flatten(), x2.flatten()], dim=1).to(model_device(model))
    points.requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        out = torch.sigmoid(model(points)[:, 0])
        (grad,) = torch.autograd.grad(out.sum(), points)
    return out.detach().view(grid, grid).cpu(), grad[:, 1].view(grid, grid).cpu()


class ToySurfaceMeasure(Measure):
    """See the module docstring."""

    name = "toy_surface"
    attacks = ("surface",)
    own = ("surface",)
    Options = SurfaceOptions
    chunked = False

    def check_spec(self, spec) -> None:  # noqa: D102
        if spec.dataset != "and":
            raise MeasureError(f"the toy_surface measure needs dataset = \"and\" (two inputs), "
                               f"got {spec.dataset!r}.")

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        columns = spec.columns_for(profile)
        return [_label(c, stat, single=len(columns) == 1) for c in columns for stat in STATS]

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Surface, derivative and truth-table count (see the module docstring)."""
        grid, (low, high) = task.column.options.grid, task.column.options.range
        out, grad = surface(model, grid=grid, low=low, high=high)
        with torch.no_grad(), eval_mode(model):
            pred = (model(x.to(model_device(model)))[:, 0] > 0).long().cpu()
        return {"grid": grid, "range": [low, high],
                "surface": [[round(v, 6) for v in row] for row in out.tolist()],
                "derivative": [[float(f"{v:.6g}") for v in row] for row in grad.tolist()],
                "correct": int((pred == y).sum()), "n": len(y)}

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        columns = spec.columns_for(profile.name)
        table = Table(spec.title, self.table_columns(spec, profile.name),
                      model_rows(spec, profile), unit="")
        readers = (lambda v: 100.0 * v["correct"] / v["n"],
                   lambda v: 100.0 * _flat_share(v["derivative"]),
                   lambda v: max(abs(d) for row in v["derivative"] for d in row))
        for column in columns:
            per_unit_stats(table, rows, [u for u in expected if u.attack == column.label],
                           [(_label(column, stat, single=len(columns) == 1), read)
                            for stat, read in zip(STATS, readers, strict=True)])
        return [table]


def _label(column, stat: str, *, single: bool) -> str:
    return stat if single else f"{column.label}: {stat}"


def _flat_share(derivative: list[list[float]]) -> float:
    values = [d for row in derivative for d in row]
    return sum(1 for d in values if d == 0.0) / len(values)
