"""The MILP attack of Khalil et al. (2019) on a BNN's integer form, certification, minimal ε.

:class:`MILPAttack` maximizes ``f_target − f_prediction`` over the L∞ ε-ball (objective (1);
a flip is an objective > 0) with one of three backends:

- ``cpsat`` (default): OR-Tools CP-SAT on the 1/255 pixel grid, exact for 8-bit images
  (floor(255·ε) whole pixel steps; :mod:`.cpsat`);
- ``highs``: the paper's continuous big-M model, solved by HiGHS through OR-Tools MathOpt
  (exactly ε; :mod:`.highs`);
- ``cpsat-lp``: the paper's continuous problem by the same decomposition as ``cpsat`` (a
  CP-SAT master over activation patterns, reachability of a pattern decided by an LP with the
  float32 margins: :class:`.cpsat.BoxLayer`).

Each takes a starting solution: by default one round of iterated FGSM through the
straight-through surrogate (:mod:`.baseline`), so the exact attack is never weaker than the
gradient attack. ``target="untargeted"`` takes the best over every other class.
:class:`Certify` proves that no perturbation within ε changes the prediction (per point:
:func:`certify_point`, the bounds of :mod:`.bounds` first), and :func:`minimal_eps` brackets
the smallest ε that does, on the pixel grid or the continuous box.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from bnnrobust.attacks.base import (
    AttackError,
    Found,
    check_choice,
    check_positive,
    check_steps,
)
from bnnrobust.attacks.combinatorial.attack import (
    ExactAttack,
    ExactParams,
    TargetedParams,
    records,
)
from bnnrobust.attacks.combinatorial.bounds import METHODS, settle
from bnnrobust.attacks.combinatorial.cpsat import PatternLayer, pattern_layer, pattern_logits
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
        _, order = other_classes(self.integer, x, domain="continuous" if self.continuous
                                 else "grid")
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


#: what can settle a class in a certificate, cheapest first: a given starting perturbation
#: (a counter-example), then the bounds of :mod:`.bounds`, then the exact search
SETTLED = ("start", *METHODS)


@dataclass
class Certificate:
    """Whether a point keeps its prediction under every perturbation within ε.

    ``status``: ``robust`` (proved for every other class), ``attacked`` (a perturbation makes
    some class reach the prediction's output: ``perturbation``, ``target``) or ``unknown``
    (time ran out first). ``settled_by``: per class, the method that settled it (the given
    ``start`` perturbation, ``interval`` or ``lp`` bounds, :mod:`.bounds`, or the ``exact``
    search; :data:`SETTLED`).
    """

    status: str
    prediction: int
    seconds: float
    target: int | None = None
    perturbation: np.ndarray | None = None
    per_class: dict[int, str] = field(default_factory=dict)
    settled_by: dict[int, str] = field(default_factory=dict)

    @property
    def method(self) -> str | None:
        """The costliest method the point needed (``interval`` < ``lp`` < ``exact``; None while
        unknown): a point is only as cheap as its hardest class."""
        if self.status == "unknown":
            return None
        return max(self.settled_by.values(), key=SETTLED.index, default=None)

    def as_dict(self) -> dict:
        """Plain data for JSON."""
        return {"status": self.status, "prediction": self.prediction, "seconds": self.seconds,
                "target": self.target, "method": self.method,
                "per_class": {str(k): v for k, v in self.per_class.items()},
                "settled_by": {str(k): v for k, v in self.settled_by.items()},
                "perturbation": None if self.perturbation is None else self.perturbation.tolist()}


def start_class(ib: IntegerBNN, first: PatternLayer, p: np.ndarray, prediction: int,
                classes: Sequence[int], *, most: int = 10) -> int | None:
    """A class of ``classes`` whose output reaches the prediction's at the perturbation ``p``
    for every activation the model may give the first-layer neurons within their float32
    margin there (:meth:`.cpsat.PatternLayer.ambiguous`; all 2^m combinations of those m
    neurons, by the exact forward pass), or None; also None when more than ``most`` neurons
    are ambiguous. A gradient attack's input at the box's corners often sits within the margin
    of one or two of Galloway's B64's ~1,000 undecided neurons at 2/255 while fooling the
    model: this settles it as attacked when no such neuron decides the flip."""
    ambiguous = first.ambiguous(p)
    if len(ambiguous) > most:
        return None
    combos = np.repeat((first.weight @ p >= first.need).astype(np.int64)[None],
                       2 ** len(ambiguous), axis=0)
    for bit, q in enumerate(ambiguous):
        combos[:, q] = (np.arange(len(combos)) >> bit) & 1
    logits = pattern_logits(ib, first, combos)
    reached = [c for c in classes if np.all(logits[:, c] >= logits[:, prediction])]
    return max(reached, key=lambda c: logits[0, c] - logits[0, prediction], default=None)


def certify_point(ib: IntegerBNN, pixels: np.ndarray, *, eps: float, backend: str = "cpsat",
                  time_limit: float = 180.0, threads: int = 1, seed: int = 0,
                  bounds: bool = True, classes: Sequence[int] | None = None,
                  start: np.ndarray | None = None) -> Certificate:
    """Prove (or refute) that no perturbation within ε changes the prediction of ``pixels``.

    For each other class c, most dangerous (highest output) first: the cheap bounds of
    :mod:`.bounds` (interval, then LP; ``bounds=False`` skips them) settle it when they prove
    ``f_c − f_prediction < 0``; otherwise the exact search looks for a perturbation with
    ``f_c − f_prediction >= 0`` (a tie counts against robustness). None for every class proves
    the point robust. Each class may use all the time still left. ``classes``: only these
    targets (the others known robust, e.g. at a larger ε); the verdict is then about them.
    ``start``: a perturbation to try first (e.g. a gradient attack's, in pixel steps on the
    grid, on the [0, 1] scale on the continuous box; clipped to the ε-box): when some class
    reaches the prediction's output there whatever value the model's float32 arithmetic gives
    the first-layer neurons within their margin (:func:`start_class`), the point is
    ``attacked``, settled by ``start``, without any search; otherwise every exact search
    starts from it.
    """
    check_backend(backend)
    domain = "grid" if backend == "cpsat" else "continuous"
    start_time = time.perf_counter()
    x = check_pixels(pixels, ib)
    first = pattern_layer(ib, x, eps=eps, domain=domain)  # checks ε (the grid needs a step)
    prediction, order = other_classes(ib, x, domain=domain)
    solve = solver(backend)
    per_class: dict[int, str] = {}
    settled_by: dict[int, str] = {}
    if classes is not None:
        order = [c for c in order if c in set(classes)]
    hint = None
    if start is not None and order:
        p = np.asarray(start, dtype=np.float64).ravel()
        if p.shape != x.shape or not np.all(np.isfinite(p)):
            raise AttackError(f"start must be a finite perturbation of {x.size} values (one per "
                              f"input), got shape {np.shape(start)}.")
        p = np.clip(p if domain == "continuous" else np.rint(p).astype(np.int64),
                    first.lo, first.hi)
        best = start_class(ib, first, p, prediction, order)
        if best is not None:
            return Certificate("attacked", prediction, time.perf_counter() - start_time, best,
                               p, {best: "attacked"}, {best: "start"})
        hint = p  # the exact searches start from it (their incumbent and master hint)
    for cls in order:
        left = time_limit - (time.perf_counter() - start_time)
        if left <= 0:
            break
        # the LP gets a quarter of the time left: on a large network (Galloway's B64) it can
        # take minutes and settle nothing, and the exact search needs the rest
        method = settle(ib, first, cls, prediction, time_limit=left / 4) if bounds else None
        if method is not None:
            per_class[cls], settled_by[cls] = "robust", method
            continue
        left = time_limit - (time.perf_counter() - start_time)
        if left <= 0:
            break
        result = solve(ib, x, eps=eps, target=cls, time_limit=left, threads=threads,
                       hint=hint, floor=0.0, seed=seed)
        if result.objective >= 0:
            per_class[cls], settled_by[cls] = "attacked", "exact"
            return Certificate("attacked", prediction, time.perf_counter() - start_time, cls,
                               result.perturbation, per_class, settled_by)
        per_class[cls] = "robust" if result.status == "optimal" else "unknown"
        if result.status == "optimal":
            settled_by[cls] = "exact"
    robust = len(per_class) == len(order) and all(v == "robust" for v in per_class.values())
    return Certificate("robust" if robust else "unknown", prediction,
                       time.perf_counter() - start_time, per_class=per_class, settled_by=settled_by)


@dataclass(frozen=True, kw_only=True)
class CertifyParams(SolverParams):
    """Certification's parameters.

    Args:
        bounds: settle what the interval and LP bounds can before the exact search (default
            True; :mod:`.bounds`).
        eps, time_limit, backend, threads, seed: see the base classes.
    """

    bounds: bool = True


class Certify(ExactAttack):
    """Certification as an attack: per point ``robust`` (proved), ``attacked`` (``x_adv`` is
    the counter-example; ``success`` True) or ``unknown``; see :func:`certify_point`.
    ``run(x, y, start=x_pgd)`` tries a gradient attack's adversarial inputs first: a point
    they already break is ``attacked`` (settled by ``start``) without a search.

    Example::

        result = Certify(model, eps=0.01, time_limit=60).run(x, y)
        certified = [s == "robust" for s in result.status]
        result = Certify(model, eps=0.01).run(x, y, start=PGD(model, eps=0.01).run(x, y).x_adv)
    """

    name = "certify"
    Params = CertifyParams

    @property
    def continuous(self) -> bool:  # noqa: D102
        return self.params.backend in CONTINUOUS

    def attack_point(self, pixels: np.ndarray, *, target: int | str,
                     start: np.ndarray | None = None) -> Certificate:  # noqa: D102
        p = self.params
        return certify_point(self.integer, pixels, eps=p.eps, backend=p.backend,
                             time_limit=p.time_limit, threads=p.threads, seed=p.seed,
                             bounds=p.bounds, start=start)

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
    """The smallest L∞ budget that changes a prediction, bracketed.

    Every ε <= ``lower`` is proven robust (0 when none was); ``upper`` is the L∞ norm of
    ``perturbation``, which changes the prediction (a tie counts, as in certification), or
    None when no perturbation up to the search's maximum was found. ``proven``: the bracket
    is as tight as the domain allows (on the grid ``upper`` is one pixel step above
    ``lower``; on the continuous box ``upper − lower <= tolerance``), or nothing flips up to
    the maximum and the maximum is proven robust.
    """

    lower: float
    upper: float | None
    proven: bool
    seconds: float
    domain: str = "grid"
    perturbation: np.ndarray | None = None
    probes: int = 0

    @property
    def steps(self) -> int | None:
        """On the grid, ``upper`` in whole pixel steps (None when nothing flips)."""
        return None if self.upper is None else round(self.upper * 255)

    def as_dict(self) -> dict:
        """Plain data for JSON (no perturbation)."""
        return {"lower": self.lower, "upper": self.upper, "proven": self.proven,
                "seconds": self.seconds, "domain": self.domain, "probes": self.probes,
                "steps": self.steps if self.domain == "grid" else None}


def minimal_eps(ib: IntegerBNN, pixels: np.ndarray, *, max_eps: float = 0.1,
                backend: str = "cpsat", tolerance: float = 1e-4, time_limit: float = 180.0,
                threads: int = 1, seed: int = 0) -> MinimalEps:
    """Bisection over ε in (0, ``max_eps``] with :func:`certify_point`: whole pixel steps on
    the grid (``backend="cpsat"``), real ε to ``tolerance`` on the continuous box
    (``cpsat-lp``, ``highs``).

    Work is reused between probes: a perturbation found at ε caps the bracket at its own L∞
    norm (often below ε), a class proven robust at ε is robust at every smaller ε and is not
    searched again below it, and the bracket only ever narrows. Each probe gets the time left
    divided by the probes the bisection still needs; a probe that runs out of time leaves the
    answer as the bracket so far.
    """
    check_backend(backend)
    check_positive("max_eps", max_eps)
    check_positive("tolerance", tolerance)
    grid = backend == "cpsat"
    start = time.perf_counter()
    x = check_pixels(pixels, ib)
    top = grid_steps(max_eps) / 255.0 if grid else max_eps
    if not grid:
        eps_steps(max_eps)
    lower, upper, found = 0.0, None, None
    robust_up_to: dict[int, float] = {}  # per class: the largest ε it was proven robust at
    _, order = other_classes(ib, x, domain="grid" if grid else "continuous")
    probes = 0

    def settled() -> bool:
        if upper is None:
            return lower >= top
        return round(upper * 255) - round(lower * 255) <= 1 if grid \
            else upper - lower <= tolerance

    while not settled():
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            break
        if upper is None:  # the maximum first: one probe settles a point robust there
            eps, width = top, (round(top * 255) if grid else top / tolerance)
        elif grid:
            lo_s, hi_s = round(lower * 255), round(upper * 255)
            eps, width = (lo_s + hi_s) // 2 / 255.0, hi_s - lo_s
        else:
            eps, width = (lower + upper) / 2, (upper - lower) / tolerance
        need = max(1, math.ceil(math.log2(max(width, 1) + 1)))
        classes = [c for c in order if robust_up_to.get(c, -1.0) < eps]
        probes += 1
        cert = certify_point(ib, x, eps=eps + (1e-9 if grid else 0.0), backend=backend,
                             time_limit=left / need, threads=threads, seed=seed,
                             classes=classes)
        for cls, verdict in cert.per_class.items():
            if verdict == "robust":
                robust_up_to[cls] = max(robust_up_to.get(cls, -1.0), eps)
        if cert.status == "attacked":
            norm = float(np.abs(cert.perturbation).max())
            upper = norm / 255.0 if grid else norm
            found = cert.perturbation
        elif cert.status == "robust":
            lower = eps
        else:
            break
    proven = settled()
    return MinimalEps(lower=lower, upper=upper, proven=proven,
                      seconds=time.perf_counter() - start, domain="grid" if grid else
                      "continuous", perturbation=found, probes=probes)
