"""Square attack (Andriushchenko et al. 2020), L∞: a random search that needs only the model's
scores, no gradient — the attack that gradient masking cannot stop.

It starts from vertical stripes (each column of each channel moved by ±eps) and then, query
after query, proposes to move one square window of every image to a vertex of the ball (the
window's pixels of each channel set to ``x ± eps``: the current value plus ``±2·eps``, projected
back), keeping a proposal when it lowers the loss or misclassifies the input. The window's side
is ``sqrt(p · H · W)``, with ``p`` starting at ``p_init`` and halved on a fixed schedule of the
query count (at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 queries; with
``rescale_schedule`` the schedule is stretched to ``queries``). As in fra31/auto-attack, one
window position and one sign per channel are drawn per query for the whole batch; an input
leaves the search when it is misclassified.

Losses: ``"margin"`` (default): ``z_y − max_{i≠y} z_i`` (targeted: ``max_{i≠t} z_i − z_t``),
minimized; ``"ce"``: minus the cross-entropy on the label (targeted: the cross-entropy on the
target). Queries are counted per input (the start is one). An input the model already
misclassifies is not attacked (``x_adv`` is ``x``); where the search fails, ``x_adv`` is its
lowest-loss input.

The defaults are AutoAttack's ``version="standard"``: 5,000 queries, ``p_init=0.8``, one run,
the schedule not rescaled. torchattacks 3.5.1's ``Square`` is the test oracle.

Reference: M. Andriushchenko, F. Croce, N. Flammarion, M. Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bnnrobust.attacks.base import (
    AttackError,
    check_budget,
    check_choice,
    check_flag,
    check_positive,
    check_steps,
)
from bnnrobust.attacks.gradient import GradientAttack, GradientParams

LOSSES = ("margin", "ce")
#: query counts after which the window's area halves (fra31/auto-attack's schedule)
SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass(frozen=True, kw_only=True)
class SquareParams(GradientParams):
    """The Square attack's parameters (defaults: AutoAttack's standard version).

    Args:
        eps: L∞ budget on [0, 1] inputs (default 0.3, Galloway et al.'s largest).
        queries: model queries per input and run (default 5000).
        p_init: initial fraction of the image a window covers (default 0.8).
        restarts: runs, each on the inputs not yet broken (default 1).
        loss: ``"margin"`` (default) or ``"ce"``.
        rescale_schedule: stretch the window schedule to ``queries`` (default False, as
            AutoAttack runs it; torchattacks' default is True).
        target, eot_samples, seed: see :class:`~bnnrobust.attacks.gradient.GradientParams`
            (``eot_samples`` averages the scores of a random model over that many passes).
    """

    eps: float = 0.3
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    rescale_schedule: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("eps", check_budget("eps", self.eps))
        check_steps("queries", self.queries)
        self._set("p_init", check_positive("p_init", self.p_init))
        if self.p_init > 1:
            raise AttackError(f"p_init must be in (0, 1] (a fraction of the image), got "
                              f"{self.p_init}.")
        check_steps("restarts", self.restarts)
        check_choice("loss", self.loss, LOSSES)
        check_flag("rescale_schedule", self.rescale_schedule)


class Square(GradientAttack):
    """Square attack, L∞ budget ``eps``, ``queries`` score queries per input (see the module
    doc). It uses no gradient; it runs under the same model set-up as the gradient attacks
    (eval mode, seeded random layers, targets).

    Shape:
        x: ``(N, C, H, W)`` images, or ``(N, D)`` feature vectors (one row of pixels, the
        windows intervals), in [0, 1]; y: ``(N,)``; returns ``x_adv`` of ``x``'s shape.
        ``result.queries``: the queries each input took.

    Example::

        result = Square(model, eps=0.3, queries=5000).run(x, y)
        result.success, result.queries
    """

    name = "square"
    Params = SquareParams

    def window_fraction(self, query: int) -> float:
        """The fraction ``p`` of the image the window covers at query ``query`` (0-based)."""
        if self.params.rescale_schedule:
            query = int(query / self.params.queries * 10000)
        halvings = sum(query > mark for mark in SCHEDULE)
        return self.params.p_init / 2 ** halvings

    @staticmethod
    def window(fraction: float, h: int, w: int) -> tuple[int, int]:
        """The window's height and width covering about ``fraction`` of an ``h``×``w`` image:
        a square of side ``round(sqrt(fraction·h·w))`` (at least 1, at most the image), or on a
        single row (feature vectors) an interval of ``round(fraction·w)``."""
        if h == 1:
            return 1, min(max(int(round(fraction * w)), 1), w)
        side = min(max(int(round(math.sqrt(fraction * h * w))), 1), h, w)
        return side, side

    def scores(self, x: torch.Tensor, label: torch.Tensor, targeted: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per input ``(margin, loss)``: the margin is <= 0 once the attack has succeeded; the
        loss is what the search lowers (see the module doc). ``label``: the true labels, or the
        targets when ``targeted``."""
        passes = self.eot_passes
        logits = sum(self.model(x) for _ in range(passes)) / passes
        rows = torch.arange(len(x), device=x.device)
        picked = logits[rows, label]
        others = logits.masked_fill(F.one_hot(label, logits.shape[1]).bool(), -math.inf)
        margin = picked - others.amax(1)
        if targeted:
            margin = -margin
        if self.params.loss == "margin":
            return margin, margin
        xent = F.cross_entropy(logits, label, reduction="none")
        return margin, (xent if targeted else -xent)

    def _perturb(self, x, y, target):
        if x.dim() == 2:  # feature vectors: one row of pixels, windows become intervals
            x_adv, extra = self._perturb(x.view(len(x), 1, 1, -1), y, target)
            return x_adv.view_as(x), extra
        if x.dim() != 4:
            raise AttackError(f"square attacks images (N, C, H, W) or feature vectors (N, D); "
                              f"got x of shape {tuple(x.shape)}.")
        targeted = target is not None
        label = target if targeted else y
        with torch.no_grad():
            robust = ~self.is_success(self.model(x), y, target)
            x_adv, queries = x.clone(), torch.zeros(len(x), device=x.device)
            for _ in range(self.params.restarts):
                todo = robust.nonzero().flatten()
                if not len(todo):
                    break
                found, used, margin = self._run(x[todo], label[todo], targeted)
                queries[todo] += used
                x_adv[todo] = found
                robust[todo[margin <= 0]] = False
        return x_adv, {"queries": queries}

    def _random_sign(self, shape: list[int], device: torch.device) -> torch.Tensor:
        return torch.sign(2 * torch.rand(shape, generator=self.generator, device=device) - 1)

    def _random_int(self, high: int, device: torch.device) -> int:
        """A uniform integer in [0, high) (fra31's draw: one uniform number, truncated)."""
        return int((high * torch.rand([1], generator=self.generator, device=device)).long())

    def _run(self, x: torch.Tensor, label: torch.Tensor, targeted: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run on ``x``: ``(best inputs, queries used, their margins)``."""
        eps, (n, c, h, w) = self.params.eps, x.shape
        best = (x + eps * self._random_sign([n, c, 1, w], x.device)).clamp(0.0, 1.0)
        best_margin, best_loss = self.scores(best, label, targeted)
        queries = torch.ones(n, device=x.device)
        for query in range(self.params.queries):
            todo = (best_margin > 0).nonzero().flatten()
            if not len(todo):
                break
            tall, wide = self.window(self.window_fraction(query), h, w)
            top, left = self._random_int(h - tall, x.device), self._random_int(w - wide,
                                                                               x.device)
            step = torch.zeros([c, h, w], device=x.device)
            step[:, top:top + tall, left:left + wide] = \
                2.0 * eps * self._random_sign([c, 1, 1], x.device)
            x_now = x[todo]
            proposal = torch.min(torch.max(best[todo] + step, x_now - eps), x_now + eps)
            proposal = proposal.clamp(0.0, 1.0)
            margin, loss = self.scores(proposal, label[todo], targeted)
            lower = loss < best_loss[todo]
            best_loss[todo] = torch.where(lower, loss, best_loss[todo])
            keep = lower | (margin <= 0)
            best_margin[todo] = torch.where(keep, margin, best_margin[todo])
            best[todo] = torch.where(keep.view(-1, 1, 1, 1), proposal, best[todo])
            queries[todo] += 1
        return best, queries, best_margin
