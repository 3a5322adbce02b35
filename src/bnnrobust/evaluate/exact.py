"""What the exact attacks' results add up to: solve statistics and certified accuracy.

Both read the per-point fields of an :class:`~bnnrobust.attacks.AttackResult` of an exact
attack (``status``, ``point_seconds``, ``extra["points"]``).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bnnrobust.attacks import AttackError, AttackResult
from bnnrobust.attacks.combinatorial.milp import SETTLED


@dataclass(frozen=True)
class SolveSummary:
    """Points attacked, proven optimal, flipped (objective > 0), median and mean seconds."""

    points: int
    proven: int
    flipped: int
    median_seconds: float
    mean_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


@dataclass(frozen=True)
class Certified:
    """Certification of labelled points at one ε: counts per status, clean accuracy and
    certified accuracy (correct and proven robust)."""

    points: int
    robust: int
    attacked: int
    unknown: int
    clean_accuracy: float
    certified_accuracy: float
    #: points by the costliest method their certificate needed (start, interval, lp, exact)
    settled_by: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


def _points(result: AttackResult) -> list[dict[str, Any]]:
    if result.status is None or "points" not in result.extra:
        raise AttackError("not the result of an exact attack (no per-point status).")
    return result.extra["points"]


def solve_summary(result: AttackResult) -> SolveSummary:
    """:class:`SolveSummary` of an exact attack's result."""
    points = _points(result)
    times = [p["seconds"] for p in points] or [0.0]
    return SolveSummary(points=len(points),
                        proven=sum(s == "optimal" for s in result.status),
                        flipped=int(result.success.sum()),
                        median_seconds=statistics.median(times),
                        mean_seconds=statistics.fmean(times))


def certified(result: AttackResult, labels: torch.Tensor) -> Certified:
    """:class:`Certified` of a certification result on points with true ``labels``."""
    points = _points(result)
    labels = [int(v) for v in labels.reshape(-1).tolist()]
    if len(labels) != len(points):
        raise AttackError(f"{len(labels)} labels for {len(points)} certified points.")
    correct = [p["prediction"] == t for p, t in zip(points, labels, strict=True)]
    robust = [s == "robust" and ok for s, ok in zip(result.status, correct, strict=True)]
    n = max(len(points), 1)
    return Certified(points=len(points), robust=result.status.count("robust"),
                     attacked=result.status.count("attacked"),
                     unknown=result.status.count("unknown"),
                     clean_accuracy=sum(correct) / n, certified_accuracy=sum(robust) / n,
                     settled_by={m: sum(p.get("method") == m for p in points)
                                 for m in SETTLED})
