"""IProp, integer target propagation (Khalil et al. 2019, section 4), on the pixel grid.

Each iteration picks a target for the last hidden layer: the neurons already at their ideal
value under the incumbent (ideal = the sign of ``w_target − w_prediction``) plus ``S`` sampled
non-ideal ones. The target is propagated backwards by layer-to-layer CP-SAT problems (9): the
previous layer's ±1 activations that satisfy most targets, ties broken toward the incumbent's
activations (L0 distance, weighted below one target); then problem (10) finds the pixel
perturbation that satisfies most first-layer targets. The candidate is run through the exact
integer forward pass and becomes the incumbent if it improves objective (1).

Step size ``S``: constant, or ``"adaptive"`` (the paper's: start at 5% of the width, halve after
5 iterations without improvement). By default this is the paper's pseudocode: the search runs
to the time limit (or until every last-layer neuron is ideal, the objective's maximum), and
problem (10) is solved by the exact pattern search alone. Three additions of ours are named
options, off by default (the paper profile):

- ``fix_decided``: first-layer neurons whose sign cannot change over the ε-box are held at
  their value in (9) (the MILP's interval bounds), so that the targets stay reachable;
- ``greedy_fallback``: problem (10) gets half its time for the exact search, then a greedy pass
  that keeps the targets the incumbent meets and adds the others while they stay reachable;
- ``early_stop``: stop at a local optimum of our own definition: 5 failures at ``S = 1``
  (adaptive), or 25 consecutive failures (constant).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from bnnrobust.attacks.base import AttackError, check_choice, check_flag, check_steps
from bnnrobust.attacks.combinatorial.attack import ExactAttack, TargetedParams
from bnnrobust.attacks.combinatorial.cpsat import FirstLayer, search
from bnnrobust.attacks.combinatorial.export import IntegerBNN
from bnnrobust.attacks.combinatorial.problem import (
    ExactResult,
    check_pixels,
    check_seconds,
    eps_steps,
    float32_margin,
    grid_steps,
    interval,
    objective_of,
    resolve_target,
)

PATIENCE = 5
STALL_LIMIT = 25


def _solve(model: cp_model.CpModel, time_limit: float, seed: int) -> cp_model.CpSolver | None:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit, 0.01)
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    code = solver.Solve(model)
    return solver if code in (cp_model.OPTIMAL, cp_model.FEASIBLE) else None


def propagate_layer(weight: np.ndarray, threshold: np.ndarray, targets: dict[int, int],
                    incumbent: np.ndarray, fixed: dict[int, int], *, time_limit: float,
                    seed: int = 0) -> np.ndarray | None:
    """Problem (9): ±1 activations ``h`` of a layer maximizing the number of next-layer
    neurons j in ``targets`` with ``sign(W_j·h − threshold_j) == targets[j]``, minus a
    tie-break ``L0(h, incumbent) / (n + 1)``; entries in ``fixed`` cannot change."""
    model = cp_model.CpModel()
    n = weight.shape[1]
    b = [model.NewBoolVar(f"h{i}") for i in range(n)]
    for i, v in fixed.items():
        model.Add(b[i] == int(v > 0))
    satisfied = []
    for j, want in targets.items():
        s = model.NewBoolVar(f"s{j}")
        row = [int(v) for v in weight[j]]
        expr = cp_model.LinearExpr.WeightedSum(b, [2 * v for v in row]) - sum(row)
        if want > 0:
            model.Add(expr >= int(threshold[j])).OnlyEnforceIf(s)
        else:
            model.Add(expr <= int(threshold[j]) - 1).OnlyEnforceIf(s)
        satisfied.append(s)
    changed = [b[i] if incumbent[i] < 0 else b[i].Not() for i in range(n)]
    model.Maximize((n + 1) * sum(satisfied) - sum(changed))
    for i in range(n):
        model.AddHint(b[i], bool(incumbent[i] > 0))
    solver = _solve(model, time_limit, seed)
    if solver is None:
        return None
    return np.array([1 if solver.Value(v) else -1 for v in b], dtype=np.int64)


def perturb_for(first: FirstLayer, targets: np.ndarray, incumbent: np.ndarray, *,
                time_limit: float, seed: int = 0, greedy: bool = False) -> np.ndarray | None:
    """Problem (10): the pixel perturbation (whole steps in the box) that gives the most
    first-layer neurons their target value, or None when none is found in time.

    Solved exactly, like the MILP, over the undecided neurons' patterns (:func:`.cpsat.search`:
    maximize the number of matches, reachability checked and refined by cores); that search
    has no answer until it has a proof, which with many undecided neurons it may not reach.
    With ``greedy`` it gets half of ``time_limit`` and the rest goes to a greedy pass that
    keeps the targets ``incumbent`` meets and adds the others while they stay reachable
    (anytime: it returns the last reachable perturbation).
    """
    deadline = time.perf_counter() + time_limit
    model = cp_model.CpModel()
    b1 = [model.NewBoolVar(f"h{j}") for j in first.undecided]
    want = targets[first.undecided] > 0
    model.Maximize(sum(b if w else b.Not() for b, w in zip(b1, want, strict=True)))
    pre = first.weight @ incumbent
    for q, b in enumerate(b1):
        model.AddHint(b, bool(pre[q] >= first.need[q]))
    exact_until = deadline - time_limit / 2 if greedy else deadline
    found = search(first, model, b1, deadline=exact_until, seed=seed)
    if found.perturbation is not None or not greedy:
        return found.perturbation
    return _perturb_greedy(first, want, incumbent, deadline)


def _perturb_greedy(first: FirstLayer, want: np.ndarray, incumbent: np.ndarray,
                    deadline: float) -> np.ndarray:
    """Problem (10) greedily: keep the targets ``incumbent`` already meets, add the others one at
    a time (least violated first) while a perturbation still reaches them all; a check that
    cannot be settled in its share of the time skips that target."""
    pattern = want.astype(np.int64)
    pre = first.weight @ incumbent
    violation = np.where(want, first.need - pre, pre - first.need + 1)
    met = [int(q) for q in np.flatnonzero(violation <= 0)]
    best = incumbent
    order = np.argsort(violation, kind="stable")[len(met):]
    for n, q in enumerate(order):
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        reached = first.reach(pattern, met + [int(q)], left / (len(order) - n))
        if not isinstance(reached, str):
            met.append(int(q))
            best = reached
    return best


class GridSpace:
    """IProp's search space on the 1/255 pixel grid: whole pixel steps (:class:`.cpsat.FirstLayer`)."""

    def __init__(self, ib: IntegerBNN, pixels: np.ndarray, eps: float) -> None:
        self.ib, self.x = ib, pixels
        self.first = FirstLayer(ib, pixels, grid_steps(eps))

    def zero(self) -> np.ndarray:  # noqa: D102
        return np.zeros_like(self.x)

    def clip(self, perturbation: np.ndarray) -> np.ndarray:  # noqa: D102
        return np.clip(np.asarray(perturbation, np.int64), self.first.lo, self.first.hi)

    def decided(self) -> dict[int, int]:  # noqa: D102
        return self.first.decided()

    def activations(self, perturbation: np.ndarray) -> list[np.ndarray]:  # noqa: D102
        return [a[0].astype(np.int64) for a in self.ib.hidden_pixels((self.x + perturbation)[None])]

    def objective(self, perturbation: np.ndarray, target: int, prediction: int) -> float:  # noqa: D102
        return objective_of(self.ib, self.x + perturbation, target, prediction)

    def problem10(self, wanted: np.ndarray, incumbent: np.ndarray, *, time_limit: float,
                  seed: int, greedy: bool) -> np.ndarray | None:
        """Problem (10) on the grid: :func:`perturb_for`."""
        return perturb_for(self.first, wanted, incumbent, time_limit=time_limit, seed=seed,
                           greedy=greedy)


class BoxSpace:
    """IProp's search space on the paper's continuous problem: ``|p| <= ε``, ``0 <= x + p <= 1``
    on the [0, 1] scale; problem (10) is a small MILP (HiGHS through OR-Tools MathOpt) with the
    float32 margins of the continuous MILP (:func:`.problem.float32_margin`)."""

    def __init__(self, ib: IntegerBNN, pixels: np.ndarray, eps: float) -> None:
        self.ib, self.x = ib, pixels / 255.0
        self.lo, self.hi = np.maximum(-eps, -self.x), np.minimum(eps, 1.0 - self.x)
        layer = ib.layers[0]
        self.weight = layer.weight.astype(np.float64)
        self.base = self.weight @ self.x - layer.threshold
        self.low, self.high = interval(self.weight, self.base, self.lo, self.hi)
        self.margin = float32_margin(self.weight, self.x + self.hi, layer.margin_scale) + 1e-6
        on, off = self.low >= self.margin, self.high <= -self.margin
        self.fixed = np.where(on, 1, -1)
        self.undecided = np.flatnonzero(~(on | off))

    def zero(self) -> np.ndarray:  # noqa: D102
        return np.zeros_like(self.x)

    def clip(self, perturbation: np.ndarray) -> np.ndarray:  # noqa: D102
        return np.clip(np.asarray(perturbation, np.float64), self.lo, self.hi)

    def decided(self) -> dict[int, int]:  # noqa: D102
        rest = np.setdiff1d(np.arange(len(self.fixed)), self.undecided)
        return {int(j): int(self.fixed[j]) for j in rest}

    def activations(self, perturbation: np.ndarray) -> list[np.ndarray]:  # noqa: D102
        return [a[0].astype(np.int64) for a in self.ib.hidden((self.x + perturbation)[None])]

    def objective(self, perturbation: np.ndarray, target: int, prediction: int) -> float:  # noqa: D102
        logits = self.ib.logits((self.x + perturbation)[None])[0]
        return float(logits[target] - logits[prediction])

    def problem10(self, wanted: np.ndarray, incumbent: np.ndarray, *, time_limit: float,
                  seed: int, greedy: bool) -> np.ndarray | None:
        """Problem (10): maximize the undecided first-layer neurons that take their target,
        over the real box (a binary per neuron: satisfied or not)."""
        import datetime

        from ortools.math_opt.python import mathopt

        model = mathopt.Model(name="iprop-10")
        p = [model.add_variable(lb=float(a), ub=float(b)) for a, b in zip(self.lo, self.hi,
                                                                           strict=True)]
        hints = {v: float(val) for v, val in zip(p, incumbent, strict=True)}
        satisfied = []
        pre = self.base + self.weight @ incumbent
        for j in self.undecided:
            s_j = model.add_binary_variable(name=f"s{j}")
            nz = np.flatnonzero(self.weight[j])
            a = float(self.base[j]) + mathopt.fast_sum(float(self.weight[j, i]) * p[i] for i in nz)
            m = float(self.margin[j])
            if wanted[j] > 0:  # satisfied => a >= margin (else a >= low always holds)
                model.add_linear_constraint(a >= m * s_j + float(self.low[j]) * (1 - s_j))
                hints[s_j] = float(pre[j] >= m)
            else:  # satisfied => a <= -margin
                model.add_linear_constraint(a <= -m * s_j + float(self.high[j]) * (1 - s_j))
                hints[s_j] = float(pre[j] <= -m)
            satisfied.append(s_j)
        model.maximize(mathopt.fast_sum(satisfied))
        params = mathopt.SolveParameters(time_limit=datetime.timedelta(seconds=time_limit),
                                         random_seed=int(seed))
        hint = mathopt.ModelSolveParameters(
            solution_hints=[mathopt.SolutionHint(variable_values=hints)])
        try:
            result = mathopt.solve(model, mathopt.SolverType.HIGHS, params=params,
                                   model_params=hint)
        except Exception as exc:  # MathOpt wraps solver failures in several exception types
            raise AttackError(f"HiGHS failed on IProp's problem (10): {exc}") from None
        if not result.has_primal_feasible_solution():
            return None
        return self.clip(np.array(result.variable_values(p), dtype=np.float64))


@dataclass(frozen=True, kw_only=True)
class IPropParams(TargetedParams):
    """IProp's parameters.

    Args:
        step: ``"adaptive"`` (default: 5% of the width, halved after 5 failures) or a
            constant number of neurons S >= 1.
        sub_time_limit: seconds per CP-SAT subproblem (paper: 10).
        warm_start: ``"none"`` (zero perturbation, the paper's line 1) or ``"fgsm"`` (start
            from iterated FGSM run for ``warm_start_time`` seconds; the paper's Figure 6: 5 s).
        fix_decided, greedy_fallback, early_stop: our additions (see the module doc), off by
            default: the paper's pseudocode (``greedy_fallback`` on the grid only).
        domain: ``"grid"`` (whole pixel steps, default) or ``"continuous"`` (the paper's
            problem, ``|p| <= ε``: :class:`BoxSpace`).
        eps, time_limit (paper: 180), target (``"second"`` or a class), seed (sampling of G
            and CP-SAT's seed): see the base classes.
    """

    step: int | str = "adaptive"
    sub_time_limit: float = 10.0
    warm_start: str = "none"
    warm_start_time: float = 5.0
    fix_decided: bool = False
    greedy_fallback: bool = False
    early_stop: bool = False
    domain: str = "grid"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target == "untargeted":
            raise AttackError("IProp is targeted: give target='second' or a class index.")
        if self.step != "adaptive":
            check_steps("step", self.step)
        self._set("sub_time_limit", check_seconds("sub_time_limit", self.sub_time_limit))
        self._set("warm_start_time", check_seconds("warm_start_time", self.warm_start_time))
        check_choice("warm_start", self.warm_start, ("none", "fgsm"))
        for name in ("fix_decided", "greedy_fallback", "early_stop"):
            check_flag(name, getattr(self, name))
        check_choice("domain", self.domain, ("grid", "continuous"))
        if self.greedy_fallback and self.domain == "continuous":
            raise AttackError("greedy_fallback is a grid-domain addition; leave it off with "
                              "domain='continuous'.")


class IProp(ExactAttack):
    """IProp, point by point, on the pixel grid (see the module doc).

    Shape:
        x: ``(N, features)`` on the 1/255 grid; y: ``(N,)``. ``status``: ``feasible`` (a
        heuristic: no proof); ``objective``: per point.

    Example::

        result = IProp(model, eps=0.01, time_limit=180, sub_time_limit=10).run(x, y)
    """

    name = "iprop"
    Params = IPropParams

    def gradient_use(self) -> str | None:  # noqa: D102
        return "warm_start='fgsm'" if self.params.warm_start == "fgsm" else None

    def attack_point(self, pixels: np.ndarray, *, target: int | str,
                     start: np.ndarray | None = None) -> ExactResult:
        """Run IProp on one 8-bit input (integers 0..255); ``start``: a starting perturbation
        in pixel steps (replaces ``warm_start``)."""
        p = self.params
        begin = time.perf_counter()
        deadline = begin + p.time_limit
        ib, x = self.integer, check_pixels(pixels, self.integer)
        if ib.relu_weight is not None:
            raise AttackError("IProp (Khalil et al.) is defined for fully connected BNNs; this "
                              "network has a convolutional ReLU output layer: use the milp "
                              "attack (backend cpsat-lp or highs).")
        k = eps_steps(p.eps)
        prediction, target = resolve_target(ib.logits_pixels(x[None])[0], target)
        space = (BoxSpace if self.continuous else GridSpace)(ib, x, p.eps)
        decided = space.decided() if p.fix_decided else {}  # held fixed in problem (9)
        rng = np.random.default_rng(p.seed)
        incumbent = space.zero()
        if start is not None:
            incumbent = space.clip(start)
        elif p.warm_start == "fgsm":
            from bnnrobust.attacks.combinatorial.baseline import iterated_fgsm
            incumbent = iterated_fgsm(self.torch_model, ib, x, eps=p.eps, target=target,
                                      time_limit=min(p.warm_start_time, p.time_limit),
                                      seed=p.seed, domain=p.domain).perturbation
        best = space.objective(incumbent, target, prediction)
        trace = [(time.perf_counter() - begin, best)]
        d = ib.out_weight[target] - ib.out_weight[prediction]
        ideal = np.where(d > 0, 1, -1)
        relevant = np.flatnonzero(d != 0)
        width = len(d)
        step = max(1, round(0.05 * width)) if p.step == "adaptive" else int(p.step)
        acts = space.activations(incumbent)
        failures, stall, iterations = 0, 0, 0
        while time.perf_counter() < deadline:
            wrong = relevant[acts[-1][relevant] != ideal[relevant]]
            if len(wrong) == 0:
                break  # every last-layer neuron is ideal: a global optimum
            iterations += 1
            chosen = rng.choice(wrong, size=min(step, len(wrong)), replace=False)
            keep = relevant[acts[-1][relevant] == ideal[relevant]]
            targets = {int(j): int(ideal[j]) for j in np.concatenate([keep, chosen])}
            candidate = self._propagate(space, decided, targets, acts, incumbent, deadline)
            improved = False
            if candidate is not None:
                value = space.objective(candidate, target, prediction)
                if value > best:
                    best, incumbent, improved = value, candidate, True
                    acts = space.activations(incumbent)
                    trace.append((time.perf_counter() - begin, best))
            if improved:
                failures = stall = 0
                continue
            failures += 1
            stall += 1
            if p.step == "adaptive" and failures >= PATIENCE:
                if step == 1 and p.early_stop:
                    break  # our local optimum
                step, failures = max(1, step // 2), 0
            elif p.step != "adaptive" and stall >= STALL_LIMIT and p.early_stop:
                break
        return ExactResult("feasible", best, math.inf, incumbent, prediction, target,
                           time.perf_counter() - begin, k, trace, iterations=iterations)

    @property
    def continuous(self) -> bool:  # noqa: D102
        return self.params.domain == "continuous"

    def _propagate(self, space: GridSpace | BoxSpace, decided: dict[int, int],
                   targets: dict[int, int],
                   acts: list[np.ndarray], incumbent: np.ndarray,
                   deadline: float) -> np.ndarray | None:
        """One backward pass of target propagation, then problem (10)."""
        ib, sub, seed = self.integer, self.params.sub_time_limit, self.params.seed
        for li in range(len(ib.layers) - 1, 0, -1):
            left = min(sub, deadline - time.perf_counter())
            if left <= 0:
                return None
            layer = ib.layers[li]
            h = propagate_layer(layer.weight.astype(np.int64), layer.int_threshold, targets,
                                acts[li - 1], decided if li == 1 else {},
                                time_limit=left, seed=seed)
            if h is None:
                return None
            targets = {int(j): int(v) for j, v in enumerate(h)}
        left = min(sub, deadline - time.perf_counter())
        if left <= 0:
            return None
        wanted = acts[0].copy()
        for j, v in targets.items():
            wanted[j] = v
        return space.problem10(wanted, incumbent, time_limit=left, seed=seed,
                               greedy=self.params.greedy_fallback)
