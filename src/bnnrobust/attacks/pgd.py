"""Projected gradient descent (Madry et al. 2018), L∞ or L2, with random start and restarts.

Each step moves ``alpha`` along the sign of the gradient (L∞) or the normalized gradient (L2),
then projects back onto the ``eps``-ball around ``x`` and onto [0, 1]. With ``restarts > 1``
the attack is repeated from fresh random starts and, per input, the first successful (else the
highest-loss) result is kept. Galloway et al. evaluate with step 0.01 and 40 iterations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, check_positive, check_steps

NORMS = ("linf", "l2")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


class PGD(Attack):
    """PGD with ``steps`` steps of size ``alpha`` inside an ``eps``-ball (``norm`` linf or l2)."""

    name = "pgd"

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float = 0.01,
                 steps: int = 40, random_start: bool = True, restarts: int = 1,
                 norm: str = "linf", **options: Any) -> None:
        super().__init__(model, **options)
        if norm not in NORMS:
            raise AttackError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}.")
        self.eps = check_positive("eps", eps, allow_zero=True)
        self.alpha = check_positive("alpha", alpha)
        self.steps = check_steps("steps", steps)
        self.restarts = check_steps("restarts", restarts)
        self.random_start = bool(random_start)
        self.norm = norm

    def _params(self) -> dict[str, Any]:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps,
                "random_start": self.random_start, "restarts": self.restarts, "norm": self.norm}

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back onto the ``eps``-ball around ``x`` and onto [0, 1]."""
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / _flat_norm(delta)).clamp(max=1.0)
        return (x + delta).clamp(0, 1)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=self.generator, device=x.device) * 2 - 1
            return self.project(x + noise * self.eps, x)
        direction = torch.randn(x.shape, generator=self.generator, device=x.device)
        radius = torch.rand(len(x), generator=self.generator, device=x.device) \
            .pow(1.0 / x[0].numel()).view(-1, *([1] * (x.dim() - 1)))
        return self.project(x + direction / _flat_norm(direction) * radius * self.eps, x)

    def _step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return self.alpha * grad.sign()
        return self.alpha * grad / _flat_norm(grad)

    def _perturb(self, x, y, target):
        best, best_loss, best_ok = x.clone(), None, None
        for _ in range(self.restarts):
            x_adv = self._start(x)
            for _ in range(self.steps):
                _, grad = self.gradient(x_adv, y, target)
                x_adv = self.project(x_adv + self._step(grad), x)
            if self.restarts == 1:
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


class BIM(PGD):
    """Basic iterative method / iterated FGSM (Kurakin et al. 2017): PGD from ``x`` itself.

    L∞ only, no random start, one run; Galloway et al.: step 0.01, 40 iterations.
    """

    name = "bim"

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float = 0.01,
                 steps: int = 40, **options: Any) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=False,
                         restarts=1, norm="linf", **options)
