"""Projected gradient descent (Madry et al. 2018), L∞ or L2, with random start and restarts.

Each step moves ``alpha`` along the sign of the gradient (L∞) or the normalized gradient (L2),
then projects back onto the ``eps``-ball around ``x`` and onto [0, 1]. With ``restarts > 1``
the attack is repeated from fresh random starts and, per input, the first successful (else the
highest-loss) result is kept. Galloway et al. evaluate with step 0.01 and 40 iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bnnrobust.attacks.base import (
    check_budget,
    check_choice,
    check_flag,
    check_positive,
    check_steps,
)
from bnnrobust.attacks.gradient import GradientAttack, LossParams

NORMS = ("linf", "l2")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


@dataclass(frozen=True, kw_only=True)
class PGDParams(LossParams):
    """PGD's parameters.

    Args:
        eps: radius of the ball (L∞ or L2, on [0, 1] inputs; default 0.3).
        alpha: step size (default 0.01, Galloway et al.'s). steps: iterations (default 40).
        random_start: start from a uniform point of the ball (default True).
        restarts: independent runs; per input the first successful (else the highest-loss)
            result is kept (default 1).
        norm: ``"linf"`` (default; ``eps`` in [0, 1]) or ``"l2"`` (``eps`` >= 0).
        loss, temperature, target, eot_samples, bpda, seed: see
            :class:`~bnnrobust.attacks.gradient.LossParams`.
    """

    eps: float = 0.3
    alpha: float = 0.01
    steps: int = 40
    random_start: bool = True
    restarts: int = 1
    norm: str = "linf"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("norm", self.norm, NORMS)
        self._set("eps", check_budget("eps", self.eps, allow_zero=True) if self.norm == "linf"
                  else check_positive("eps", self.eps, allow_zero=True))  # an L2 ball may be > 1
        self._set("alpha", check_positive("alpha", self.alpha))
        check_steps("steps", self.steps)
        check_steps("restarts", self.restarts)
        check_flag("random_start", self.random_start)


class PGD(GradientAttack):
    """PGD with ``steps`` steps of size ``alpha`` inside an ``eps``-ball (``norm`` linf or l2).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        atk = PGD(model, eps=0.3, alpha=0.01, steps=40, restarts=5)
        result = atk.run(x, y)       # result.success, result.linf, ...
    """

    name = "pgd"
    Params = PGDParams

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back onto the ``eps``-ball around ``x`` and onto [0, 1]."""
        delta, eps = x_adv - x, self.params.eps
        if self.params.norm == "linf":
            delta = delta.clamp(-eps, eps)
        else:
            delta = delta * (eps / _flat_norm(delta)).clamp(max=1.0)
        return (x + delta).clamp(0, 1)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.params.random_start:
            return x.clone()
        if self.params.norm == "linf":
            noise = torch.rand(x.shape, generator=self.generator, device=x.device) * 2 - 1
            return self.project(x + noise * self.params.eps, x)
        direction = torch.randn(x.shape, generator=self.generator, device=x.device)
        radius = torch.rand(len(x), generator=self.generator, device=x.device) \
            .pow(1.0 / x[0].numel()).view(-1, *([1] * (x.dim() - 1)))
        return self.project(x + direction / _flat_norm(direction) * radius * self.params.eps, x)

    def _step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.params.norm == "linf":
            return self.params.alpha * grad.sign()
        return self.params.alpha * grad / _flat_norm(grad)

    def _perturb(self, x, y, target):
        best, best_loss, best_ok = x.clone(), None, None
        restarts = self.params.restarts
        for _ in range(restarts):
            x_adv = self._start(x)
            for _ in range(self.params.steps):
                grad = self.gradient(x_adv, y, target).grad
                x_adv = self.project(x_adv + self._step(grad), x)
            if restarts == 1:
                return x_adv, {}
            with torch.no_grad():
                logits = self.model(x_adv)
                loss = self.loss(logits, y, target)
                ok = self.is_success(logits, y, target)
            if best_loss is None:
                best, best_loss, best_ok = x_adv, loss, ok
                continue
            better = (ok & ~best_ok) | ((ok == best_ok) & (loss > best_loss))
            mask = better.view(-1, *([1] * (x.dim() - 1)))
            best = torch.where(mask, x_adv, best)
            best_loss = torch.where(better, loss, best_loss)
            best_ok = best_ok | ok
        return best, {}


@dataclass(frozen=True, kw_only=True)
class BIMParams(LossParams):
    """BIM's parameters: ``eps`` (L∞, default 0.3), ``alpha`` (step, 0.01), ``steps`` (40),
    and those of :class:`~bnnrobust.attacks.gradient.LossParams`."""

    eps: float = 0.3
    alpha: float = 0.01
    steps: int = 40

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("eps", check_budget("eps", self.eps, allow_zero=True))
        self._set("alpha", check_positive("alpha", self.alpha))
        check_steps("steps", self.steps)

    @property
    def random_start(self) -> bool:
        """BIM starts from ``x`` itself."""
        return False

    @property
    def restarts(self) -> int:
        """One run."""
        return 1

    @property
    def norm(self) -> str:
        """L∞ only."""
        return "linf"


class BIM(PGD):
    """Basic iterative method / iterated FGSM (Kurakin et al. 2017): PGD from ``x`` itself.

    L∞ only, no random start, one run; Galloway et al.: step 0.01, 40 iterations.

    Example::

        x_adv = BIM(model, eps=0.1, alpha=0.01, steps=40)(x, y)
    """

    name = "bim"
    Params = BIMParams
