"""Generated datasets: small problems defined by a rule rather than by files.

``and``: the two-input logical AND (Papernot et al. 2016, reproduced by Galloway et al. 2018,
Appendix B): the four corners of the unit square, label 1 only at (1, 1). Train and test are
the same four points, as in those papers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def logical_and() -> tuple[torch.Tensor, torch.Tensor]:
    """The AND truth table: ``x`` 4×2 float in {0, 1}, ``y`` = x1 AND x2 (int64)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, (x[:, 0] * x[:, 1]).long()


#: name -> function returning ``(x, y)`` (the same for both splits)
GENERATED: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {"and": logical_and}
