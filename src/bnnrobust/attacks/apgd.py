"""APGD, auto-PGD (Croce & Hein 2020), and APGD-T, its targeted form run over the top classes.

APGD is PGD without a step size to tune: it starts at step ``2·eps`` from a random point of the
ball (a uniform draw scaled so its largest coordinate is ``eps``), takes steps with momentum
0.75, keeps each input's highest-loss iterate and, at checkpoints that come closer together as
the run goes on (first after 22 % of the steps, then 3 % sooner each time, never closer than
6 %), halves an input's step and restarts it from its best iterate when the loss rose in at
most ``rho`` of the steps since the last checkpoint, or when it did not improve since a
checkpoint that did not halve. Its losses:

- ``"ce"``: cross-entropy on the label (targeted: minus the cross-entropy on the target);
- ``"dlr"``: the difference of logits ratio, ``-(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``
  (targeted: ``-(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``; ``z_π`` the sorted logits), which is
  invariant to shifting and scaling the logits, so a saturated softmax cannot hide from it.

Only the inputs the attack has not yet succeeded on are attacked, restart after restart (an
input already misclassified keeps ``x``). Where it fails, ``x_adv`` is the highest-loss iterate.

APGD-T (AutoAttack's ``apgd-t``) runs the targeted DLR loss toward the 2nd, 3rd, ...,
(``targets`` + 1)-th most likely class of the clean input in turn, each on the inputs no earlier
target misclassified; it succeeds when the input is misclassified (an untargeted goal).

The defaults are AutoAttack's ``version="standard"`` (fra31/auto-attack): 100 steps, one run
(``restarts=1``), ``rho=0.75``, 9 target classes. The algorithm follows fra31/auto-attack as
torchattacks 3.5.1 copies it, which is its test oracle (``tests/test_autoattack.py``); with the
same seed the random start is the same draw.

Reference: F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bnnrobust.attacks.base import (
    AttackError,
    check_budget,
    check_choice,
    check_positive,
    check_steps,
)
from bnnrobust.attacks.gradient import GradientAttack, GradientParams
from bnnrobust.attacks.pgd import NORMS

LOSSES = ("ce", "dlr")


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector shaped to broadcast against a batch like ``like``."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def _l2(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, broadcastable against ``t``."""
    return _per_sample(t.flatten(1).pow(2).sum(1).sqrt(), t)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None = None) -> torch.Tensor:
    """Croce & Hein's difference of logits ratio, per sample (higher: closer to success).

    Untargeted: ``-(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)``; targeted:
    ``-(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)``, with ``z_π`` the logits sorted in
    decreasing order. Needs at least 3 classes (4 targeted)."""
    needed = 3 if target is None else 4
    if logits.shape[1] < needed:
        raise AttackError(f"the DLR loss needs at least {needed} classes, the model has "
                          f"{logits.shape[1]}; use loss='ce'.")
    ordered, order = logits.sort(dim=1)
    rows = torch.arange(len(y), device=y.device)
    z_y = logits[rows, y]
    if target is not None:
        return -(z_y - logits[rows, target]) / (
            ordered[:, -1] - 0.5 * ordered[:, -3] - 0.5 * ordered[:, -4] + 1e-12)
    top_is_y = (order[:, -1] == y).float()
    other = ordered[:, -2] * top_is_y + ordered[:, -1] * (1.0 - top_is_y)
    return -(z_y - other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


@dataclass(frozen=True, kw_only=True)
class APGDParams(GradientParams):
    """APGD's parameters (defaults: AutoAttack's standard version).

    Args:
        eps: radius of the ball (L∞ on [0, 1] inputs, or L2; default 0.3, Galloway et al.'s
            largest MNIST budget).
        steps: iterations per run (default 100).
        restarts: runs from fresh random starts, each on the inputs not yet broken (default 1).
        loss: ``"ce"`` (default) or ``"dlr"`` (see the module doc).
        rho: fraction of rising steps below which a checkpoint halves the step (default 0.75).
        norm: ``"linf"`` (default) or ``"l2"``.
        target, eot_samples, bpda, seed: see :class:`~bnnrobust.attacks.gradient.GradientParams`.
    """

    eps: float = 0.3
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    rho: float = 0.75
    norm: str = "linf"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("norm", self.norm, NORMS)
        self._set("eps", check_budget("eps", self.eps) if self.norm == "linf"
                  else check_positive("eps", self.eps))
        check_steps("steps", self.steps)
        check_steps("restarts", self.restarts)
        check_choice("loss", self.loss, LOSSES)
        self._set("rho", check_positive("rho", self.rho))
        if self.rho > 1:
            raise AttackError(f"rho must be in (0, 1] (a fraction of the steps), got {self.rho}.")


@dataclass
class _Run:
    """One APGD run on a batch: its highest-loss iterate, whether each input is still not
    broken, that loss, and the last iterate that broke it (``x`` where none did)."""

    best: torch.Tensor
    robust: torch.Tensor
    loss: torch.Tensor
    adversarial: torch.Tensor


class APGD(GradientAttack):
    """APGD with ``steps`` steps inside an ``eps``-ball (see the module doc).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        atk = APGD(model, eps=0.3, loss="dlr")          # AutoAttack's APGD-DLR
        result = atk.run(x, y)                          # result.success, result.linf, ...
    """

    name = "apgd"
    Params = APGDParams
    summed_loss = True  # as fra31 differentiates it (only the sign or the direction is used)

    def loss(self, logits: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample loss to ascend: cross-entropy (targeted: minus that of the target) or
        :func:`dlr_loss`."""
        if self.params.loss == "dlr":
            return dlr_loss(logits, y, target)
        if target is not None:
            return -F.cross_entropy(logits, target, reduction="none")
        return F.cross_entropy(logits, y, reduction="none")

    def _perturb(self, x, y, target):
        with torch.no_grad():
            robust = ~self.is_success(self.model(x), y, target)
        return self._restarts(x, y, robust, loss_target=target, goal_target=target), {}

    def _restarts(self, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor, *,
                  loss_target: torch.Tensor | None, goal_target: torch.Tensor | None,
                  x_adv: torch.Tensor | None = None) -> torch.Tensor:
        """``restarts`` runs, each on the inputs still ``robust`` (updated in place); returns
        ``x_adv`` (updated in place when given): the breaking iterate where a run succeeded,
        else the highest-loss one."""
        x_adv = x.clone() if x_adv is None else x_adv
        best_loss = torch.full((len(x),), -torch.inf, device=x.device)
        for _ in range(self.params.restarts):
            todo = robust.nonzero().flatten()
            if not len(todo):
                break
            run = self._run(x[todo], y[todo],
                            None if loss_target is None else loss_target[todo],
                            None if goal_target is None else goal_target[todo])
            broken, better = ~run.robust, run.robust & (run.loss > best_loss[todo])
            x_adv[todo[broken]] = run.adversarial[broken]
            x_adv[todo[better]] = run.best[better]
            best_loss[todo[better]] = run.loss[better]
            robust[todo[broken]] = False
        return x_adv

    def _project(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Onto the ``eps``-ball around ``x`` and [0, 1] (in fra31's order of operations)."""
        eps = self.params.eps
        if self.params.norm == "linf":
            return torch.min(torch.max(v, x - eps), x + eps).clamp(0.0, 1.0)
        delta = v - x
        norm = _l2(delta)
        return (x + delta / (norm + 1e-12) * torch.min(eps * torch.ones_like(x), norm + 1e-12)
                ).clamp(0.0, 1.0)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        """A random point of the ball: a draw scaled to norm ``eps`` (then clipped to [0, 1])."""
        eps = self.params.eps
        if self.params.norm == "linf":
            t = 2 * torch.rand(x.shape, generator=self.generator, device=x.device) - 1
            scale = _per_sample(t.flatten(1).abs().amax(1), x)
            return (x + eps * t / scale).clamp(0.0, 1.0)
        t = torch.randn(x.shape, generator=self.generator, device=x.device)
        return (x + eps * t / (_l2(t) + 1e-12)).clamp(0.0, 1.0)

    def _step(self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor,
              step: torch.Tensor, previous: torch.Tensor, momentum: float) -> torch.Tensor:
        """One APGD step from ``x_adv`` (``previous``: the iterate before it)."""
        step = _per_sample(step, x)
        if self.params.norm == "linf":
            z = self._project(x_adv + step * grad.sign(), x)
        else:
            z = x_adv + step * grad / (_l2(grad) + 1e-12)
            delta = z - x
            z = (x + delta / (_l2(delta) + 1e-12) * torch.min(
                self.params.eps * torch.ones_like(x), _l2(delta))).clamp(0.0, 1.0)
        return self._project(x_adv + (z - x_adv) * momentum + (x_adv - previous) *
                             (1 - momentum), x)

    def _run(self, x: torch.Tensor, y: torch.Tensor, loss_target: torch.Tensor | None,
             goal_target: torch.Tensor | None) -> _Run:
        """One run of APGD on ``(x, y)`` (see the module doc); ``loss_target``: the class the
        loss aims at, ``goal_target``: the one success needs (None: any but ``y``)."""
        steps, rho = self.params.steps, self.params.rho
        first, shortest, shrink = (max(int(f * steps), 1) for f in (0.22, 0.06, 0.03))
        x_adv = self._start(x)
        g = self.gradient(x_adv, y, loss_target)
        grad, loss = g.grad, g.loss
        robust = ~self.is_success(g.logits, y, goal_target)
        best, best_grad, best_loss = x_adv.clone(), grad.clone(), loss.clone()
        adversarial = x_adv.clone()
        step = torch.full((len(x),), 2.0 * self.params.eps, device=x.device)
        losses = torch.zeros(steps, len(x), device=x.device)
        previous, since, period = x_adv.clone(), 0, first
        last_best, last_halved = best_loss.clone(), torch.ones(len(x), dtype=torch.bool,
                                                               device=x.device)
        for i in range(steps):
            with torch.no_grad():
                x_adv, previous = (self._step(x_adv, x, grad, step, previous,
                                              0.75 if i > 0 else 1.0), x_adv)
            g = self.gradient(x_adv, y, loss_target)
            grad, loss = g.grad, g.loss
            broken = self.is_success(g.logits, y, goal_target)
            adversarial[broken] = x_adv[broken]
            robust &= ~broken
            improved = loss > best_loss
            best[improved], best_grad[improved] = x_adv[improved], grad[improved]
            best_loss[improved] = loss[improved]
            losses[i] = loss
            since += 1
            if since < period:
                continue
            rises = sum((losses[i - c] > losses[(i - c - 1) % steps]).long()
                        for c in range(period))
            halve = (rises <= period * rho) | (~last_halved & (last_best >= best_loss))
            last_halved, last_best = halve.clone(), best_loss.clone()
            step[halve] /= 2.0
            x_adv[halve], grad[halve] = best[halve], best_grad[halve]
            since, period = 0, max(period - shrink, shortest)
        return _Run(best, robust, best_loss, adversarial)


@dataclass(frozen=True, kw_only=True)
class APGDTParams(APGDParams):
    """APGD-T's parameters: those of :class:`APGDParams` (the loss is always the targeted DLR)
    and ``targets``, how many of the most likely other classes are tried in turn (default 9:
    every other class of a 10-class problem, AutoAttack's standard)."""

    loss: str = "dlr"
    targets: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps("targets", self.targets)
        if self.loss != "dlr":
            raise AttackError("apgd-t ascends the targeted DLR loss only; for a cross-entropy "
                              "run toward one target use apgd with target=.")
        if self.target is not None:
            raise AttackError("apgd-t picks its own targets (the most likely other classes) "
                              "and succeeds on any misclassification; for one given target "
                              "use apgd with target=.")


class APGDT(APGD):
    """APGD-T: targeted-DLR APGD toward each of the ``targets`` most likely other classes in
    turn, on the inputs still correctly classified (see the module doc).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        result = APGDT(model, eps=0.3).run(x, y)      # AutoAttack's APGD-T, 9 targets
    """

    name = "apgd-t"
    Params = APGDTParams

    def _perturb(self, x, y, target):
        robust = self._still_correct(x, y, target, targets=self.params.targets)
        x_adv = x.clone()
        for rank in range(2, self.params.targets + 2):
            todo = robust.nonzero().flatten()
            if not len(todo):
                break
            with torch.no_grad():  # the rank-th class at the clean inputs still to break
                ranked = torch.full_like(y, -1)
                ranked[todo] = self.model(x[todo]).sort(dim=1)[1][:, -rank]
            self._restarts(x, y, robust, loss_target=ranked, goal_target=None, x_adv=x_adv)
        return x_adv, {}
