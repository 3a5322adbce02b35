"""FGSM, the fast gradient sign method (Goodfellow et al. 2015).

``x_adv = clip(x + eps * sign(∇x loss), 0, 1)``; targeted: a step down the cross-entropy of
the target. ``eps`` is one number or one value per input (Kurakin et al.'s random-ε training).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, check_positive


def per_sample(eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor | float:
    """``eps`` broadcastable against ``x`` (a 1-D tensor becomes N×1×...×1)."""
    if isinstance(eps, torch.Tensor):
        if len(eps) != len(x):
            raise AttackError(f"per-sample eps has {len(eps)} values for {len(x)} inputs.")
        return eps.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return eps


def check_eps(eps: float | torch.Tensor) -> float | torch.Tensor:
    """A number >= 0 or a 1-D tensor of them."""
    if isinstance(eps, torch.Tensor):
        if eps.dim() != 1 or not torch.isfinite(eps).all() or (eps < 0).any():
            raise AttackError("a per-sample eps must be a 1-D tensor of finite values >= 0.")
        return eps
    return check_positive("eps", eps, allow_zero=True)


class FGSM(Attack):
    """Fast gradient sign method, L∞ budget ``eps`` (Galloway et al. evaluate 0.1 to 0.3)."""

    name = "fgsm"

    def __init__(self, model: nn.Module, *, eps: float | torch.Tensor = 0.3, **options: Any) -> None:
        super().__init__(model, **options)
        self.eps = check_eps(eps)

    def _params(self) -> dict[str, Any]:
        return {"eps": self.eps if not isinstance(self.eps, torch.Tensor) else "per-sample"}

    def _perturb(self, x, y, target):
        _, grad = self.gradient(x, y, target)
        return (x + per_sample(self.eps, x) * grad.sign()).clamp(0, 1), {}
