"""JSMA, the Jacobian-based saliency map attack (Papernot et al. 2016), pixel pairs, targeted.

At each iteration, for every pair of still-modifiable features (p, q), with α the gradient of
the target logit and β the gradient of the sum of the other logits, the pair with ``α_p+α_q > 0``
and ``β_p+β_q < 0`` maximizing ``(α_p+α_q)·|β_p+β_q|`` is moved by ``theta`` (clipped to
[0, 1]) and leaves the search domain. It stops when the target is reached, no pair qualifies,
or ``gamma`` (the maximum fraction of features changed) is spent. Galloway et al.: θ = 1,
γ = 0.1. Works on logits (as CleverHans does). Pairs are scored in chunks of ``chunk`` inputs
(memory grows as chunk × features²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bnnrobust.attacks.base import AttackError, check_positive, check_steps
from bnnrobust.attacks.gradient import GradientAttack, GradientParams, input_grad


@dataclass(frozen=True, kw_only=True)
class JSMAParams(GradientParams):
    """JSMA's parameters (defaults: Galloway et al.'s).

    Args:
        theta: change applied to each chosen feature, non-zero in [-1, 1] (1.0).
        gamma: largest fraction of the features changed, in (0, 1] (0.1).
        chunk: inputs scored at once (memory grows as chunk × features²; 32).
        target: a rule or labels (default ``"random"``; JSMA is targeted only).
        eot_samples, bpda, seed: see :class:`~bnnrobust.attacks.gradient.GradientParams`.
    """

    theta: float = 1.0
    gamma: float = 0.1
    chunk: int = 32
    target: str | torch.Tensor | None = "random"

    def __post_init__(self) -> None:
        if self.target is None:
            raise AttackError("JSMA is a targeted attack: give target= a rule or labels.")
        super().__post_init__()
        theta = self.theta
        if not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta == 0 \
                or abs(theta) > 1:
            raise AttackError(f"theta must be a non-zero number in [-1, 1], got {theta!r}.")
        self._set("theta", float(theta))
        self._set("gamma", check_positive("gamma", self.gamma))
        if self.gamma > 1:
            raise AttackError(f"gamma is a fraction of the features, in (0, 1]; got {self.gamma}.")
        check_steps("chunk", self.chunk)


class JSMA(GradientAttack):
    """Targeted saliency-map attack; needs ``target`` (a rule or labels).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.

    Example::

        x_adv = JSMA(model, theta=1.0, gamma=0.1, target="random")(x, y)
    """

    name = "jsma"
    Params = JSMAParams

    def _jacobian(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α (target logit) and β (sum of the other logits) input gradients, EOT-averaged."""
        alpha = torch.zeros_like(x)
        total = torch.zeros_like(x)
        passes = self.eot_passes
        for _ in range(passes):
            xg = x.detach().requires_grad_(True)
            logits = self.model(xg)
            alpha += input_grad(logits.gather(1, target[:, None]).sum(), xg, retain_graph=True)
            total += input_grad(logits.sum(), xg)
        alpha = (alpha / passes).flatten(1)
        return alpha, (total / passes).flatten(1) - alpha

    def _attack_chunk(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, d = len(x), x[0].numel()
        direction = 1.0 if self.params.theta > 0 else -1.0
        x_adv = x.clone().flatten(1)
        search = (x_adv < 1) if direction > 0 else (x_adv > 0)
        not_same = ~torch.eye(d, dtype=torch.bool, device=x.device)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for _ in range(int(d * self.params.gamma / 2)):
            with torch.no_grad():
                active &= self.model(x_adv.view_as(x)).argmax(1) != target
            if not active.any():
                break
            alpha, beta = self._jacobian(x_adv.view_as(x), target)
            a2 = direction * (alpha[:, :, None] + alpha[:, None, :])
            b2 = direction * (beta[:, :, None] + beta[:, None, :])
            ok = search[:, :, None] & search[:, None, :] & not_same & (a2 > 0) & (b2 < 0)
            score = torch.where(ok, a2 * b2.abs(), torch.full_like(a2, -1.0))
            best = score.flatten(1).argmax(1)
            active &= ok.flatten(1).any(1)
            rows = active.nonzero().flatten()
            p, q = best[rows] // d, best[rows] % d
            for idx in (p, q):
                x_adv[rows, idx] = (x_adv[rows, idx] + self.params.theta).clamp(0, 1)
                search[rows, idx] = False
        return x_adv.view_as(x)

    def _perturb(self, x, y, target):
        out = [self._attack_chunk(x[i:i + self.params.chunk], target[i:i + self.params.chunk])
               for i in range(0, len(x), self.params.chunk)]
        return torch.cat(out), {}
