"""Carlini-Wagner L2 (Carlini & Wagner 2017).

Optimizes ``w`` with ``x_adv = (tanh(w) + 1) / 2`` (so x_adv stays in [0, 1]) by Adam on
``||x_adv - x||² + c · f(x_adv)``, with ``f = max(max_{i≠t} Z_i − Z_t, −κ)`` (targeted) or
``max(Z_y − max_{i≠y} Z_i, −κ)`` (untargeted) on the logits Z. A binary search over ``c``
(``binary_search_steps``) keeps, per input, the smallest successful perturbation. Early abort
stops a search step when the loss has not improved by 0.01 % over a tenth of the iterations.
With ``eot_samples = N`` the hinge term is averaged over N forward passes (EOT) and success is
judged on the mean logits.

Defaults follow Carlini & Wagner (9 search steps, 1000 iterations, lr 0.01, c = 1e-3);
:meth:`CWL2.galloway` gives the settings of Galloway et al. 2018 (1 search step, 100 iterations,
lr 0.1, c = 10, κ = 0). ``record_at`` records, with one search step, which inputs had been
successfully attacked after each of the given iteration counts (Galloway Figure 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, check_positive, check_steps


class CWL2(Attack):
    """Carlini-Wagner L2 attack (see the module docstring for the objective and defaults)."""

    name = "cw"
    losses = ("ce",)  # its own objective
    #: Galloway et al.'s settings: 1 search step, 100 iterations, lr 0.1, c = 10, κ = 0
    GALLOWAY = {"c": 10.0, "confidence": 0.0, "steps": 100, "lr": 0.1, "binary_search_steps": 1}

    def __init__(self, model: nn.Module, *, c: float = 1e-3, confidence: float = 0.0,
                 steps: int = 1000, lr: float = 0.01, binary_search_steps: int = 9,
                 abort_early: bool = True, record_at: Sequence[int] = (), **options: Any) -> None:
        super().__init__(model, **options)
        self.c = check_positive("c", c)
        self.confidence = check_positive("confidence", confidence, allow_zero=True)
        self.steps = check_steps("steps", steps)
        self.lr = check_positive("lr", lr)
        self.binary_search_steps = check_steps("binary_search_steps", binary_search_steps)
        self.abort_early = bool(abort_early)
        self.record_at = tuple(sorted({check_steps("record_at", int(i)) for i in record_at}))
        if self.record_at and self.binary_search_steps != 1:
            raise AttackError("record_at needs binary_search_steps=1 (one optimization run).")
        if self.record_at and self.record_at[-1] > self.steps:
            raise AttackError(f"record_at {self.record_at[-1]} is beyond steps={self.steps}.")

    @classmethod
    def galloway(cls, model: nn.Module, **options: Any) -> CWL2:
        """Galloway et al.'s settings: 1 search step, 100 iterations, lr 0.1, c = 10, κ = 0."""
        return cls(model, **{**cls.GALLOWAY, **options})

    def _params(self) -> dict[str, Any]:
        return {"c": self.c, "confidence": self.confidence, "steps": self.steps, "lr": self.lr,
                "binary_search_steps": self.binary_search_steps, "abort_early": self.abort_early,
                "record_at": list(self.record_at)}

    def _margin(self, logits: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None) -> torch.Tensor:
        """How far the attack still is from its goal (<= -κ means reached with confidence)."""
        cls = target if target is not None else y
        one_hot = torch.nn.functional.one_hot(cls, logits.shape[1]).bool()
        own = logits[one_hot]
        other = logits.masked_fill(one_hot, float("-inf")).amax(1)
        return other - own if target is not None else own - other

    def _perturb(self, x, y, target):
        n = len(x)
        shape = (-1, *([1] * (x.dim() - 1)))
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), float("inf"), device=x.device)
        const = torch.full((n,), self.c, device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best_adv = x.clone()
        w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        recorded: dict[int, torch.Tensor] = {}
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            prev = float("inf")
            for it in range(1, self.steps + 1):
                x_adv = (torch.tanh(w) + 1) / 2
                # EOT: the objective's expectation over eot_samples passes; logits for the
                # success check are the passes' mean
                passes = [self.model(x_adv) for _ in range(self.eot_passes)]
                logits = torch.stack(passes).mean(0) if len(passes) > 1 else passes[0]
                hinge = torch.stack([self._margin(p, y, target).clamp(min=-self.confidence)
                                     for p in passes]).mean(0)
                margin = self._margin(logits.detach(), y, target)
                l2 = (x_adv - x).flatten(1).pow(2).sum(1)
                loss = (l2 + const * hinge).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    ok = margin <= -self.confidence if self.confidence > 0 else \
                        self.is_success(logits, y, target)
                    improved = ok & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best_adv = torch.where(improved.view(shape), x_adv.detach(), best_adv)
                    found |= ok
                if it in self.record_at:
                    recorded[it] = torch.isfinite(best_l2).clone()
                if self.abort_early and it % max(self.steps // 10, 1) == 0:
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        for it in self.record_at:  # iterations after an early abort keep the final state
            recorded.setdefault(it, torch.isfinite(best_l2).clone())
        extra = {"success_at": {it: recorded[it].cpu() for it in self.record_at}} \
            if self.record_at else {}
        return best_adv, extra
