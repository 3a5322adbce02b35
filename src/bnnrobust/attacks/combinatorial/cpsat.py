"""The exact targeted attack of Khalil et al. (2019) on the 1/255 pixel grid, with CP-SAT.

For an 8-bit image the perturbation is a vector of whole pixel steps ``p`` with
``|p_i| <= k = floor(255·ε)`` and ``0 <= x_i + p_i <= 255``; on the integer form of the BNN
(:mod:`.export`) every pre-activation is then an integer, so the problem is exact in integer
arithmetic. Problem: maximize ``f_target − f_prediction`` (the paper's objective (1)); a flip is
an objective > 0. What the scout prototype found to matter is built in: every neuron whose sign
cannot change over the ε-ball (interval bounds, exact for the first layer on the grid) is fixed,
undecided neurons are Boolean variables with reified threshold constraints (no big-M needed in
CP-SAT), only last-layer neurons that affect the objective are kept, and the solver starts from
a hint (zero perturbation, or a gradient attack's result) so it is never weaker than that.

The objective's real output weights are scaled to integers (2^20 / max |coefficient|); the
reported objective is always recomputed by the exact integer forward pass, and a solution whose
recomputed objective disagrees with the solver's by more than the rounding can explain is an
error, never a result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from bnnrobust.attacks.base import AttackError, check_steps
from bnnrobust.attacks.combinatorial.export import IntegerBNN

SCALE_BITS = 20


@dataclass
class ExactResult:
    """Outcome of an exact attack on one point.

    ``status``: ``optimal`` (proved), ``feasible`` (a solution, search stopped early without
    hitting the limit), ``timeout`` (the time limit was hit) or ``infeasible``.
    ``objective``: f_target − f_prediction at the returned perturbation (exact forward pass);
    ``bound``: the solver's proven upper bound; ``trace``: (seconds, incumbent objective).
    """

    status: str
    objective: float
    bound: float
    perturbation: np.ndarray
    prediction: int
    target: int
    seconds: float
    eps_steps: int
    trace: list[tuple[float, float]] = field(default_factory=list)

    @property
    def flipped(self) -> bool:
        """Whether the returned perturbation makes the target beat the prediction."""
        return self.objective > 0


class _Trace(cp_model.CpSolverSolutionCallback):
    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset, self.start = scale, offset, time.perf_counter()
        self.points: list[tuple[float, float]] = []

    def on_solution_callback(self) -> None:  # noqa: D102
        self.points.append((time.perf_counter() - self.start,
                            self.ObjectiveValue() / self.scale + self.offset))


def eps_steps(eps: float) -> int:
    """Whole pixel steps allowed by an L∞ budget ε on [0, 1] images: floor(255·ε)."""
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise AttackError(f"eps must be a finite number > 0, got {eps!r}.")
    return int(math.floor(255 * eps + 1e-9))


def _over_neurons(weights, state) -> tuple[float, list, list]:
    """``Σ w_i h_i`` over neurons that are fixed (±1) or Boolean (h = 2b − 1), skipping dropped
    ones (None): ``(constant, Boolean terms, their coefficients)``."""
    const, terms, coefs = 0, [], []
    for wi, s in zip(weights, state, strict=True):
        if s is None:
            continue
        if isinstance(s, int):
            const += wi * s
        else:
            const -= wi
            terms.append(s)
            coefs.append(2 * wi)
    return const, terms, coefs


def objective_of(ib: IntegerBNN, pixels: np.ndarray, target: int, prediction: int) -> float:
    """``f_target − f_prediction`` by the exact integer forward pass."""
    logits = ib.logits_pixels(pixels[None])[0]
    return float(logits[target] - logits[prediction])


def cpsat_attack(ib: IntegerBNN, pixels: np.ndarray, *, eps: float, target: int | str = "second",
                 time_limit: float = 180.0, threads: int = 1, hint: np.ndarray | None = None,
                 seed: int = 0) -> ExactResult:
    """Maximize f_target − f_prediction over the ε-ball on the pixel grid (see module doc).

    Args:
        ib: the exported BNN. pixels: one 8-bit input (integers 0..255), flattened.
        eps: L∞ budget on [0, 1]; the grid allows floor(255·ε) pixel steps.
        target: a class, or ``"second"`` (the class with the second-highest output).
        time_limit: seconds; threads: CP-SAT workers (1 is deterministic).
        hint: a starting perturbation in pixel steps (e.g. from PGD); zero by default.
    """
    start = time.perf_counter()
    if not time_limit > 0:
        raise AttackError(f"time_limit must be > 0 seconds, got {time_limit!r}.")
    check_steps("threads", threads)
    x = np.asarray(pixels, dtype=np.int64).ravel()
    if x.min() < 0 or x.max() > 255:
        raise AttackError("pixels must be integers in 0..255 (an 8-bit image).")
    k = eps_steps(eps)
    logits = ib.logits_pixels(x[None])[0]
    prediction = int(np.argmax(logits))
    if target == "second":
        target = int(np.argsort(logits)[-2])
    if not isinstance(target, (int, np.integer)) or not 0 <= target < len(logits) \
            or target == prediction:
        raise AttackError(f"target must be a class other than the prediction {prediction}, "
                          f"got {target!r}.")
    lo, hi = np.maximum(-k, -x), np.minimum(k, 255 - x)
    model = cp_model.CpModel()
    p = [model.NewIntVar(int(a), int(b), f"p{i}") for i, (a, b) in enumerate(zip(lo, hi, strict=True))]

    # layer by layer: each neuron is fixed (+1 / -1) or a Boolean b (h = 2b - 1)
    state: list = []  # per neuron: +1, -1, or a BoolVar
    last = len(ib.layers) - 1
    d = ib.out_weight[target] - ib.out_weight[prediction]
    for li, layer in enumerate(ib.layers):
        w, thr = layer.weight.astype(np.int64), layer.int_threshold
        keep = np.ones(len(w), dtype=bool) if li < last else d != 0
        new_state: list = []
        for j in range(len(w)):
            if not keep[j]:
                new_state.append(None)
                continue
            if li == 0:
                base = int(w[j] @ x)
                low = base + int(np.where(w[j] > 0, lo, -hi).sum())
                high = base + int(np.where(w[j] > 0, hi, -lo).sum())
                expr = base + cp_model.LinearExpr.WeightedSum(p, [int(v) for v in w[j]])
            else:
                const, terms, coefs = _over_neurons([int(v) for v in w[j]], state)
                low, high = const + sum(min(0, c) for c in coefs), const + sum(max(0, c) for c in coefs)
                expr = const + cp_model.LinearExpr.WeightedSum(terms, coefs)
            t = int(thr[j])
            if low >= t:
                new_state.append(1)
            elif high < t:
                new_state.append(-1)
            else:
                b = model.NewBoolVar(f"h{li}_{j}")
                model.Add(expr >= t).OnlyEnforceIf(b)
                model.Add(expr <= t - 1).OnlyEnforceIf(b.Not())
                new_state.append(b)
        state = new_state

    const, free, coefs = _over_neurons([float(v) for v in d], state)
    const += float(ib.out_bias[target] - ib.out_bias[prediction])
    scale = float(2 ** SCALE_BITS) / max((abs(c) for c in coefs), default=1.0)
    int_coefs = [int(round(c * scale)) for c in coefs]
    model.Maximize(cp_model.LinearExpr.WeightedSum(free, int_coefs) if free else 0)

    hint_p = np.zeros_like(x) if hint is None else np.clip(np.asarray(hint, np.int64).ravel(), lo, hi)
    for var, value in zip(p, hint_p, strict=True):
        model.AddHint(var, int(value))

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = int(threads)
    solver.parameters.random_seed = int(seed)
    trace = _Trace(scale, const)
    code = solver.Solve(model, trace)
    elapsed = time.perf_counter() - start
    if code == cp_model.INFEASIBLE:
        raise AttackError("the exact attack model is infeasible, which cannot happen for a valid "
                          "BNN (zero perturbation is always feasible): the export is inconsistent.")
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        pert = np.array([solver.Value(v) for v in p], dtype=np.int64)
    else:  # no solution in time: the hint stands
        pert = hint_p
    exact = objective_of(ib, x + pert, target, prediction)
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        solver_obj = solver.ObjectiveValue() / scale + const
        tolerance = len(free) * 0.5 / scale + 1e-6 * (1 + abs(const))
        if abs(solver_obj - exact) > tolerance:
            raise AttackError(f"solver objective {solver_obj:.9g} disagrees with the exact forward "
                              f"pass {exact:.9g}: refusing the result.")
    if code == cp_model.OPTIMAL:
        status = "optimal"
    elif elapsed >= time_limit * 0.98 or code == cp_model.UNKNOWN:
        status = "timeout"
    else:
        status = "feasible"
    bound = solver.BestObjectiveBound() / scale + const if code != cp_model.UNKNOWN else math.inf
    return ExactResult(status=status, objective=exact, bound=bound, perturbation=pert,
                       prediction=prediction, target=int(target), seconds=elapsed, eps_steps=k,
                       trace=trace.points)
