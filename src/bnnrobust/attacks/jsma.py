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

from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, check_positive, check_steps


class JSMA(Attack):
    """Targeted saliency-map attack; needs ``target`` (a rule or labels)."""

    name = "jsma"
    losses = ("ce",)  # its own objective

    def __init__(self, model: nn.Module, *, theta: float = 1.0, gamma: float = 0.1,
                 chunk: int = 32, target: str | torch.Tensor | None = "random",
                 **options: Any) -> None:
        if target is None:
            raise AttackError("JSMA is a targeted attack: give target= a rule or labels.")
        super().__init__(model, target=target, **options)
        if not isinstance(theta, (int, float)) or theta == 0 or abs(theta) > 1:
            raise AttackError(f"theta must be a non-zero number in [-1, 1], got {theta!r}.")
        self.theta = float(theta)
        self.gamma = check_positive("gamma", gamma)
        if self.gamma > 1:
            raise AttackError(f"gamma is a fraction of the features, in (0, 1]; got {gamma}.")
        self.chunk = check_steps("chunk", chunk)

    def _params(self) -> dict[str, Any]:
        return {"theta": self.theta, "gamma": self.gamma}

    def _jacobian(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α (target logit) and β (sum of the other logits) input gradients, EOT-averaged."""
        alpha = torch.zeros_like(x)
        total = torch.zeros_like(x)
        passes = self.eot_passes
        for _ in range(passes):
            xg = x.detach().requires_grad_(True)
            logits = self.model(xg)
            alpha += torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xg,
                                         retain_graph=True)[0]
            total += torch.autograd.grad(logits.sum(), xg)[0]
        alpha = (alpha / passes).flatten(1)
        return alpha, (total / passes).flatten(1) - alpha

    def _attack_chunk(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, d = len(x), x[0].numel()
        direction = 1.0 if self.theta > 0 else -1.0
        x_adv = x.clone().flatten(1)
        search = (x_adv < 1) if direction > 0 else (x_adv > 0)
        not_same = ~torch.eye(d, dtype=torch.bool, device=x.device)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for _ in range(int(d * self.gamma / 2)):
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
                x_adv[rows, idx] = (x_adv[rows, idx] + self.theta).clamp(0, 1)
                search[rows, idx] = False
        return x_adv.view_as(x)

    def _perturb(self, x, y, target):
        out = [self._attack_chunk(x[i:i + self.chunk], target[i:i + self.chunk])
               for i in range(0, len(x), self.chunk)]
        return torch.cat(out), {}
