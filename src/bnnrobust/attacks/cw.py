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

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bnnrobust.attacks.base import AttackError, check_flag, check_positive, check_steps
from bnnrobust.attacks.gradient import GradientAttack, GradientParams


@dataclass(frozen=True, kw_only=True)
class CWL2Params(GradientParams):
    """CW-L2's parameters (defaults: Carlini & Wagner's).

    Args:
        c: initial constant of the hinge term (1e-3). confidence: κ (0).
        steps: Adam iterations per search step (1000). lr: Adam's learning rate (0.01).
        binary_search_steps: searches over ``c`` (9). abort_early: stop a search step when
            the loss stalls (True).
        record_at: iteration counts at which to record which inputs were already broken
            (needs ``binary_search_steps=1``; default none).
        target, eot_samples, bpda, seed: see :class:`~bnnrobust.attacks.gradient.GradientParams`.
    """

    c: float = 1e-3
    confidence: float = 0.0
    steps: int = 1000
    lr: float = 0.01
    binary_search_steps: int = 9
    abort_early: bool = True
    record_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("c", check_positive("c", self.c))
        self._set("confidence", check_positive("confidence", self.confidence, allow_zero=True))
        check_steps("steps", self.steps)
        self._set("lr", check_positive("lr", self.lr))
        check_steps("binary_search_steps", self.binary_search_steps)
        check_flag("abort_early", self.abort_early)
        try:
            record = tuple(sorted({check_steps("record_at", i) for i in self.record_at}))
        except TypeError:
            raise AttackError(f"record_at must be a list of iteration counts, got "
                              f"{self.record_at!r}.") from None
        self._set("record_at", record)
        if record and self.binary_search_steps != 1:
            raise AttackError("record_at needs binary_search_steps=1 (one optimization run).")
        if record and record[-1] > self.steps:
            raise AttackError(f"record_at {record[-1]} is beyond steps={self.steps}.")


class CWL2(GradientAttack):
    """Carlini-Wagner L2 attack (see the module docstring for the objective and defaults).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape (the input
        itself where no adversarial example was found).

    Example::

        atk = CWL2.galloway(model, target="random")   # 1 search step, 100 iterations
        result = atk.run(x, y)
    """

    name = "cw"
    Params = CWL2Params
    #: Galloway et al.'s settings: 1 search step, 100 iterations, lr 0.1, c = 10, κ = 0
    GALLOWAY: ClassVar[dict[str, Any]] = {"c": 10.0, "confidence": 0.0, "steps": 100, "lr": 0.1,
                                          "binary_search_steps": 1}

    @classmethod
    def galloway(cls, model: nn.Module, **options: Any) -> CWL2:
        """Galloway et al.'s settings: 1 search step, 100 iterations, lr 0.1, c = 10, κ = 0."""
        return cls(model, **{**cls.GALLOWAY, **options})

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
        const = torch.full((n,), self.params.c, device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best_adv = x.clone()
        w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        recorded: dict[int, torch.Tensor] = {}
        for _ in range(self.params.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.params.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            prev = float("inf")
            for it in range(1, self.params.steps + 1):
                x_adv = (torch.tanh(w) + 1) / 2
                # EOT: the objective's expectation over eot_samples passes; logits for the
                # success check are the passes' mean
                passes = [self.model(x_adv) for _ in range(self.eot_passes)]
                logits = torch.stack(passes).mean(0) if len(passes) > 1 else passes[0]
                hinge = torch.stack([self._margin(p, y, target).clamp(min=-self.params.confidence)
                                     for p in passes]).mean(0)
                margin = self._margin(logits.detach(), y, target)
                l2 = (x_adv - x).flatten(1).pow(2).sum(1)
                loss = (l2 + const * hinge).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    ok = margin <= -self.params.confidence if self.params.confidence > 0 else \
                        self.is_success(logits, y, target)
                    improved = ok & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best_adv = torch.where(improved.view(shape), x_adv.detach(), best_adv)
                    found |= ok
                if it in self.params.record_at:
                    recorded[it] = torch.isfinite(best_l2).clone()
                if self.params.abort_early and it % max(self.params.steps // 10, 1) == 0:
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        for it in self.params.record_at:  # iterations after an early abort keep the final state
            recorded.setdefault(it, torch.isfinite(best_l2).clone())
        extra = {"success_at": {it: recorded[it].cpu() for it in self.params.record_at}} \
            if self.params.record_at else {}
        return best_adv, extra
