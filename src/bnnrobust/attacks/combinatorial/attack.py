"""What the exact attacks share under the one attack contract: ``run(x, y)`` on a batch of
8-bit images in [0, 1], point by point, with per-sample status, objective, bound and time.

Every exact attack (:class:`~.milp.MILPAttack`, :class:`~.milp.Certify`,
:class:`~.iprop.IProp`, :class:`~.baseline.IteratedFGSM`) exports its model to integer form
once (:func:`.export.export`: a fully connected BNN, or an :class:`.export.IntegerBNNModule`)
and runs its per-point solver (``attack_point``) on each input. Inputs must lie on the 1/255
grid (8-bit images, as the datasets are): the pixels are ``round(255·x)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, AttackParams, AttackResult, Found
from bnnrobust.attacks.combinatorial.export import IntegerBNNModule, export
from bnnrobust.attacks.combinatorial.problem import (
    ExactResult,
    check_seconds,
    eps_steps,
)
from bnnrobust.train import eval_mode

TARGETS = ("second", "untargeted")


@dataclass(frozen=True, kw_only=True)
class ExactParams(AttackParams):
    """Parameters of every exact attack.

    Args:
        eps: L∞ budget on [0, 1] inputs, in (0, 1] (default 0.01, Khalil et al.'s middle
            value).
        time_limit: seconds per point (default 180: the paper's 3 minutes).
        seed: solver and sampling seed.
    """

    eps: float = 0.01
    time_limit: float = 180.0

    def __post_init__(self) -> None:
        super().__post_init__()
        eps_steps(self.eps)
        self._set("eps", float(self.eps))
        self._set("time_limit", check_seconds("time_limit", self.time_limit))


@dataclass(frozen=True, kw_only=True)
class TargetedParams(ExactParams):
    """Exact-attack parameters with a target.

    Args:
        target: a class index, ``"second"`` (the class with the second-highest output: the
            paper's default) or ``"untargeted"`` (the best over every other class, where the
            attack supports it).
    """

    target: int | str = "second"

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.target
        if isinstance(t, str):
            if t not in TARGETS:
                raise AttackError(f"unknown target {t!r}; expected a class index, 'second' or "
                                  "'untargeted'.")
        elif not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise AttackError(f"target must be a class index >= 0, 'second' or 'untargeted', "
                              f"got {t!r}.")


def grid_pixels(x: torch.Tensor) -> np.ndarray:
    """``round(255·x)`` per input, flattened (int64), after checking that ``x`` lies on the
    1/255 grid."""
    flat = x.detach().reshape(len(x), -1).double().cpu().numpy() * 255.0
    pixels = np.rint(flat)
    off = float(np.abs(flat - pixels).max()) if flat.size else 0.0
    if off > 1e-3:
        raise AttackError(f"exact attacks take 8-bit images: x must lie on the 1/255 grid (a "
                          f"value is {off / 255:.2g} off it). Load the data with "
                          "bnnrobust.data.load, or round it: (x * 255).round() / 255.")
    return pixels.astype(np.int64)


def records(results: list) -> list[dict[str, Any]]:
    """Each point's result as plain data, without the perturbation (``x_adv`` holds it)."""
    out = []
    for r in results:
        data = r.as_dict()
        data.pop("perturbation")
        out.append(data)
    return out


class ExactAttack(Attack):
    """Base class of the exact attacks (see the module doc).

    Subclasses set ``name`` and ``Params`` and implement :meth:`attack_point`.
    """

    Params: ClassVar[type[ExactParams]] = ExactParams
    #: perturbations are real values on the [0, 1] scale (True) or whole pixel steps (False)
    continuous: bool = False

    def __init__(self, model: nn.Module, /, **params: Any) -> None:
        super().__init__(model, **params)
        self.integer = export(model)
        self.torch_model = None if isinstance(model, IntegerBNNModule) else model
        needs = self.gradient_use()
        if needs is not None and self.torch_model is None:
            raise AttackError(f"{needs} needs the PyTorch model (its straight-through "
                              "gradient), not only its integer form.")
        self._start: torch.Tensor | None = None

    def gradient_use(self) -> str | None:
        """What, with these parameters, follows the PyTorch model's gradient (None: nothing;
        the attack then also runs on an :class:`.export.IntegerBNNModule`)."""
        return None

    def run(self, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
            start: torch.Tensor | None = None) -> AttackResult:
        """Attack each input; ``target``: a class per input (wins over the parameter);
        ``start``: a starting point per input (e.g. a gradient attack's adversarial inputs),
        which replaces the attack's own starting solution."""
        if start is not None and (not isinstance(start, torch.Tensor) or start.shape != x.shape):
            raise AttackError(f"start must be a tensor of x's shape {tuple(x.shape)}.")
        self._start = start
        try:
            return super().run(x, y, target=target)
        finally:
            self._start = None

    def attack_point(self, pixels: np.ndarray, *, target: int | str,
                     start: np.ndarray | None = None) -> Any:
        """The per-point solver: one 8-bit input (flat int64), its target, a starting
        perturbation (pixel steps, or real when :attr:`continuous`)."""
        raise NotImplementedError

    def _execute(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
                 measure: bool) -> Found:
        pixels = grid_pixels(x)
        starts = [None] * len(x)
        if self._start is not None:
            moved = self._start.detach().reshape(len(x), -1).double().cpu().numpy()
            starts = [s - p / 255.0 if self.continuous else np.rint(s * 255.0).astype(np.int64) - p
                      for s, p in zip(moved, pixels, strict=True)]
        targets: list[Any] = [self._target_param()] * len(x)
        if target is not None:
            targets = [int(t) for t in target.reshape(-1).tolist()]
            if len(targets) != len(x):
                raise AttackError(f"target must hold one class per input ({len(x)}).")
        results = [self.attack_point(p, target=t, start=s)
                   for p, t, s in zip(pixels, targets, starts, strict=True)]
        return self._found(x, pixels, results)

    def _target_param(self) -> int | str:
        return getattr(self.params, "target", "second")

    def adversarial(self, x: torch.Tensor, pixels: np.ndarray,
                    perturbations: list[np.ndarray | None]) -> torch.Tensor:
        """The adversarial inputs: ``(pixels + steps) / 255`` on the grid, ``x + p`` on the
        continuous box (a missing perturbation leaves the input as it is)."""
        rows = []
        for p, pert in zip(pixels, perturbations, strict=True):
            if pert is None:
                rows.append(p / 255.0)
            elif self.continuous:
                rows.append(np.clip(p / 255.0 + pert, 0.0, 1.0))
            else:
                rows.append((p + pert) / 255.0)
        return torch.tensor(np.array(rows), dtype=torch.float32,
                            device=x.device).reshape(x.shape)

    def replay(self, x: torch.Tensor, x_adv: torch.Tensor, results: list, *,
               ties_count: bool = False) -> list[float | None]:
        """Check every result against the model itself (its own arithmetic, float32 for a
        PyTorch BNN): the prediction at ``x``, and the objective ``f_target − f_prediction``
        at ``x_adv`` (within 1e-4 relative; a flip must be a flip). A result that does not
        hold in the model is an :class:`AttackError`, never a result. ``ties_count``: a
        certification counter-example only needs ``f_target >= f_prediction``. Returns, per
        result, the objective the model computes on ``x_adv`` (None without a target)."""
        computed: list[float | None] = []
        with torch.no_grad(), eval_mode(self.model):
            clean = self.model(x).argmax(1).cpu()
            logits = self.model(x_adv).double().cpu()
        for i, r in enumerate(results):
            if int(clean[i]) != r.prediction:
                raise AttackError(f"point {i}: the model predicts {int(clean[i])} but its integer "
                                  f"form {r.prediction}: the export disagrees; refusing the result.")
            if r.target is None or r.perturbation is None:
                computed.append(None)
                continue
            got = float(logits[i, r.target] - logits[i, r.prediction])
            computed.append(got)
            claimed = getattr(r, "objective", None)
            if claimed is None:  # a certification counter-example: f_target >= f_prediction
                if got < -1e-4 * (1 + abs(got)):
                    raise AttackError(f"point {i}: the counter-example does not hold in the model "
                                      f"(f_target − f_prediction = {got:.6g}); refusing it.")
                continue
            if abs(got - claimed) > 1e-4 * (1 + abs(claimed)) or (got > 0) != (claimed > 0):
                raise AttackError(f"point {i}: the attack reports f_target − f_prediction = "
                                  f"{claimed:.6g} but the model computes {got:.6g} on the "
                                  "returned input; refusing the result.")
        return computed

    def _found(self, x: torch.Tensor, pixels: np.ndarray, results: list[ExactResult]) -> Found:
        device = x.device
        x_adv = self.adversarial(x, pixels, [r.perturbation for r in results])
        computed = self.replay(x, x_adv, results)
        points = records(results)
        for record, value in zip(points, computed, strict=True):
            record["model_objective"] = value  # what the model itself computes on x_adv
        return Found(
            x, x_adv,
            target=torch.tensor([r.target for r in results], device=device),
            success=torch.tensor([r.flipped for r in results], device=device),
            status=tuple(r.status for r in results),
            objective=torch.tensor([r.objective for r in results], dtype=torch.float64,
                                   device=device),
            bound=torch.tensor([r.bound for r in results], dtype=torch.float64, device=device),
            point_seconds=torch.tensor([r.seconds for r in results], dtype=torch.float64,
                                       device=device),
            extra={"points": points})
