"""The MILP attack of Khalil et al. (2019) on a fully connected BNN, certification, minimal ε.

:class:`MILPAttack` maximizes ``f_target − f_prediction`` over the L∞ ε-ball (objective (1);
a flip is an objective > 0) with one of two backends:

- ``cpsat`` (default): OR-Tools CP-SAT on the 1/255 pixel grid, exact for 8-bit images
  (floor(255·ε) whole pixel steps; :mod:`.cpsat`);
- ``highs``: the paper's continuous big-M model, solved by HiGHS through OR-Tools MathOpt
  (exactly ε; :mod:`.highs`).

Both take a starting solution: by default one round of iterated FGSM through the
straight-through surrogate (:mod:`.baseline`), so the exact attack is never weaker than the
gradient attack. ``target="untargeted"`` takes the best over every other class.
:func:`certify` proves that no perturbation within ε changes the prediction, and
:func:`minimal_eps` finds the smallest ε on the pixel grid that does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from bnnrobust.attacks.base import AttackError, check_steps
from bnnrobust.attacks.combinatorial.cpsat import ExactResult, check_pixels, eps_steps
from bnnrobust.attacks.combinatorial.export import IntegerBNN, export

BACKENDS = ("cpsat", "highs")
HINTS = ("fgsm", "none")


def check_backend(backend: str) -> str:
    """The backend name, after checking that its optional extra is installed."""
    if backend not in BACKENDS:
        raise AttackError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}.")
    try:
        if backend == "cpsat":
            from ortools.sat.python import cp_model  # noqa: F401
        else:
            from ortools.math_opt.python import mathopt
            if not hasattr(mathopt.SolverType, "HIGHS"):
                raise ImportError("this OR-Tools build has no HiGHS")
    except ImportError as exc:
        raise AttackError(f"the {backend} backend needs OR-Tools (>= 9.10): "
                          f"pip install 'bnnrobust[{backend}]' ({exc}).") from None
    return backend


def other_classes(ib: IntegerBNN, x: np.ndarray) -> tuple[int, list[int]]:
    """``(prediction, the other classes by decreasing output)`` at the 8-bit input ``x``."""
    order = [int(c) for c in np.argsort(-ib.logits_pixels(x[None])[0], kind="stable")]
    return order[0], order[1:]


def _solver(backend: str):
    if backend == "cpsat":
        from bnnrobust.attacks.combinatorial.cpsat import cpsat_attack
        return cpsat_attack
    from bnnrobust.attacks.combinatorial.highs import highs_attack
    return highs_attack


class MILPAttack:
    """The exact attack on one point at a time (see module doc).

    Args:
        model: a trained ``fc-bnn`` (exported here) or its :class:`IntegerBNN`.
        eps: L∞ budget on [0, 1] (> 0). target: a class index, ``"second"`` (the paper's
            default: the class with the second-highest output) or ``"untargeted"``.
        backend: ``cpsat`` (pixel grid, default) or ``highs`` (continuous).
        time_limit: seconds per point (the paper: 180). threads: CP-SAT workers (1).
        hint: ``fgsm`` (one round of iterated FGSM, needs the PyTorch model) or ``none``
            (zero perturbation).
        seed: solver and hint seed.
    """

    def __init__(self, model: nn.Module | IntegerBNN, *, eps: float, target: int | str = "second",
                 backend: str = "cpsat", time_limit: float = 180.0, threads: int = 1,
                 hint: str = "fgsm", seed: int = 0) -> None:
        self.ib = model if isinstance(model, IntegerBNN) else export(model)
        self.model = None if isinstance(model, IntegerBNN) else model
        eps_steps(eps)
        if not (isinstance(time_limit, (int, float)) and math.isfinite(time_limit)
                and time_limit > 0):
            raise AttackError(f"time_limit must be > 0 seconds, got {time_limit!r}.")
        if hint not in HINTS:
            raise AttackError(f"unknown hint {hint!r}; expected one of {', '.join(HINTS)}.")
        if hint == "fgsm" and self.model is None:
            raise AttackError("hint='fgsm' needs the PyTorch model, not only its integer form; "
                              "pass the model or use hint='none'.")
        if isinstance(target, str) and target not in ("second", "untargeted"):
            raise AttackError(f"unknown target {target!r}; expected a class index, 'second' or "
                              "'untargeted'.")
        self.eps, self.target, self.backend = float(eps), target, check_backend(backend)
        self.time_limit, self.threads = float(time_limit), check_steps("threads", threads)
        self.hint, self.seed = hint, int(seed)

    def settings(self) -> dict[str, Any]:
        """The attack's parameters, as plain data."""
        return {"attack": "milp", "eps": self.eps, "target": self.target,
                "backend": self.backend, "time_limit": self.time_limit,
                "threads": self.threads, "hint": self.hint, "seed": self.seed}

    def _hint(self, pixels: np.ndarray, target: int | str, budget: float) -> np.ndarray | None:
        if self.hint == "none":
            return None
        from bnnrobust.attacks.combinatorial.baseline import iterated_fgsm
        found = iterated_fgsm(self.model, self.ib, pixels, eps=self.eps, target=target,
                              time_limit=max(budget, 1e-3), max_rounds=1, seed=self.seed)
        return found.perturbation if self.backend == "cpsat" else found.perturbation / 255.0

    def attack(self, pixels: np.ndarray, *, floor: float | None = None,
               start_from: np.ndarray | None = None) -> ExactResult:
        """Attack one 8-bit input (integers 0..255, any shape with the model's input size).

        ``start_from``: a starting perturbation that replaces the hint (pixel steps for cpsat,
        the [0, 1] scale for highs), e.g. the result of a longer gradient attack.
        ``floor``: see :func:`.cpsat.cpsat_attack` (used by :func:`certify`).
        """
        x = check_pixels(pixels)
        start = time.perf_counter()
        solve = _solver(self.backend)
        if self.target != "untargeted":
            hint = start_from if start_from is not None else \
                self._hint(x, self.target, self.time_limit)
            left = self.time_limit - (time.perf_counter() - start)
            result = solve(self.ib, x, eps=self.eps, target=self.target,
                           time_limit=max(left, 1e-3), threads=self.threads, hint=hint,
                           floor=floor, seed=self.seed)
            result.seconds = time.perf_counter() - start
            return result
        _, order = other_classes(self.ib, x)
        results = []
        for i, cls in enumerate(order):  # the time left is shared among the classes left
            t0 = time.perf_counter()
            share = (self.time_limit - (t0 - start)) / (len(order) - i)
            hint = start_from if start_from is not None else self._hint(x, cls, share)
            left = share - (time.perf_counter() - t0)
            results.append(solve(self.ib, x, eps=self.eps, target=cls, threads=self.threads,
                                 time_limit=max(left, 1e-3), hint=hint, floor=floor,
                                 seed=self.seed))
        best = max(results, key=lambda r: r.objective)
        return ExactResult(
            status="optimal" if all(r.status == "optimal" for r in results) else "timeout",
            objective=best.objective, bound=max(r.bound for r in results),
            perturbation=best.perturbation, prediction=best.prediction, target=best.target,
            seconds=time.perf_counter() - start, eps_steps=best.eps_steps, trace=best.trace,
            iterations=sum(r.iterations for r in results))


@dataclass
class Certificate:
    """Whether a point keeps its prediction under every perturbation within ε.

    ``status``: ``robust`` (proved for every other class), ``attacked`` (a perturbation makes
    some class reach the prediction's output: ``perturbation``, ``target``) or ``unknown``
    (time ran out first).
    """

    status: str
    prediction: int
    seconds: float
    target: int | None = None
    perturbation: np.ndarray | None = None
    per_class: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain data for JSON."""
        return {"status": self.status, "prediction": self.prediction, "seconds": self.seconds,
                "target": self.target, "per_class": {str(k): v for k, v in self.per_class.items()},
                "perturbation": None if self.perturbation is None else self.perturbation.tolist()}


def certify(model: nn.Module | IntegerBNN, pixels: np.ndarray, *, eps: float,
            backend: str = "cpsat", time_limit: float = 180.0, threads: int = 1,
            seed: int = 0) -> Certificate:
    """Prove (or refute) that no perturbation within ε changes the prediction of ``pixels``.

    For each other class c, most dangerous (highest output) first, it searches for a
    perturbation with ``f_c − f_prediction >= 0`` (a tie counts against robustness); none for
    every class proves the point robust. Each class may use all the time still left: most
    classes are settled in milliseconds.
    """
    attack = MILPAttack(model, eps=eps, target=0, backend=backend, time_limit=time_limit,
                        threads=threads, hint="none", seed=seed)
    start = time.perf_counter()
    x = check_pixels(pixels)
    prediction, order = other_classes(attack.ib, x)
    per_class: dict[int, str] = {}
    for cls in order:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            break
        attack.target, attack.time_limit = cls, left
        result = attack.attack(x, floor=0.0)
        if result.objective >= 0:
            per_class[cls] = "attacked"
            return Certificate("attacked", prediction, time.perf_counter() - start, cls,
                               result.perturbation, per_class)
        per_class[cls] = "robust" if result.status == "optimal" else "unknown"
    robust = len(per_class) == len(order) and all(v == "robust" for v in per_class.values())
    return Certificate("robust" if robust else "unknown", prediction,
                       time.perf_counter() - start, per_class=per_class)


@dataclass
class MinimalEps:
    """The smallest number of pixel steps (ε = steps/255) that changes a prediction.

    ``steps`` is proven minimal when ``proven``; otherwise the truth lies in
    ``[lower, steps]`` (``steps`` is None when no flip was found up to the search's maximum).
    """

    steps: int | None
    lower: int
    proven: bool
    seconds: float
    perturbation: np.ndarray | None = None

    @property
    def eps(self) -> float | None:
        """``steps / 255``, or None."""
        return None if self.steps is None else self.steps / 255.0


def minimal_eps(model: nn.Module | IntegerBNN, pixels: np.ndarray, *, max_eps: float = 0.1,
                time_limit: float = 180.0, threads: int = 1, seed: int = 0) -> MinimalEps:
    """Bisection over whole pixel steps 1..floor(255·max_eps) with :func:`certify` (CP-SAT).

    Each probe gets the time left divided by the probes a bisection still needs; a probe that
    runs out of time leaves the answer as an interval.
    """
    start = time.perf_counter()
    lo, hi = 1, eps_steps(max_eps)  # the answer, if any, lies in [lo, hi]
    found, proven_lower = None, 0
    while lo <= hi:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            break
        mid = (lo + hi) // 2
        probes = max(1, math.ceil(math.log2(hi - lo + 2)))
        cert = certify(model, pixels, eps=mid / 255.0 + 1e-9, time_limit=left / probes,
                       threads=threads, seed=seed)
        if cert.status == "attacked":
            found, hi = (mid, cert.perturbation), mid - 1
        elif cert.status == "robust":
            proven_lower, lo = mid, mid + 1
        else:
            break
    steps = None if found is None else found[0]
    proven = lo > hi and (steps is None or proven_lower == steps - 1)
    return MinimalEps(steps=steps, lower=proven_lower + 1, proven=proven,
                      seconds=time.perf_counter() - start,
                      perturbation=None if found is None else found[1])
