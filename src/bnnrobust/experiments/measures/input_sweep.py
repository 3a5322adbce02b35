"""The ``input_sweep`` measure: the output layer of a BNN and of its approximate BNN as one
input value varies (Khalil et al. 2019, Figure 1: a 3 × 30 BNN, two output classes).

The column kind is ``sweep`` (no attack), with options (:class:`InputSweepOptions`): the test
point (``index``, default 0), the input dimension varied (``feature``; default the one whose
approximate-BNN gradient of ``f_second − f_first`` is largest), the half-width of the range
(``radius``, default 0.1 around the pixel's value, inside [0, 1]) and ``points`` (201). The two
classes are the model's two highest outputs at the point (the paper's network had two
outputs; ours are the 10 of MNIST). A unit stores both outputs along the sweep for the true BNN
(sign activations) and the approximate BNN (sign replaced by ``clip(x, −1, 1)`` in the forward
pass: what the FGSM baseline differentiates). The table shows, per model, how often the sign of
``f_first − f_second`` changes along the sweep in each network and the largest gap between the
two networks' ``f_first − f_second``. The figure draws both outputs per network. The paper
prints no numbers for this figure.
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
    check_count,
    model_rows,
    per_unit_stats,
)
from bnnrobust.experiments.store import StoredRow
from bnnrobust.nn import approximate_activations
from bnnrobust.train import eval_mode

STATS = ("sign changes (BNN)", "sign changes (approximate)", "largest gap")


@dataclass(frozen=True, kw_only=True)
class InputSweepOptions(Options):
    """``index`` (>= 0), ``feature`` (None: chosen by the gradient), ``radius`` (in (0, 1]),
    ``points`` (>= 3): see the module doc."""

    index: int = 0
    feature: int | None = None
    radius: float = 0.1
    points: int = 201

    def __post_init__(self) -> None:
        check_count("index", self.index, 0)
        if self.feature is not None:
            check_count("feature", self.feature, 0)
        if not isinstance(self.radius, (int, float)) or isinstance(self.radius, bool) \
                or not 0 < self.radius <= 1:
            raise MeasureError(f"radius must be a number in (0, 1], got {self.radius!r}.")
        check_count("points", self.points, 3)


def outputs_along(model: torch.nn.Module, x: torch.Tensor, feature: int,
                  values: torch.Tensor, *, approximate: bool) -> torch.Tensor:
    """The model's logits at ``x`` with input ``feature`` set to each of ``values``."""
    batch = x.flatten().repeat(len(values), 1)
    batch[:, feature] = values
    batch = batch.reshape(len(values), *x.shape)
    with torch.no_grad(), eval_mode(model):
        if approximate:
            with approximate_activations(model):
                return model(batch).cpu()
        return model(batch).cpu()


def sign_changes(differences: list[float]) -> int:
    """How often consecutive values change sign (zeros skipped)."""
    signs = [d > 0 for d in differences if d != 0]
    return sum(a != b for a, b in zip(signs, signs[1:], strict=False))


class InputSweepMeasure(Measure):
    """See the module docstring."""

    name = "input_sweep"
    attacks = ("sweep",)
    own = ("sweep",)
    Options = InputSweepOptions
    chunked = False

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        return list(STATS)

    def check_spec(self, spec) -> None:  # noqa: D102
        for name in spec.profiles:
            if len(spec.columns_for(name)) != 1:
                raise MeasureError("the input_sweep measure takes exactly one [[attacks]] "
                                   "entry (attack = \"sweep\").")
            index = spec.columns_for(name)[0].options.index
            if index >= spec.profiles[name].test_points:
                raise MeasureError(f"options.index = {index} is beyond profiles.{name}."
                                   f"test_points = {spec.profiles[name].test_points}.")

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Both networks' two outputs along the sweep (see the module docstring)."""
        options = task.column.options
        point = x[options.index:options.index + 1].to(model_device(model))
        with torch.no_grad(), eval_mode(model):
            first, second = model(point)[0].topk(2).indices.tolist()
        feature = options.feature
        if feature is None:
            grad_x = point.clone().requires_grad_(True)
            with eval_mode(model), approximate_activations(model), torch.enable_grad():
                out = model(grad_x)[0]
                (grad,) = torch.autograd.grad(out[second] - out[first], grad_x)
            feature = int(grad.abs().flatten().argmax())
        if feature >= point[0].numel():
            raise MeasureError(f"options.feature = {feature} is beyond the input size "
                               f"{point[0].numel()}.")
        centre = float(point.flatten()[feature])
        low, high = max(0.0, centre - options.radius), min(1.0, centre + options.radius)
        values = torch.linspace(low, high, options.points)
        true = outputs_along(model, point[0], feature, values, approximate=False)
        approx = outputs_along(model, point[0], feature, values, approximate=True)
        return {"index": options.index, "feature": feature, "classes": [first, second],
                "values": [round(v, 6) for v in values.tolist()],
                "bnn": [[round(float(r[first]), 5), round(float(r[second]), 5)] for r in true],
                "approximate": [[round(float(r[first]), 5), round(float(r[second]), 5)]
                                for r in approx]}

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        table = Table(spec.title, list(STATS), model_rows(spec, profile), unit="")

        def gap(v: dict[str, Any]) -> float:
            return max(abs((a[0] - a[1]) - (b[0] - b[1]))
                       for a, b in zip(v["bnn"], v["approximate"], strict=True))

        per_unit_stats(table, rows, expected, [
            (STATS[0], lambda v: float(sign_changes([a - b for a, b in v["bnn"]]))),
            (STATS[1], lambda v: float(sign_changes([a - b for a, b in v["approximate"]]))),
            (STATS[2], gap)])
        return [table]
