"""R-FGSM (Tramèr et al. 2018): a random sign step of size alpha, then an FGSM step of eps - alpha.

``x' = clip(x + alpha * sign(N(0, I)))``, ``x_adv = clip(x' + (eps - alpha) * sign(∇x' loss))``;
``alpha = eps / 2`` by default, as Panda et al. used for adversarial training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, check_positive
from bnnrobust.attacks.fgsm import check_eps, per_sample


class RFGSM(Attack):
    """Random step then FGSM; total L∞ budget ``eps``, random step ``alpha`` (default eps/2)."""

    name = "rfgsm"

    def __init__(self, model: nn.Module, *, eps: float | torch.Tensor = 0.3,
                 alpha: float | None = None, **options: Any) -> None:
        super().__init__(model, **options)
        self.eps = check_eps(eps)
        if alpha is not None:
            check_positive("alpha", alpha, allow_zero=True)
            if not isinstance(self.eps, torch.Tensor) and alpha > self.eps:
                raise AttackError(f"alpha ({alpha}) must not exceed eps ({self.eps}).")
        self.alpha = alpha

    def _params(self) -> dict[str, Any]:
        eps = self.eps if not isinstance(self.eps, torch.Tensor) else "per-sample"
        return {"eps": eps, "alpha": self.alpha if self.alpha is not None else "eps/2"}

    def _perturb(self, x, y, target):
        eps = per_sample(self.eps, x)
        alpha = eps / 2 if self.alpha is None else self.alpha
        noise = torch.randn(x.shape, generator=self.generator, device=x.device)
        x_prime = (x + alpha * noise.sign()).clamp(0, 1)
        _, grad = self.gradient(x_prime, y, target)
        return (x_prime + (eps - alpha) * grad.sign()).clamp(0, 1), {}
