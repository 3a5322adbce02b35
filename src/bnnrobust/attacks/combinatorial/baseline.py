"""The gradient baseline of Khalil et al. (2019): iterated FGSM on objective (1), on the pixel grid.

The gradient is that of "the approximate BNN with g as activation" (the paper): every sign
activation is replaced by ``g(x) = clip(x, −1, 1)`` in the forward pass, the weights stay ±1
(``gradient="approximate"``, the default; :func:`bnnrobust.nn.approximate_activations`); its
perturbations are evaluated on the true BNN. ``gradient="ste"`` takes the BNN's own
straight-through gradient instead (sign forward). The attack ascends
``f_target − f_prediction`` rather than a cross-entropy. It is :class:`~bnnrobust.attacks
.pgd.BIM` with that loss and a step of one pixel level (1/255), run in rounds until the time
limit: the first round starts from ``x`` itself, later rounds from random points of the ε-box.
Every candidate is rounded to the 1/255 grid and scored by the exact integer forward pass; the
best one is kept, with the incumbent objective over time (the paper's Figure 4).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bnnrobust.attacks.base import AttackError, check_choice, check_steps
from bnnrobust.attacks.combinatorial.attack import ExactAttack, TargetedParams
from bnnrobust.attacks.combinatorial.export import IntegerBNN
from bnnrobust.attacks.combinatorial.problem import (
    ExactResult,
    check_pixels,
    check_seconds,
    eps_steps,
    grid_steps,
    objective_of,
    resolve_target,
)
from bnnrobust.attacks.pgd import PGD
from bnnrobust.nn import approximate_activations
from bnnrobust.train import eval_mode

GRADIENTS = ("approximate", "ste")
DOMAINS = ("grid", "continuous")


class MarginPGD(PGD):
    """PGD/BIM ascending the margin ``f_target − f_label`` (objective (1) of Khalil et al.).

    ``y`` is the class to push down (the prediction), ``target`` the class to push up.
    """

    name = "margin-pgd"

    def loss(self, logits: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> torch.Tensor:  # noqa: D102
        return (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None]))[:, 0]


def iterated_fgsm(model: nn.Module, ib: IntegerBNN, pixels: np.ndarray, *, eps: float,
                  target: int | str = "second", time_limit: float = 180.0, steps: int = 20,
                  restarts: int = 16, max_rounds: int | None = None, seed: int = 0,
                  gradient: str = "approximate", domain: str = "grid") -> ExactResult:
    """Best perturbation iterated FGSM finds within ``time_limit`` seconds.

    Args:
        model: the PyTorch BNN (its surrogate gradient is used); ib: its integer form.
        pixels: one 8-bit input (0..255). eps: L∞ budget.
        domain: ``"grid"`` (whole pixel steps, at most floor(255·ε), scored by the integer
            forward pass; the perturbation in pixel steps) or ``"continuous"`` (the paper's
            problem: any ``|p| <= ε``, scored by the model itself in its own arithmetic; the
            perturbation on the [0, 1] scale).
        target: a class or ``"second"``. steps: FGSM iterations per round (20).
        restarts: inputs per round after the first (random starts in the box; 16).
        max_rounds: stop after this many rounds even with time left (None: run to the limit).
        gradient: ``"approximate"`` (the paper's approximate BNN, default) or ``"ste"``.
    The result's status is ``feasible`` (no proof); ``bound`` is +inf.
    """
    start = time.perf_counter()
    check_seconds("time_limit", time_limit)
    check_steps("steps", steps)
    check_steps("restarts", restarts)
    check_choice("gradient", gradient, GRADIENTS)
    check_choice("domain", domain, DOMAINS)
    x = check_pixels(pixels, ib)
    grid = domain == "grid"
    k = grid_steps(eps) if grid else eps_steps(eps)
    prediction, target = resolve_target(ib.logits_pixels(x[None])[0], target)
    x01 = torch.tensor(x / 255.0, dtype=torch.float32)
    best_p = np.zeros_like(x) if grid else np.zeros(x.size)
    best = objective_of(ib, x, target, prediction)
    trace = [(time.perf_counter() - start, best)]
    if grid and k == 0:
        return ExactResult("feasible", best, np.inf, best_p, prediction, target,
                           time.perf_counter() - start, k, trace)
    lo, hi = np.maximum(-k, -x), np.minimum(k, 255 - x)
    radius = k / 255.0 if grid else float(eps)
    rounds = 0
    while time.perf_counter() - start < time_limit and (max_rounds is None or rounds < max_rounds):
        first = rounds == 0
        n = 1 if first else restarts
        attack = MarginPGD(model, eps=radius, alpha=1 / 255.0, steps=steps,
                           random_start=not first, seed=seed + rounds)
        xs = x01.expand(n, -1).reshape(n, *_input_shape(model, x.size))
        ys = torch.full((n,), prediction, dtype=torch.long)
        with approximate_activations(model) if gradient == "approximate" else nullcontext():
            x_adv = attack(xs, ys, target=torch.full((n,), target, dtype=torch.long))
        flat = x_adv.reshape(n, -1).double().numpy()
        if grid:
            taken = np.clip(np.rint(flat * 255) - x, lo, hi).astype(np.int64)
            logits = ib.logits_pixels(x[None] + taken)
        else:  # scored by the model itself on the very inputs it would be given
            taken = flat - x / 255.0
            with torch.no_grad(), eval_mode(model):
                logits = model(x_adv).double().numpy()
        scores = logits[:, target] - logits[:, prediction]
        i = int(np.argmax(scores))
        if scores[i] > best:
            best, best_p = float(scores[i]), taken[i]
            trace.append((time.perf_counter() - start, best))
        rounds += 1
    return ExactResult("feasible", best, np.inf, best_p, prediction, target,
                       time.perf_counter() - start, k, trace, iterations=rounds)


def _input_shape(model: nn.Module, size: int) -> tuple[int, ...]:
    shape: Any = getattr(model, "input_shape", None)
    return tuple(shape) if shape else (size,)


@dataclass(frozen=True, kw_only=True)
class IteratedFGSMParams(TargetedParams):
    """The baseline's parameters.

    Args:
        steps: FGSM iterations per round (20). restarts: random starts per round after the
            first (16). max_rounds: stop after this many rounds (default None: run to the
            time limit).
        gradient: ``"approximate"`` (the paper's approximate BNN, default) or ``"ste"``.
        domain: ``"grid"`` (whole pixel steps, default) or ``"continuous"`` (the paper's
            problem, ``|p| <= ε``; see :func:`iterated_fgsm`).
        eps, time_limit (paper: 180), target (``"second"`` or a class), seed: see the base
            classes.
    """

    steps: int = 20
    restarts: int = 16
    max_rounds: int | None = None
    gradient: str = "approximate"
    domain: str = "grid"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target == "untargeted":
            raise AttackError("iterated FGSM is targeted: give target='second' or a class.")
        check_steps("steps", self.steps)
        check_steps("restarts", self.restarts)
        if self.max_rounds is not None:
            check_steps("max_rounds", self.max_rounds)
        check_choice("gradient", self.gradient, GRADIENTS)
        check_choice("domain", self.domain, DOMAINS)


class IteratedFGSM(ExactAttack):
    """Khalil et al.'s gradient baseline on the exact problem (:func:`iterated_fgsm` per point).

    Shape:
        x: ``(N, features)`` on the 1/255 grid; y: ``(N,)``. ``status``: ``feasible``.

    Example::

        result = IteratedFGSM(model, eps=0.01, time_limit=10).run(x, y)
    """

    name = "iterated-fgsm"
    Params = IteratedFGSMParams

    @property
    def continuous(self) -> bool:  # noqa: D102
        return self.params.domain == "continuous"

    def gradient_use(self) -> str | None:  # noqa: D102
        return "iterated FGSM"

    def attack_point(self, pixels: np.ndarray, *, target: int | str,
                     start: np.ndarray | None = None) -> ExactResult:  # noqa: D102
        p = self.params
        return iterated_fgsm(self.torch_model, self.integer, pixels, eps=p.eps, target=target,
                             time_limit=p.time_limit, steps=p.steps, restarts=p.restarts,
                             max_rounds=p.max_rounds, seed=p.seed, gradient=p.gradient,
                             domain=p.domain)
