"""FAB-T, the targeted fast adaptive boundary attack (Croce & Hein 2020), L∞.

FAB looks for the smallest perturbation that changes the decision. At each step it linearizes
the decision boundary between the label ``y`` and a target class ``t`` at the current iterate
``x1`` (the hyperplane ``∇(z_t − z_y)·(z − x1) + (z_t − z_y)(x1) = 0``), projects both ``x1``
and the original input ``x0`` onto it in L∞ within the box [0, 1] (:func:`linf_projection`),
and moves to a mix of the two projections, overshot by ``eta``: ``x1 ← (x1 + eta·d1)(1 − α) +
(x0 + eta·d2)·α`` with ``α = min(‖d1‖ / (‖d1‖ + ‖d2‖), alpha_max)``. Whenever ``x1`` is
misclassified it is kept if it is the closest adversarial input so far and pulled back towards
``x0`` by ``beta``. The first run starts at ``x0``; further runs (``restarts``) start from a
random point at half the budget.

FAB-T (AutoAttack's ``fab-t``) aims at the 2nd, 3rd, ..., (``targets`` + 1)-th most likely class
of the clean input in turn, each on the inputs not yet broken, and succeeds on an input when it
finds a misclassified input within ``eps`` of it (an untargeted goal); elsewhere ``x_adv`` is
``x``.

The defaults are AutoAttack's ``version="standard"`` (fra31/auto-attack): 100 steps, one run,
9 targets, ``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``. torchattacks 3.5.1's ``FAB`` (with
``multi_targeted=True``) is the test oracle; the projection is our own (the exact minimizer,
checked against an LP), where fra31's is a bisection over the same breakpoints.

Reference: F. Croce, M. Hein, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", ICML 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bnnrobust.attacks.base import AttackError, check_budget, check_positive, check_steps
from bnnrobust.attacks.gradient import GradientAttack, GradientParams


def linf_projection(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the step ``d`` of least L∞ norm that takes ``t`` onto the hyperplane
    ``w·(t + d) = b`` while keeping ``t + d`` in [0, 1]; where the box does not reach the
    hyperplane, the step to the box's corner nearest to it. Coordinates with ``w = 0`` do not
    move.

    With ``f = |w·t − b|`` and each coordinate's room towards the hyperplane (``t_i`` or
    ``1 − t_i``), a radius ``λ`` moves ``w·t`` by ``D(λ) = Σ |w_i| min(λ, room_i)``, a
    nondecreasing piecewise-linear function: ``λ`` solves ``D(λ) = f`` between the sorted rooms.

    Shape:
        t, w: ``(N, D)``; b: ``(N,)``; returns ``(N, D)``.
    """
    side = torch.where((w * t).sum(1) - b >= 0, 1.0, -1.0).unsqueeze(1)
    w = w * side  # now w·t >= b: move down along w
    gap = ((w * t).sum(1) - b * side[:, 0]).clamp_min(0.0)
    moving = w != 0
    room = torch.where(w > 0, t, 1.0 - t) * moving
    weight = w.abs()
    room_sorted, order = room.sort(dim=1)
    weight_sorted = weight.gather(1, order)
    saturated = torch.cumsum(weight_sorted * room_sorted, 1) - weight_sorted * room_sorted
    tail = weight_sorted.flip(1).cumsum(1).flip(1)
    reach = saturated + room_sorted * tail  # D at each sorted room
    k = (reach < gap.unsqueeze(1)).sum(1)
    reachable = k < t.shape[1]
    k = k.clamp(max=t.shape[1] - 1).unsqueeze(1)
    radius = ((gap.unsqueeze(1) - saturated.gather(1, k)) /
              tail.gather(1, k).clamp_min(1e-30)).clamp_min(0.0)
    radius = torch.where(reachable.unsqueeze(1), radius, torch.full_like(radius, torch.inf))
    return -torch.sign(w) * torch.minimum(radius, room) * moving


@dataclass(frozen=True, kw_only=True)
class FABTParams(GradientParams):
    """FAB-T's parameters (defaults: AutoAttack's standard version).

    Args:
        eps: L∞ budget on [0, 1] inputs an adversarial input must be within (default 0.3).
        steps: iterations per run and target (default 100).
        restarts: runs per target, the later ones from random starts (default 1).
        targets: how many of the most likely other classes are aimed at in turn (default 9).
        alpha_max: largest weight of the original input's projection (default 0.1).
        eta: overshoot of the projections (default 1.05). beta: backward step (default 0.9).
        eot_samples, bpda, seed: see :class:`~bnnrobust.attacks.gradient.GradientParams`.
    """

    eps: float = 0.3
    steps: int = 100
    restarts: int = 1
    targets: int = 9
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("eps", check_budget("eps", self.eps))
        for name in ("steps", "restarts", "targets"):
            check_steps(name, getattr(self, name))
        for name in ("alpha_max", "beta"):
            value = check_positive(name, getattr(self, name))
            if value > 1:
                raise AttackError(f"{name} must be in (0, 1], got {value}.")
            self._set(name, value)
        self._set("eta", check_positive("eta", self.eta))
        if self.target is not None:
            raise AttackError("fab-t picks its own targets (the most likely other classes) and "
                              "succeeds on any misclassification within eps; it takes no "
                              "target.")


class FABT(GradientAttack):
    """FAB-T toward the ``targets`` most likely other classes, L∞ budget ``eps`` (see the
    module doc).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        result = FABT(model, eps=0.3).run(x, y)       # AutoAttack's FAB-T
    """

    name = "fab-t"
    Params = FABTParams
    summed_loss = True  # the step needs each input's own gradient of z_t − z_y

    def loss(self, logits: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> torch.Tensor:
        """``z_t − z_y`` per sample (negative until the target overtakes the label); without a
        target (:meth:`input_gradient`), the likeliest other class stands for it."""
        rows = torch.arange(len(y), device=y.device)
        if target is None:
            target = logits.detach().scatter(1, y[:, None], -torch.inf).argmax(1)
        return logits[rows, target] - logits[rows, y]

    def _perturb(self, x, y, target):
        robust = self._still_correct(x, y, target, targets=self.params.targets)
        x_adv = x.clone()
        for rank in range(2, self.params.targets + 2):
            for restart in range(self.params.restarts):
                todo = robust.nonzero().flatten()
                if not len(todo):
                    return x_adv, {}
                with torch.no_grad():
                    aim = self.model(x[todo]).sort(dim=1)[1][:, -rank]
                found, distance = self._run(x[todo], y[todo], aim, random_start=restart > 0)
                broken = distance <= self.params.eps
                x_adv[todo[broken]] = found[broken]
                robust[todo[broken]] = False
        return x_adv, {}

    def _run(self, x0: torch.Tensor, y: torch.Tensor, aim: torch.Tensor, *,
             random_start: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run toward ``aim``: the closest misclassified input found (``x0`` where
        none) and its L∞ distance (inf where none)."""
        p = self.params
        shape = (-1, *([1] * (x0.dim() - 1)))
        best, distance = x0.clone(), torch.full((len(x0),), torch.inf, device=x0.device)
        x1 = x0.clone()
        if random_start:
            t = 2 * torch.rand(x0.shape, generator=self.generator, device=x0.device) - 1
            x1 = (x0 + 0.5 * p.eps * t / t.flatten(1).abs().amax(1).view(shape)).clamp(0, 1)
        flat0 = x0.flatten(1)
        for _ in range(p.steps):
            g = self.gradient(x1, y, aim)
            with torch.no_grad():
                w = g.grad.flatten(1)
                b = (w * x1.flatten(1)).sum(1) - g.loss
                d1 = linf_projection(x1.flatten(1), w, b)
                d2 = linf_projection(flat0, w, b)
                a1 = d1.abs().amax(1).clamp_min(1e-8)
                a2 = d2.abs().amax(1).clamp_min(1e-8)
                alpha = (a1 / (a1 + a2)).clamp(0.0, p.alpha_max).view(shape)
                x1 = ((x1 + p.eta * d1.view_as(x1)) * (1 - alpha) +
                      (x0 + p.eta * d2.view_as(x0)) * alpha).clamp(0.0, 1.0)
                fooled = self.model(x1).argmax(1) != y
                gap = (x1 - x0).flatten(1).abs().amax(1)
                closer = fooled & (gap < distance)
                best[closer], distance[closer] = x1[closer], gap[closer]
                x1[fooled] = x0[fooled] + (x1[fooled] - x0[fooled]) * p.beta
        return best, distance
