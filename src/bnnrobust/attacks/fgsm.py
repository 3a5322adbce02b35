"""FGSM, the fast gradient sign method (Goodfellow et al. 2015).

``x_adv = clip(x + eps * sign(∇x loss), 0, 1)``; targeted: a step down the cross-entropy of
the target. ``eps`` is one number or one value per input (Kurakin et al.'s random-ε training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bnnrobust.attacks.base import AttackError, check_budget
from bnnrobust.attacks.gradient import GradientAttack, LossParams


def per_sample(eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor | float:
    """``eps`` broadcastable against ``x`` (a 1-D tensor becomes N×1×...×1)."""
    if isinstance(eps, torch.Tensor):
        if len(eps) != len(x):
            raise AttackError(f"per-sample eps has {len(eps)} values for {len(x)} inputs.")
        return eps.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return eps


def check_eps(eps: float | torch.Tensor) -> float | torch.Tensor:
    """An L∞ budget on [0, 1] inputs: a number in [0, 1], or a 1-D tensor of them."""
    if isinstance(eps, torch.Tensor):
        if eps.dim() != 1 or not torch.isfinite(eps).all() or (eps < 0).any() or (eps > 1).any():
            raise AttackError("a per-sample eps must be a 1-D tensor of finite values in "
                              "[0, 1].")
        return eps
    return check_budget("eps", eps, allow_zero=True)


@dataclass(frozen=True, kw_only=True)
class FGSMParams(LossParams):
    """FGSM's parameters.

    Args:
        eps: L∞ budget on [0, 1] inputs, one number >= 0 or a 1-D tensor with one value per
            input (default 0.3, Galloway et al.'s largest).
        loss, temperature, target, eot_samples, bpda, seed: see
            :class:`~bnnrobust.attacks.gradient.LossParams`.
    """

    eps: float | torch.Tensor = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("eps", check_eps(self.eps))


class FGSM(GradientAttack):
    """Fast gradient sign method, L∞ budget ``eps`` (Galloway et al. evaluate 0.1 to 0.3).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        atk = FGSM(model, eps=0.1)
        x_adv = atk(x, y)
    """

    name = "fgsm"
    Params = FGSMParams

    def _perturb(self, x, y, target):
        grad = self.gradient(x, y, target).grad
        return (x + per_sample(self.params.eps, x) * grad.sign()).clamp(0, 1), {}
