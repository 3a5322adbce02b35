"""The MILP attack of Khalil et al. (2019) on a fully connected BNN, certification, minimal ε.

:class:`MILPAttack` maximizes ``f_target − f_prediction`` over the L∞ ε-ball (objective (1);
a flip is an objective > 0) with one of three backends:

- ``cpsat`` (default): OR-Tools CP-SAT on the 1/255 pixel grid, exact for 8-bit images
  (floor(255·ε) whole pixel steps; :mod:`.cpsat`);
- ``highs``: the paper's continuous big-M model, solved by HiGHS through OR-Tools MathOpt
  (exactly ε; :mod:`.highs`);
- ``cpsat-lp``: the paper's continuous problem by the same decomposition as ``cpsat`` (a
  CP-SAT master over activation patterns, reachability of a pattern decided by an LP with the
  float32 margins: :class:`.cpsat.BoxLayer`).

Both take a starting solution: by default one round of iterated FGSM through the
straight-through surrogate (:mod:`.baseline`), so the exact attack is never weaker than the
gradient attack. ``target="untargeted"`` takes the best over every other class.
:class:`Certify` proves that no perturbation within ε changes the prediction (per point:
:func:`certify_point`), and :func:`minimal_eps` finds the smallest ε on the pixel grid that
does.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bnnrobust.attacks.base import AttackError, Found, check_choice, check_steps
from bnnrobust.attacks.combinatorial.attack import (
    ExactAttack,
    ExactParams,
    TargetedParams,
    records,
)
from bnnrobust.attacks.combinatorial.export import IntegerBNN
from bnnrobust.attacks.combinatorial.problem import (
    ExactResult,
    check_pixels,
    eps_steps,
    grid_steps,
    other_classes,
)

BACKENDS = ("cpsat", "highs", "cpsat-lp")
#: the backends that solve the paper's continuous problem (|p| <= ε), not the pixel grid
CONTINUOUS = ("highs", "cpsat-lp")
HINTS = ("fgsm", "none")


def check_backend(backend: str) -> str:
    """The backend name, after checking that its optional extra is installed."""
    check_choice("backend", backend, BACKENDS)
    try:
        if backend in ("cpsat", "cpsat-lp"):
            from ortools.sat.python import cp_model  # noqa: F401
        else:
            from ortools.math_opt.python import mathopt
            if not hasattr(mathopt.SolverType, "HIGHS"):
                raise ImportError("this OR-Tools build has no HiGHS")
    except ImportError as exc:
        raise AttackError(f"the {backend} backend needs OR-Tools (>= 9.10): "
                          f"pip install 'bnnrobust[{backend}]' ({exc}).") from None
    return backend


def solver(backend: str):
    """The per-point solver function of ``backend`` (:func:`.cpsat.cpsat_attack` on the grid
    or the continuous box, or :func:`.highs.highs_attack`)."""
    if backend in ("cpsat", "cpsat-lp"):
        from bnnrobust.attacks.combinatorial.cpsat import cpsat_attack
        return functools.partial(cpsat_attack,
                                 domain="continuous" if backend == "cpsat-lp" else "grid")
    from bnnrobust.attacks.combinatorial.highs import highs_attack
    return highs_attack


@dataclass(frozen=True, kw_only=True)
class SolverParams(ExactParams):
    """Solver options.

    Args:
        backend: ``"cpsat"`` (pixel grid, default), ``"highs"`` (continuous big-M MILP) or
            ``"cpsat-lp"`` (continuous, by pattern decomposition).
        threads: CP-SAT workers per point (default 1: deterministic).
    """

    backend: str = "cpsat"
    threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backend(self.backend)
        check_steps("threads", self.threads)


@dataclass(frozen=True, kw_only=True)
class MILPParams(SolverParams, TargetedParams):
    """The MILP attack's parameters.

    Args:
        hint: starting solution: ``"fgsm"`` (one round of iterated FGSM through the model's
            straight-through surrogate, the default) or ``"none"`` (zero perturbation).
        eps, time_limit, target, backend, threads, seed: see the base classes.
    """

    hint: str = "fgsm"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("hint", self.hint, HINTS)


class MILPAttack(ExactAttack):
    """The exact attack, point by point (see the module doc).

    Shape:
        x: ``(N, features)`` or ``(N, 1, 28, 28)`` on the 1/255 grid; y: ``(N,)`` labels
        (the objective is about the prediction, not the label). ``status``: optimal /
        timeout; ``objective``, ``bound``: per point.

    Example::

        atk = MILPAttack(model, eps=0.01, backend="cpsat", time_limit=180)
        result = atk.run(x, y)    # result.status, result.objective, result.success (flips)
    """

    name = "milp"
    Params = MILPParams

    def gradient_use(self) -> str | None:  # noqa: D102
        return "hint='fgsm' (use hint='none' on an integer BNN)" \
            if self.params.hint == "fgsm" else None

    @property
    def continuous(self) -> bool:  # noqa: D102
        return self.params.backend in CONTINUOUS

    def _hint(self, pixels: np.ndarray, target: int | str, budget: float) -> np.ndarray | None:
        if self.params.hint == "none":
            return None
        from bnnrobust.attacks.combinatorial.baseline import iterated_fgsm
        found = iterated_fgsm(self.torch_model, self.integer, pixels, eps=self.params.eps,
                              target=target, time_limit=max(budget, 1e-3), max_rounds=1,
                              seed=self.params.seed,
                              domain="continuous" if self.continuous else "grid")
        return found.perturbation

    def attack_point(self, pixels: np.ndarray, *, target: int | str,
                     start: np.ndarray | None = None,
                     floor: float | None = None) -> ExactResult:
        """Attack one 8-bit input (see :class:`ExactAttack`); ``floor``: see
        :func:`.cpsat.cpsat_attack`."""
        p = self.params
        x = check_pixels(pixels, self.integer)
        begin = time.perf_counter()
        solve = solver(p.backend)
        if target != "untargeted":
            hint = start if start is not None else self._hint(x, target, p.time_limit)
            left = p.time_limit - (time.perf_counter() - begin)
            result = solve(self.integer, x, eps=p.eps, target=target,
                           time_limit=max(left, 1e-3), threads=p.threads, hint=hint,
                           floor=floor, seed=p.seed)
            result.seconds = time.perf_counter() - begin
            return result
        _, order = other_classes(self.integer, x)
        results = []
        for i, cls in enumerate(order):  # the time left is shared among the classes left
            t0 = time.perf_counter()
            share = (p.time_limit - (t0 - begin)) / (len(order) - i)
            hint = start if start is not None else self._hint(x, cls, share)
            left = share - (time.perf_counter() - t0)
            results.append(solve(self.integer, x, eps=p.eps, target=cls, threads=p.threads,
                                 time_limit=max(left, 1e-3), hint=hint, floor=floor,
                                 seed=p.seed))
        best = max(results, key=lambda r: r.objective)
        return ExactResult(
            status="optimal" if all(r.status == "optimal" for r in results) else "timeout",
            objective=best.objective, bound=max(r.bound for r in results),
            perturbation=best.perturbation, prediction=best.prediction, target=best.target,
            seconds=time.perf_counter() - begin, eps_steps=best.eps_steps, trace=best.trace,
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


def certify_point(ib: IntegerBNN, pixels: np.ndarray, *, eps: float, backend: str = "cpsat",
                  time_limit: float = 180.0, threads: int = 1, seed: int = 0) -> Certificate:
    """Prove (or refute) that no perturbation within ε changes the prediction of ``pixels``.

    For each other class c, most dangerous (highest output) first, it searches for a
    perturbation with ``f_c − f_prediction >= 0`` (a tie counts against robustness); none for
    every class proves the point robust. Each class may use all the time still left: most
    classes are settled in milliseconds.
    """
    check_backend(backend)
    (grid_steps if backend == "cpsat" else eps_steps)(eps)  # the grid needs a whole step
    start = time.perf_counter()
    x = check_pixels(pixels, ib)
    prediction, order = other_classes(ib, x)
    solve = solver(backend)
    per_class: dict[int, str] = {}
    for cls in order:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            break
        result = solve(ib, x, eps=eps, target=cls, time_limit=left, threads=threads,
                       hint=None, floor=0.0, seed=seed)
        if result.objective >= 0:
            per_class[cls] = "attacked"
            return Certificate("attacked", prediction, time.perf_counter() - start, cls,
                               result.perturbation, per_class)
        per_class[cls] = "robust" if result.status == "optimal" else "unknown"
    robust = len(per_class) == len(order) and all(v == "robust" for v in per_class.values())
    return Certificate("robust" if robust else "unknown", prediction,
                       time.perf_counter() - start, per_class=per_class)


class Certify(ExactAttack):
    """Certification as an attack: per point ``robust`` (proved), ``attacked`` (``x_adv`` is
    the counter-example; ``success`` True) or ``unknown``; see :func:`certify_point`.

    Example::

        result = Certify(model, eps=0.01, time_limit=60).run(x, y)
        certified = [s == "robust" for s in result.status]
    """

    name = "certify"
    Params = SolverParams

    @property
    def continuous(self) -> bool:  # noqa: D102
        return self.params.backend in CONTINUOUS

    def attack_point(self, pixels: np.ndarray, *, target: int | str,
                     start: np.ndarray | None = None) -> Certificate:  # noqa: D102
        p = self.params
        return certify_point(self.integer, pixels, eps=p.eps, backend=p.backend,
                             time_limit=p.time_limit, threads=p.threads, seed=p.seed)

    def _found(self, x: torch.Tensor, pixels: np.ndarray, results: list) -> Found:
        device = x.device
        x_adv = self.adversarial(x, pixels, [r.perturbation for r in results])
        self.replay(x, x_adv, results)
        return Found(
            x, x_adv,
            success=torch.tensor([r.status == "attacked" for r in results], device=device),
            status=tuple(r.status for r in results),
            point_seconds=torch.tensor([r.seconds for r in results], dtype=torch.float64,
                                       device=device),
            extra={"points": records(results)})


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


def minimal_eps(ib: IntegerBNN, pixels: np.ndarray, *, max_eps: float = 0.1,
                time_limit: float = 180.0, threads: int = 1, seed: int = 0) -> MinimalEps:
    """Bisection over whole pixel steps 1..floor(255·max_eps) with :func:`certify_point`
    (CP-SAT).

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
        cert = certify_point(ib, pixels, eps=mid / 255.0 + 1e-9, time_limit=left / probes,
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
