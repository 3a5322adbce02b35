"""The exact targeted attack of Khalil et al. (2019) on the 1/255 pixel grid, with CP-SAT.

For an 8-bit image the perturbation is a vector of whole pixel steps ``p`` with
``|p_i| <= k = floor(255·ε)`` and ``0 <= x_i + p_i <= 255``; on the integer form of the BNN
(:mod:`.export`) every pre-activation is then an integer, so the problem is exact in integer
arithmetic. Problem: maximize ``f_target − f_prediction`` (the paper's objective (1)); a flip is
an objective > 0.

A monolithic model (pixels, every neuron, the objective) gives CP-SAT a weak bound: on a
2×100 MNIST BNN at ε = 0.01 it could not close the gap in 30 s where enumerating the few
undecided first-layer neurons would have. So the solver works on the activation pattern of
those neurons instead (logic-based Benders decomposition):

1. First-layer neurons whose sign cannot change over the box (interval bounds, exact on the
   grid) are fixed; the ``u`` undecided ones (10-40 at ε = 0.01) become Booleans.
2. A *master* CP-SAT model over those Booleans and the deeper layers (pure Boolean: reified
   cardinality constraints, only objective-relevant last-layer neurons kept) maximizes the
   objective. Its optimum is an upper bound on the attack's optimum.
3. Each pair of first-layer constraints is checked for joint feasibility over the box in
   closed form (:meth:`FirstLayer.pair_conflicts`); incompatible pairs become clauses.
4. The master's best pattern is checked for reachability over the pixels (the linear
   relaxation settles most checks in milliseconds: infeasible with a safe margin, or a rounded
   point that satisfies the rows exactly; a small CP-SAT model decides the rest). Every check
   is remembered: a later (partial) pattern that a perturbation found before already gives, or
   that contains a partial pattern proven unreachable, is answered without an LP (on the
   paper-trained 2×100 points 2 and 5: 105 → 78 and 163 → 117 LPs).
   Reachable: the pattern's value is the optimum (it is an upper bound and is attained).
   Unreachable: QuickXplain shrinks the pattern to a small infeasible core, whose negation
   is added to the master as a clause; repeat.
5. When the master's optimum is unreachable, the solutions it met on the way to it are
   checked as well (best first): an unreachable one gives a core too, a reachable one that
   beats the incumbent becomes the incumbent and raises the master's floor to it. On the
   paper-trained 2×100, ε = 0.01, point 96 (41 undecided neurons), this turned a 180 s
   timeout at objective −8.35 into the optimum +1.20, proven in 122–156 s (25 and 22 master
   solves instead of 46; two versions of the check, beside one and two other processes).
6. The last 10 % of the time limit is kept: when the search has not proven an optimum by
   then, :func:`climb` improves the incumbent by single-neuron flips of its pattern that some
   perturbation reaches (paper-trained 2×200, ε = 0.01, test point 0: one round of iterated
   FGSM gives −20.04, the search nothing better in 54 s, the climb −10.06; HiGHS big-M
   reaches −17.28 in 180 s).

A starting perturbation (zero, or a gradient attack's result) is the first incumbent, and the
master is constrained to beat it, so the attack is never weaker than its hint. The real output
weights are scaled to integers (2^20 / max |coefficient|) for the master's objective; every
reported objective is recomputed by the exact integer forward pass, and a disagreement beyond
what the rounding explains is an error, never a result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model
from scipy.optimize import linprog

from bnnrobust.attacks.base import AttackError, check_steps
from bnnrobust.attacks.combinatorial.export import IntegerBNN, dense, times
from bnnrobust.attacks.combinatorial.problem import (
    ExactResult,
    check_pixels,
    check_seconds,
    deeper_layers,
    eps_steps,
    float32_margin,
    grid_steps,
    interval,
    logits_at,
    objective_relevant,
    objective_terms,
    resolve_target,
)

SCALE_BITS = 20


def reifier(model: cp_model.CpModel):
    """The CP-SAT way to make a free neuron of :func:`.problem.deeper_layers`: a Boolean true
    iff ``const + Σ coefs·terms >= threshold``."""

    def make(li: int, j: int, const: int, terms: list, coefs: list, threshold: int,
             low: int, high: int):
        b = model.NewBoolVar(f"h{li}_{j}")
        expr = const + cp_model.LinearExpr.WeightedSum(terms, coefs)
        model.Add(expr >= threshold).OnlyEnforceIf(b)
        model.Add(expr <= threshold - 1).OnlyEnforceIf(b.Not())
        return b

    return make


def relu_max(model: cp_model.CpModel):
    """The CP-SAT way to make a ReLU unit of :func:`.problem.objective_terms`: an integer
    ``r = max(a, 0)``."""

    def make(j: int, const: int, terms: list, coefs: list, low: int, high: int, weight: float):
        r = model.NewIntVar(0, high, f"r_{j}")
        model.AddMaxEquality(r, [const + cp_model.LinearExpr.WeightedSum(terms, coefs), 0])
        return r

    return make


class PatternLayer:
    """What the pattern search needs of a first layer over a perturbation box: ``undecided``
    (neurons whose sign can change), ``fixed`` (every neuron's activation at ``x``; the
    undecided ones' entries are placeholders), ``weight`` and ``need`` (neuron
    ``undecided[q]`` fires iff ``weight[q] · p >= need[q]``), the box ``lo``/``hi``, and
    :meth:`reach` (a perturbation giving a pattern, or ``"infeasible"``/``"unknown"``)."""

    undecided: np.ndarray
    fixed: np.ndarray
    weight: np.ndarray
    need: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def reach(self, pattern: np.ndarray, subset, time_limit: float) -> np.ndarray | str:
        """A perturbation giving ``pattern`` on ``subset``, or ``"infeasible"`` / ``"unknown"``.

        Answered from what earlier checks proved when they settle it (a perturbation found
        before that gives this partial pattern too, or an unreachable partial pattern this one
        contains), else by the subclass's exact check (:meth:`solve`), whose answer is kept.
        """
        q = np.asarray(subset, dtype=np.int64)
        values = np.asarray(pattern)[q]
        cache = self._cache()
        if len(q):
            wanted = np.full(len(self.undecided), -1, dtype=np.int64)
            wanted[q] = values
            for core_q, core_v in cache["unreachable"]:
                if np.array_equal(wanted[core_q], core_v):
                    return "infeasible"
            if cache["points"]:
                met = np.where(values == 1, cache["fires"][:, q], cache["off"][:, q]).all(1)
                if met.any():
                    return cache["points"][int(np.argmax(met))]
        found = self.solve(pattern, subset, time_limit)
        if isinstance(found, str):
            if found == "infeasible" and len(q):
                cache["unreachable"].append((q, values))
        else:
            a_on, b_on, a_off, b_off = cache["rows"]
            fires, off = a_on @ found >= b_on, a_off @ found >= b_off
            cache["points"].append(found)
            cache["fires"] = np.vstack([cache["fires"], fires[None]])
            cache["off"] = np.vstack([cache["off"], off[None]])
        return found

    def _cache(self) -> dict:
        if getattr(self, "_known", None) is None:
            u = len(self.undecided)
            a_on, b_on = self.rows(np.ones(u, dtype=np.int64), range(u))
            a_off, b_off = self.rows(np.zeros(u, dtype=np.int64), range(u))
            self._known = {"rows": (a_on, b_on, a_off, b_off), "unreachable": [], "points": [],
                           "fires": np.zeros((0, u), bool), "off": np.zeros((0, u), bool)}
        return self._known

    def solve(self, pattern: np.ndarray, subset, time_limit: float) -> np.ndarray | str:
        """The exact reachability check of :meth:`reach` (no memory)."""
        raise NotImplementedError

    #: how far a pair's bounds must cross before it is declared infeasible (0 on the grid,
    #: where the arithmetic is exact; a float tolerance on the continuous box)
    pair_tolerance: float = 0.0

    def rows(self, pattern: np.ndarray, subset) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def pair_conflicts(self) -> list[tuple[int, int, int, int]]:
        """Pairs ``(q, a, r, b)``: neuron q taking value a and neuron r taking b is impossible.

        Two constraints ``u·p >= c1``, ``v·p >= c2`` with ±1 rows: with ``X`` the sum of
        ``u_i p_i`` where u and v agree and ``Y`` where they differ, they read
        ``X + Y >= c1``, ``X − Y >= c2``; X and Y range independently over every value
        between their bounds (on the grid, every integer), so taking X at its maximum they are
        jointly feasible iff ``max(L_Y, c1 − U_X) <= min(U_Y, U_X − c2)``. Rows that are not
        ±1 (a first layer with real weights) give no pairs.
        """
        u = len(self.undecided)
        if u < 2 or not np.all(np.abs(self.weight) == 1):
            return []
        rows_on, rhs_on = self.rows(np.ones(u, dtype=np.int64), range(u))
        rows_off, rhs_off = self.rows(np.zeros(u, dtype=np.int64), range(u))
        rows, rhs = np.concatenate([rows_on, rows_off]), np.concatenate([rhs_on, rhs_off])
        amax = np.where(rows > 0, self.hi, -self.lo)
        amin = np.where(rows > 0, self.lo, -self.hi)
        dmax, dmin = (amax * rows) @ rows.T, (amin * rows) @ rows.T
        ux = (amax.sum(1)[:, None] + dmax) / 2
        uy = (amax.sum(1)[:, None] - dmax) / 2
        ly = (amin.sum(1)[:, None] - dmin) / 2
        gap = np.maximum(ly, rhs[:, None] - ux) - np.minimum(uy, ux - rhs[None, :])
        out = []
        for i, j in zip(*np.nonzero(gap > self.pair_tolerance), strict=True):
            if i < j and i % u != j % u:
                out.append((int(i % u), int(i < u), int(j % u), int(j < u)))
        return out

    def ambiguous(self, p: np.ndarray) -> np.ndarray:
        """The positions (in ``undecided``) of the neurons whose pre-activation at the
        perturbation ``p`` lies within the margin this layer keeps around their threshold, on
        neither side: the model's own float32 arithmetic may give them either value (on the
        grid none: integer arithmetic). Elsewhere the activation pattern at ``p`` is the
        model's own."""
        a_on, b_on, a_off, b_off = self._cache()["rows"]
        return np.flatnonzero((a_on @ p < b_on) & (a_off @ p < b_off))

    def decided(self) -> dict[int, int]:
        """Neurons whose sign cannot change over the box: index -> ±1."""
        rest = np.setdiff1d(np.arange(len(self.fixed)), self.undecided)
        return {int(j): int(self.fixed[j]) for j in rest}

    def core(self, pattern: np.ndarray, deadline: float,
             among: list[int] | None = None) -> list[int]:
        """A small subset of the undecided neurons (of ``among``, default all) whose values in
        ``pattern`` cannot all be reached (QuickXplain, Junker 2004: about ``c·log(u/c)``
        checks for a core of size c).

        A check that runs out of time counts as feasible; the core is verified at the end and
        ``among`` itself (infeasible when called) is returned if it does not hold."""

        def infeasible(subset: list[int]) -> bool:
            left = deadline - time.perf_counter()
            if left <= 0 or not subset:
                return False
            reached = self.reach(pattern, subset, left)
            return isinstance(reached, str) and reached == "infeasible"

        def explain(background: list[int], delta: bool, rest: list[int]) -> list[int]:
            if delta and infeasible(background):
                return []
            if len(rest) == 1:
                return rest
            half = len(rest) // 2
            first, second = rest[:half], rest[half:]
            d2 = explain(background + first, True, second)
            d1 = explain(background + d2, bool(d2), first)
            return d1 + d2

        everything = list(range(len(self.undecided))) if among is None else list(among)
        found = sorted(explain([], False, everything))
        return found if len(found) < len(everything) and infeasible(found) else everything

    def cores(self, pattern: np.ndarray, deadline: float, *, most: int = 8) -> list[list[int]]:
        """Up to ``most`` disjoint infeasible cores of an unreachable ``pattern``: after each,
        the neurons left outside every core found are checked again and, while they are still
        unreachable together, explained too (each extra core costs a few LPs and can save a
        master solve)."""
        found = [self.core(pattern, deadline)]
        left = sorted(set(range(len(self.undecided))) - set(found[0]))
        while len(found) < most and left and time.perf_counter() < deadline:
            reached = self.reach(pattern, left, deadline - time.perf_counter())
            if not (isinstance(reached, str) and reached == "infeasible"):
                break
            found.append(self.core(pattern, deadline, among=left))
            left = sorted(set(left) - set(found[-1]))
        return found


class FirstLayer(PatternLayer):
    """The first hidden layer over the pixel box ``x + p``, ``|p| <= k``, ``0 <= x + p <= 255``
    (whole pixel steps; interval bounds are exact on the grid)."""

    def __init__(self, ib: IntegerBNN, x: np.ndarray, k: int) -> None:
        layer = ib.layers[0]
        self.x, self.k = x, k
        self.lo, self.hi = np.maximum(-k, -x), np.minimum(k, 255 - x)
        w = layer.weight.astype(np.int64)
        base = w @ x
        low, high = interval(w, base, self.lo, self.hi)
        thr = layer.int_threshold
        self.undecided = np.flatnonzero((low < thr) & (high >= thr))
        self.fixed = np.where(low >= thr, 1, -1)
        self.weight = w[self.undecided]
        self.need = (thr - base)[self.undecided]

    def rows(self, pattern: np.ndarray, subset) -> tuple[np.ndarray, np.ndarray]:
        """``(A, b)`` with ``A p >= b`` meaning: neuron ``undecided[q]`` takes ``pattern[q]``
        (1 fires, 0 not) for every q in ``subset``."""
        q = np.asarray(subset, dtype=np.int64)
        sign = np.where(pattern[q] == 1, 1, -1)
        return self.weight[q] * sign[:, None], np.where(sign > 0, self.need[q], 1 - self.need[q])

    def solve(self, pattern: np.ndarray, subset, time_limit: float) -> np.ndarray | str:
        """A perturbation giving ``pattern`` on ``subset``, or ``"infeasible"`` / ``"unknown"``.

        First the linear relaxation (:meth:`_reach_lp`, milliseconds), which settles most
        checks; CP-SAT over the integer steps (hinted with the rounded LP point) decides the
        rest. CP-SAT alone spends about a second in presolve on 80 dense constraints.
        """
        a, b = self.rows(pattern, subset)
        settled, hint = self._reach_lp(a, b)
        if settled is not None:
            return settled
        model = cp_model.CpModel()
        p = [model.NewIntVar(int(lo), int(hi), "") for lo, hi in zip(self.lo, self.hi, strict=True)]
        for row, rhs in zip(a, b, strict=True):
            model.Add(cp_model.LinearExpr.WeightedSum(p, [int(v) for v in row]) >= int(rhs))
        if hint is not None:
            for v, h in zip(p, hint, strict=True):
                model.AddHint(v, int(h))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.max_time_in_seconds = max(float(time_limit), 0.01)
        code = solver.Solve(model)
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return np.array([solver.Value(v) for v in p], dtype=np.int64)
        return "infeasible" if code == cp_model.INFEASIBLE else "unknown"

    def _reach_lp(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | str | None,
                                                                np.ndarray | None]:
        """``A p >= b`` over the real box: maximize the smallest slack ``t`` (HiGHS's dual
        simplex through SciPy). Every grid point has ``t >= 0``, so an optimum ``t < −1/4`` (a
        margin far above the solver's 1e-7 tolerances) proves the grid system infeasible; a
        rounded LP point that satisfies the rows exactly proves it feasible. Otherwise returns
        ``(None, rounded point or None)`` for the exact check."""
        if len(b) == 0:
            return np.zeros_like(self.x), None
        n = len(self.lo)
        result = linprog(np.r_[np.zeros(n), -1.0], A_ub=np.c_[-a, np.ones(len(b))], b_ub=-b,
                         bounds=[*zip(self.lo, self.hi, strict=True), (None, float(n))],
                         method="highs-ds", options={"presolve": False})
        if result.status != 0:
            return None, None
        if result.x[-1] < -0.25:
            return "infeasible", None
        point = np.clip(np.round(result.x[:-1]), self.lo, self.hi).astype(np.int64)
        return (point if np.all(a @ point >= b) else None), point



class BoxLayer(PatternLayer):
    """The first hidden layer over the paper's continuous box: ``x + p`` on the [0, 1] scale,
    ``|p| <= ε``, ``0 <= x + p <= 1``.

    A neuron fires iff ``a = W·(x + p) − τ >= 0`` in the model. So that every answer holds in the
    model's own float32 arithmetic, "fires" is encoded as ``a >= δ`` and "does not fire" (the
    strict side, sign(0) = +1) as ``a <= −δ``, with δ per neuron from
    :func:`.problem.float32_margin` (plus 1e-6): a pattern reached in this encoding is the
    pattern the float32 model computes. A neuron is decided when its whole interval lies beyond
    ±δ. Reachability of a pattern is a linear feasibility problem, decided exactly by an LP
    that maximizes the smallest slack ``t`` (:meth:`reach`). The residual assumption: an
    activation pattern needing a pre-activation within δ of its threshold is treated as
    unreachable, both when attacking and when proving robustness.
    """

    def __init__(self, ib: IntegerBNN, x: np.ndarray, eps: float) -> None:
        layer = ib.layers[0]
        self.x = np.asarray(x, np.float64)
        self.lo, self.hi = np.maximum(-eps, -self.x), np.minimum(eps, 1.0 - self.x)
        w = dense(layer.weight).astype(np.float64)
        base = w @ self.x - layer.threshold
        low, high = interval(w, base, self.lo, self.hi)
        margin = float32_margin(w, self.x + self.hi, layer.margin_scale) + 1e-6
        on, off = low >= margin, high <= -margin
        self.undecided = np.flatnonzero(~(on | off))
        self.fixed = np.where(on, 1, -1)
        self.weight = w[self.undecided]
        self.need = -base[self.undecided]
        self.margin = margin[self.undecided]
        self.pair_tolerance = 1e-9

    def rows(self, pattern: np.ndarray, subset) -> tuple[np.ndarray, np.ndarray]:
        """``(A, b)`` with ``A p >= b`` meaning: neuron ``undecided[q]`` takes ``pattern[q]``
        with its margin, for every q in ``subset``."""
        q = np.asarray(subset, dtype=np.int64)
        sign = np.where(pattern[q] == 1, 1.0, -1.0)
        return self.weight[q] * sign[:, None], sign * self.need[q] + self.margin[q]

    def solve(self, pattern: np.ndarray, subset, time_limit: float) -> np.ndarray | str:
        """Maximize ``t`` with ``A p >= b + t`` over the box (HiGHS's dual simplex through
        SciPy, without presolve: on the paper-trained 2×100 MNIST points 2 and 5 at ε = 0.01 it
        cut the LP time from 4.0 to 2.6 s and from 5.9 to 4.1 s): ``t* >= 0`` gives a
        perturbation (checked in float64: ``A p >= b`` exactly), ``t* < −1e-6`` (far beyond
        the solver's 1e-7 tolerance on these scales) proves the pattern unreachable; in
        between, ``"unknown"``."""
        a, b = self.rows(pattern, subset)
        if len(b) == 0:
            return np.zeros_like(self.x)
        n = len(self.lo)
        result = linprog(np.r_[np.zeros(n), -1.0], A_ub=np.c_[-a, np.ones(len(b))], b_ub=-b,
                         bounds=[*zip(self.lo, self.hi, strict=True), (None, 1.0)],
                         method="highs-ds", options={"time_limit": max(float(time_limit), 0.01),
                                                     "presolve": False})
        if result.status != 0:
            return "unknown"
        if result.x[-1] < -1e-6:
            return "infeasible"
        point = np.clip(result.x[:-1], self.lo, self.hi)
        return point if np.all(a @ point >= b) else "unknown"


def pattern_layer(ib: IntegerBNN, pixels: np.ndarray, *, eps: float,
                  domain: str = "grid") -> PatternLayer:
    """The first layer of ``ib`` over the ε-box around the 8-bit input ``pixels``: on the
    pixel grid (:class:`FirstLayer`, floor(255·ε) whole steps) or on the paper's continuous
    box (:class:`BoxLayer`, ``domain="continuous"``)."""
    if domain == "grid":
        if not ib.grid_exact:
            raise AttackError("this network's first layer has real weights (a convolution), so "
                              "the 1/255 pixel grid is not integer arithmetic there: use the "
                              "continuous problem (backend cpsat-lp or highs).")
        return FirstLayer(ib, pixels, grid_steps(eps))
    if domain == "continuous":
        eps_steps(eps)  # checks ε
        return BoxLayer(ib, pixels / 255.0, eps)
    raise AttackError(f"unknown domain {domain!r}; expected grid or continuous.")


@dataclass
class PatternSearch:
    """Outcome of :meth:`FirstLayer.search`.

    ``status``: ``optimal`` (the master's best reachable pattern, proved), ``feasible`` (a
    reachable pattern the master had not proved best when time ran out), ``infeasible`` (no
    reachable pattern satisfies the master's constraints, the floor raised by the last
    improvement included) or ``timeout`` (nothing found).
    ``bound``: the master's last proven bound on its (integer) objective, or None.
    """

    status: str
    pattern: np.ndarray | None = None
    perturbation: np.ndarray | None = None
    value: int | None = None
    bound: float | None = None
    iterations: int = 0


class _Harvest(cp_model.CpSolverSolutionCallback):
    """Every improving solution the master meets on its way to the optimum (patterns only)."""

    def __init__(self, b1: list) -> None:
        super().__init__()
        self.b1, self.patterns = b1, []

    def on_solution_callback(self) -> None:
        self.patterns.append((np.array([self.Value(b) for b in self.b1], dtype=np.int64),
                              int(self.ObjectiveValue())))


def search(first: FirstLayer, model: cp_model.CpModel, b1: list, *, deadline: float,
           threads: int = 1, seed: int = 0, accept=None, improve=None) -> PatternSearch:
    """Maximize ``model``'s objective over first-layer patterns some perturbation reaches.

    ``model`` is a master problem whose Booleans ``b1[q]`` are the values of
    ``first.undecided[q]``; pairwise conflicts and, as the search meets them, infeasible cores
    are added to it as clauses (see the module doc). ``accept(pattern, perturbation, value)``
    may reject a reachable pattern, which is then excluded and the search goes on.

    When an optimum of the master is unreachable (or refused), its intermediate solutions on
    the way are checked too: an unreachable one gives a core (fewer master solves), a reachable
    and accepted one is passed to ``improve(pattern, perturbation, value)``, which raises the
    master's floor above it (the caller's constraint), and becomes the result if time runs out
    before an optimum is proven reachable. Without ``improve`` only optima are checked.
    """
    lits = [[b.Not(), b] for b in b1]
    for q, a, r, v in first.pair_conflicts():
        model.AddBoolOr([lits[q][1 - a], lits[r][1 - v]])

    def exclude(pattern: np.ndarray, subset) -> None:
        model.AddBoolOr([lits[q][1 - int(pattern[q])] for q in subset])

    out = PatternSearch("timeout")
    while time.perf_counter() < deadline:
        out.iterations += 1
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(deadline - time.perf_counter(), 0.01)
        solver.parameters.num_workers = int(threads)
        solver.parameters.random_seed = int(seed)
        # the master is re-solved after every cut; its presolve cost more than it saved
        # (first 10 MNIST points, 2×100, ε = 0.01: grid 6.0 → 3.0 s in all, continuous points
        # 2 and 4: 20.7 → 13.3 s and 45.7 → 31.2 s)
        solver.parameters.cp_model_presolve = False
        harvest = _Harvest(b1) if improve is not None else None
        code = solver.Solve(model, harvest)
        if code == cp_model.INFEASIBLE:
            out.status = "infeasible"  # nothing beats the floor: the last improvement is best
            return out
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return out  # out of time
        out.bound = solver.BestObjectiveBound()
        pattern = np.array([solver.Value(b) for b in b1], dtype=np.int64)
        reached = first.reach(pattern, range(len(b1)), deadline - time.perf_counter())
        if isinstance(reached, str):
            if reached == "unknown":
                return out
            for core in first.cores(pattern, deadline):
                exclude(pattern, core)
        elif accept is not None and not accept(pattern, reached, solver.ObjectiveValue()):
            exclude(pattern, range(len(b1)))
        else:
            out.status = "optimal" if code == cp_model.OPTIMAL else "feasible"
            out.pattern, out.perturbation = pattern, reached
            out.value = int(solver.ObjectiveValue())
            return out
        if harvest is None:
            continue
        # the optimum is out: the solutions met on the way to it, best first
        for pattern, value in harvest.patterns[:-1][::-1]:
            if time.perf_counter() >= deadline:
                break
            reached = first.reach(pattern, range(len(b1)), deadline - time.perf_counter())
            if isinstance(reached, str):
                if reached == "infeasible":
                    for core in first.cores(pattern, deadline, most=1):
                        exclude(pattern, core)
                continue
            if accept is None or accept(pattern, reached, value):
                improve(pattern, reached, value)
                out.status, out.pattern, out.perturbation, out.value = (
                    "feasible", pattern, reached, value)
                break  # the raised floor excludes every lower solution
    return out


def pattern_logits(ib: IntegerBNN, first: PatternLayer, patterns: np.ndarray, *,
                   chunk: int = 64) -> np.ndarray:
    """The outputs (one row per pattern) of each first-layer activation pattern (rows of
    ``patterns``, over the undecided neurons) by the exact integer forward pass through the
    deeper layers, ``chunk`` patterns at a time. The second layer's sums over the fixed
    first-layer neurons are computed once (on Galloway's B64, 504 undecided of 50,176
    first-layer neurons, this makes 504 patterns' objectives 6.9 → 0.52 s)."""
    patterns = np.atleast_2d(patterns)
    if len(ib.layers) > 1:
        weight = ib.layers[1].weight
        fixed = first.fixed.astype(np.int64)
        fixed[first.undecided] = 0
        const = times(weight, fixed[None])[0].astype(np.int64)
        sub = weight[:, first.undecided].astype(np.int64)
    deeper = [(layer.weight.astype(np.int64), layer.int_threshold) for layer in ib.layers[2:]]
    logits = []
    for begin in range(0, len(patterns), chunk):
        h_free = np.where(patterns[begin:begin + chunk] == 1, 1, -1)
        if len(ib.layers) > 1:
            h = np.where(const[None] + times(sub, h_free) >= ib.layers[1].int_threshold, 1, -1)
        else:
            h = np.repeat(first.fixed[None], len(h_free), axis=0)
            h[:, first.undecided] = h_free
        for weight, threshold in deeper:
            h = np.where(times(weight, h) >= threshold, 1, -1)
        logits.append(ib.output(h))
    return np.concatenate(logits) if logits else np.zeros((0, len(ib.out_bias)))


def pattern_values(ib: IntegerBNN, first: PatternLayer, patterns: np.ndarray, target: int,
                   prediction: int, *, chunk: int = 64) -> np.ndarray:
    """The objective ``f_target − f_prediction`` of each first-layer activation pattern
    (:func:`pattern_logits`)."""
    logits = pattern_logits(ib, first, patterns, chunk=chunk)
    return logits[:, target] - logits[:, prediction]


def pattern_value(ib: IntegerBNN, first: PatternLayer, pattern: np.ndarray, target: int,
                  prediction: int) -> float:
    """The objective of one first-layer activation ``pattern`` (:func:`pattern_values`)."""
    return float(pattern_values(ib, first, np.asarray(pattern)[None], target, prediction)[0])


def climb(ib: IntegerBNN, first: PatternLayer, incumbent: np.ndarray, best: float, *,
          target: int, prediction: int, value_at, deadline: float
          ) -> tuple[np.ndarray, float, int]:
    """Hill climbing from ``incumbent`` over the activation pattern of the undecided
    first-layer neurons: each round computes the objective of every single-neuron flip of the
    current pattern (the exact forward pass through the deeper layers, no solver) and moves to
    the best flip above ``best`` that some perturbation reaches (:meth:`PatternLayer.reach`),
    until none does or ``deadline`` passes. Returns the best perturbation, its objective
    (``value_at``) and the number of moves.

    On the paper-trained 2×200 MNIST BNN at ε = 0.01 (continuous), one round of iterated FGSM
    gives −20.04 on test point 0 and climbing from it −10.06 in 1.9 s (HiGHS big-M: −17.28
    after 180 s).
    """
    pattern = (first.weight @ incumbent >= first.need).astype(np.int64)
    moves, moved = 0, True
    while moved and time.perf_counter() < deadline:
        moved = False
        flips = np.repeat(pattern[None], len(pattern), axis=0)
        flips[np.arange(len(pattern)), np.arange(len(pattern))] ^= 1
        values = pattern_values(ib, first, flips, target, prediction)
        for q in np.argsort(values, kind="stable")[::-1]:
            if values[q] <= best or time.perf_counter() >= deadline:
                break
            reached = first.reach(flips[q], range(len(pattern)), deadline - time.perf_counter())
            value = -math.inf if isinstance(reached, str) else value_at(reached)
            if value > best:
                pattern, incumbent, best, moves, moved = flips[q], reached, value, moves + 1, True
                break
    return incumbent, best, moves


def cpsat_attack(ib: IntegerBNN, pixels: np.ndarray, *, eps: float, target: int | str = "second",
                 time_limit: float = 180.0, threads: int = 1, hint: np.ndarray | None = None,
                 floor: float | None = None, seed: int = 0, domain: str = "grid",
                 climbing: float = 0.1) -> ExactResult:
    """Maximize f_target − f_prediction over the ε-ball on the pixel grid (see module doc), or
    with ``domain="continuous"`` over the paper's real box (:class:`BoxLayer`; ``hint`` and the
    returned perturbation are then on the [0, 1] scale).

    Args:
        ib: the exported BNN. pixels: one 8-bit input (integers 0..255), flattened.
        eps: L∞ budget on [0, 1]; the grid allows floor(255·ε) pixel steps.
        target: a class, or ``"second"`` (the class with the second-highest output).
        time_limit: seconds for the whole attack; threads: CP-SAT workers for the master
            problem (1 is deterministic; the default).
        hint: a starting perturbation in pixel steps (e.g. from PGD); zero by default.
        floor: only look for perturbations with objective >= floor (certification uses 0):
            when none exists the result is ``optimal`` with ``bound < floor``.
        seed: CP-SAT's random seed.
        climbing: the share of ``time_limit`` kept at its end for :func:`climb`, which
            improves the incumbent when the search has not proven its optimum by then (0: the
            search has all the time).
    """
    start = time.perf_counter()
    check_seconds("time_limit", time_limit)
    check_steps("threads", threads)
    if not 0.0 <= climbing <= 1.0:
        raise AttackError(f"climbing must be a share of the time limit in [0, 1], got "
                          f"{climbing!r}; 0 skips the hill climbing.")
    x = check_pixels(pixels, ib)
    deadline = start + float(time_limit)
    first = pattern_layer(ib, x, eps=eps, domain=domain)
    k = grid_steps(eps) if domain == "grid" else eps_steps(eps)
    dtype = np.int64 if domain == "grid" else np.float64
    prediction, target = resolve_target(logits_at(ib, x, 0, domain=domain), target)

    def value_at(p: np.ndarray) -> float:
        logits = logits_at(ib, x, p, domain=domain)
        return float(logits[target] - logits[prediction])

    incumbent = np.zeros(len(x), dtype) if hint is None else \
        np.clip(np.asarray(hint, dtype).ravel(), first.lo, first.hi)
    best = value_at(incumbent)
    trace = [(time.perf_counter() - start, best)]

    model = cp_model.CpModel()
    b1 = [model.NewBoolVar(f"h0_{j}") for j in first.undecided]
    state: list = [int(v) for v in first.fixed]
    for q, j in enumerate(first.undecided):
        state[j] = b1[q]
    last = deeper_layers(ib, state, reifier(model),
                         keep=objective_relevant(ib, target, prediction))
    const, free, coefs, tops = objective_terms(ib, last, target, prediction, relu_max(model))
    scale = float(2 ** SCALE_BITS) / max((abs(c) for c in coefs), default=1.0)
    int_coefs = [int(round(c * scale)) for c in coefs]
    slack = sum(tops) * 0.5 / scale + 1e-9 * (1 + abs(const))  # rounding of the objective
    scaled = cp_model.LinearExpr.WeightedSum(free, int_coefs)
    model.Maximize(scaled)
    # only patterns that beat the incumbent (or reach the floor) are of interest
    need = best if floor is None else floor
    model.Add(scaled >= math.floor((need - const - slack) * scale))
    # hint the master with the incumbent's pattern
    pre = first.weight @ incumbent
    for q, b in enumerate(b1):
        model.AddHint(b, bool(pre[q] >= first.need[q]))

    def raise_floor(pattern: np.ndarray, reached: np.ndarray, master_value: float) -> None:
        nonlocal best, incumbent
        best, incumbent = value_at(reached), reached
        trace.append((time.perf_counter() - start, best))
        if floor is None:
            model.Add(scaled >= math.floor((best - const - slack) * scale))

    def accept(pattern: np.ndarray, reached: np.ndarray, master_value: float) -> bool:
        value = pattern_value(ib, first, pattern, target, prediction)
        if abs(master_value / scale + const - value) > slack:
            raise AttackError(f"master objective {master_value / scale + const:.9g} disagrees "
                              f"with the exact forward pass {value:.9g}: refusing the result.")
        exact = value_at(reached)
        if exact != value:
            raise AttackError(f"perturbation objective {exact:.9g} disagrees with its "
                              f"activation pattern's {value:.9g}: refusing the result.")
        # a reachable pattern no better than the incumbent (objective rounding) is excluded
        return exact > best or (floor is not None and exact >= floor)

    # the last share of the time is kept for climbing from the incumbent, should the search
    # not prove its optimum before (no proof in the runs of the exact-attack issue, 385 in all,
    # came in the last 10 % of the time limit)
    found = search(first, model, b1, deadline=deadline - climbing * float(time_limit),
                   threads=threads, seed=seed, accept=accept, improve=raise_floor)
    bound = math.inf if found.bound is None else found.bound / scale + const + slack
    status = "timeout"
    if found.status == "infeasible":  # no reachable pattern beats the incumbent / floor
        bound, status = (best if floor is None else floor), "optimal"
    elif found.perturbation is not None and found.perturbation is not incumbent:
        best = value_at(found.perturbation)
        incumbent = found.perturbation
        trace.append((time.perf_counter() - start, best))
        if found.status == "optimal":
            bound, status = best, "optimal"
    if status != "optimal" and climbing > 0:
        incumbent, best, moves = climb(ib, first, incumbent, best, target=target,
                                       prediction=prediction, value_at=value_at,
                                       deadline=deadline)
        if moves:
            trace.append((time.perf_counter() - start, best))
    iterations = found.iterations
    return ExactResult(status=status, objective=best, bound=bound, perturbation=incumbent,
                       prediction=prediction, target=target, seconds=time.perf_counter() - start,
                       eps_steps=k, trace=trace, iterations=iterations)
