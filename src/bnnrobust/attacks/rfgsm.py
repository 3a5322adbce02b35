"""R-FGSM (Tramèr et al. 2018): a random sign step of size alpha, then an FGSM step of eps - alpha.

``x' = clip(x + alpha * sign(N(0, I)))``, ``x_adv = clip(x' + (eps - alpha) * sign(∇x' loss))``;
``alpha = eps / 2`` by default, as Panda et al. used for adversarial training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bnnrobust.attacks.base import AttackError, check_positive
from bnnrobust.attacks.fgsm import check_eps, per_sample
from bnnrobust.attacks.gradient import GradientAttack, LossParams


@dataclass(frozen=True, kw_only=True)
class RFGSMParams(LossParams):
    """R-FGSM's parameters.

    Args:
        eps: total L∞ budget (a number >= 0 or one value per input; default 0.3).
        alpha: size of the random sign step, at most ``eps`` (default None: ``eps / 2``).
        loss, temperature, target, eot_samples, bpda, seed: see
            :class:`~bnnrobust.attacks.gradient.LossParams`.
    """

    eps: float | torch.Tensor = 0.3
    alpha: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("eps", check_eps(self.eps))
        if self.alpha is not None:
            self._set("alpha", check_positive("alpha", self.alpha, allow_zero=True))
            if not isinstance(self.eps, torch.Tensor) and self.alpha > self.eps:
                raise AttackError(f"alpha ({self.alpha}) must not exceed eps ({self.eps}).")


class RFGSM(GradientAttack):
    """Random step then FGSM; total L∞ budget ``eps``, random step ``alpha`` (default eps/2).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        x_adv = RFGSM(model, eps=0.3)(x, y)      # Panda et al.'s training attack
    """

    name = "rfgsm"
    Params = RFGSMParams

    def _perturb(self, x, y, target):
        eps = per_sample(self.params.eps, x)
        alpha = eps / 2 if self.params.alpha is None else self.params.alpha
        noise = torch.randn(x.shape, generator=self.generator, device=x.device)
        x_prime = (x + alpha * noise.sign()).clamp(0, 1)
        grad = self.gradient(x_prime, y, target).grad
        return (x_prime + (eps - alpha) * grad.sign()).clamp(0, 1), {}
