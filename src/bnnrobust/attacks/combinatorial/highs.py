"""The paper's continuous big-M MILP (Khalil et al. 2019, eqs. (1)-(8)), solved by HiGHS.

Here the perturbation is real: ``p ∈ [−ε, ε]^n`` with ``0 <= x + p <= 1``, exactly the paper's
problem (the pixel-grid CP-SAT backend allows only floor(255·ε) whole pixel steps). HiGHS is
reached through OR-Tools MathOpt (``SolverType.HIGHS``): OR-Tools bundles its own HiGHS, so a
separate ``highspy`` cannot share a process with it, and MathOpt avoids the clash.

Formulation: a first-layer neuron fires iff ``W_j·(x + p) >= τ_j``; with
``a = W_j·(x + p) − τ_j`` and a margin ``δ_j`` (:func:`.problem.float32_margin`: larger than
the float32 rounding of the model's forward pass, plus the solver's feasibility tolerance), a
neuron is a constant where ``a >= δ_j`` (or ``a <= −δ_j``) over the whole box, else a binary
``h`` with big-M constraints ``a >= δ_j h + L(1 − h)`` (fires ⇒ a >= δ_j) and
``a <= U h − δ_j(1 − h)`` (off ⇒ a <= −δ_j). So every solution fires the same neurons in the
float32 PyTorch model as in exact arithmetic; the margin shrinks the feasible set by a sliver
of width 2δ_j next to each threshold (δ ≈ 0.01 on a 784-input layer, against a pre-activation
range of ±7.8 at ε = 0.01). Deeper layers have integer pre-activations and use ``a >= t`` /
``a <= t − 1`` exactly. Every returned perturbation is re-run through the exact forward pass
(and, by the attack, through the PyTorch model); a disagreement is an error.
"""

from __future__ import annotations

import datetime
import math
import time

import numpy as np
from ortools.math_opt.python import mathopt

from bnnrobust.attacks.base import AttackError, check_positive, check_steps
from bnnrobust.attacks.combinatorial.export import IntegerBNN, dense
from bnnrobust.attacks.combinatorial.problem import (
    ExactResult,
    check_pixels,
    check_seconds,
    deeper_layers,
    eps_steps,
    float32_margin,
    interval,
    objective_terms,
    resolve_target,
)

#: the solver's primal feasibility tolerance is far below this; added to every margin
SOLVER_SLACK = 1e-6


def _objective(ib: IntegerBNN, x: np.ndarray, target: int, prediction: int) -> float:
    """``f_target − f_prediction`` at a real input in [0, 1] (exact forward pass)."""
    logits = ib.logits(x[None])[0]
    return float(logits[target] - logits[prediction])


def big_m(model: mathopt.Model, hints: dict, acts: list[np.ndarray]):
    """The MathOpt way to make a free neuron of :func:`.problem.deeper_layers`: a binary ``h``
    with ``a >= low·(1 − h)`` and ``a <= (high + 1)·h − 1`` for the integer pre-activation
    ``a = const − threshold + Σ coefs·b`` (fires iff ``a >= 0``), hinted with ``acts``."""

    def make(li: int, j: int, const: int, terms: list, coefs: list, threshold: int,
             low: int, high: int):
        h = model.add_binary_variable(name=f"h{li}_{j}")
        a = const - threshold + mathopt.fast_sum(c * b for c, b in zip(coefs, terms, strict=True))
        model.add_linear_constraint(a >= (low - threshold) * (1 - h))
        model.add_linear_constraint(a <= (high - threshold + 1) * h - 1)
        hints[h] = float(acts[li][0, j] > 0)
        return h

    return make


def relu_big_m(model: mathopt.Model):
    """The MathOpt way to make a ReLU unit of :func:`.problem.objective_terms`: ``r >= a``,
    ``r >= 0`` and, where the maximized objective rewards a large ``r`` (``weight > 0``), a
    binary ``z`` with ``r <= a − low·(1 − z)`` and ``r <= high·z``, so ``r = max(a, 0)`` at
    every optimum (a negative weight already pushes ``r`` down onto ``max(a, 0)``)."""

    def make(j: int, const: int, terms: list, coefs: list, low: int, high: int, weight: float):
        r = model.add_variable(lb=0.0, ub=float(high), name=f"r_{j}")
        a = const + mathopt.fast_sum(c * b for c, b in zip(coefs, terms, strict=True))
        model.add_linear_constraint(r >= a)
        if weight > 0:
            z = model.add_binary_variable(name=f"z_{j}")
            model.add_linear_constraint(r <= a - low * (1 - z))
            model.add_linear_constraint(r <= high * z)
        return r

    return make


def highs_attack(ib: IntegerBNN, pixels: np.ndarray, *, eps: float, target: int | str = "second",
                 time_limit: float = 180.0, threads: int = 1, hint: np.ndarray | None = None,
                 floor: float | None = None, seed: int = 0,
                 gap: float | None = None) -> ExactResult:
    """Maximize f_target − f_prediction over the continuous ε-box (see module doc).

    Args:
        ib: the exported BNN. pixels: one 8-bit input (0..255); the attack works on
            ``pixels / 255`` in [0, 1].
        eps: L∞ budget on [0, 1]. target: a class or ``"second"``.
        time_limit: seconds. threads: must be 1 (HiGHS's MIP search is sequential here).
        hint: a starting perturbation on [0, 1] scale (e.g. from PGD); zero by default.
        floor: only look for perturbations with objective >= floor (certification).
        gap: the optimality gap at which HiGHS stops and reports "optimal", relative and
            absolute alike (0: proven to optimality, the reference of the tests). Default
            None: HiGHS's own (``mip_rel_gap`` 1e-4, ``mip_abs_gap`` 1e-6; Gurobi's default
            ``MIPGap`` is also 1e-4), as the benchmarks run it.
    The result's ``perturbation`` is real (on the [0, 1] scale); ``eps_steps`` is floor(255·ε)
    for comparison with the grid backend.
    """
    start = time.perf_counter()
    check_seconds("time_limit", time_limit)
    if check_steps("threads", threads) != 1:
        raise AttackError("the highs backend runs one thread per point; use --workers for "
                          "parallelism.")
    if gap is not None:
        gap = check_positive("gap", gap, allow_zero=True)
    k = eps_steps(eps)
    x = check_pixels(pixels, ib) / 255.0
    prediction, target = resolve_target(ib.logits(x[None])[0], target)
    lo, hi = np.maximum(-eps, -x), np.minimum(eps, 1.0 - x)
    incumbent = np.zeros_like(x) if hint is None else np.clip(np.asarray(hint, float).ravel(), lo, hi)
    best = _objective(ib, x + incumbent, target, prediction)
    acts = ib.hidden((x + incumbent)[None])

    model = mathopt.Model(name="bnn-attack")
    p = [model.add_variable(lb=float(a), ub=float(b)) for a, b in zip(lo, hi, strict=True)]
    hint_values = {v: float(val) for v, val in zip(p, incumbent, strict=True)}
    layer = ib.layers[0]
    w = dense(layer.weight).astype(np.float64)
    base = w @ x - layer.threshold
    low, high = interval(w, base, lo, hi)
    margin = float32_margin(w, x + hi, layer.margin_scale) + SOLVER_SLACK
    state: list = []  # per neuron: +1 / -1 or a binary variable (1 fires)
    for j in range(len(w)):
        if low[j] >= margin[j]:
            state.append(1)
        elif high[j] <= -margin[j]:
            state.append(-1)
        else:
            h = model.add_binary_variable(name=f"h0_{j}")
            nz = np.flatnonzero(w[j])
            a = float(base[j]) + mathopt.fast_sum(float(w[j, i]) * p[i] for i in nz)
            model.add_linear_constraint(a >= float(low[j]) * (1 - h) + float(margin[j]) * h)
            model.add_linear_constraint(a <= float(high[j]) * h - float(margin[j]) * (1 - h))
            hint_values[h] = float(acts[0][0, j] > 0)
            state.append(h)
    last = deeper_layers(ib, state, big_m(model, hint_values, acts))
    const, terms, coefs, _ = objective_terms(ib, last, target, prediction, relu_big_m(model))
    objective = const + mathopt.fast_sum(float(c) * b for c, b in zip(coefs, terms, strict=True))
    model.maximize(objective)
    if floor is not None:
        model.add_linear_constraint(objective >= float(floor))

    left = start + float(time_limit) - time.perf_counter()
    if left <= 0:
        return ExactResult("timeout", best, math.inf, incumbent, prediction, target,
                           time.perf_counter() - start, k, [(time.perf_counter() - start, best)])
    params = mathopt.SolveParameters(time_limit=datetime.timedelta(seconds=left),
                                     random_seed=int(seed))
    if gap is not None:
        params.relative_gap_tolerance = params.absolute_gap_tolerance = gap
    hints = mathopt.ModelSolveParameters(
        solution_hints=[mathopt.SolutionHint(variable_values=hint_values)])
    try:
        result = mathopt.solve(model, mathopt.SolverType.HIGHS, params=params, model_params=hints)
    except Exception as exc:  # MathOpt wraps solver failures in several exception types
        raise AttackError(f"HiGHS failed on the attack model: {exc}") from None
    reason = result.termination.reason
    elapsed = time.perf_counter() - start
    if reason == mathopt.TerminationReason.INFEASIBLE:
        if floor is None:
            raise AttackError("the attack model is infeasible, which cannot happen (zero "
                              "perturbation is feasible): the export is inconsistent.")
        return ExactResult("optimal", best, float(floor), incumbent, prediction, target, elapsed,
                           k, [(elapsed, best)])
    trace = [(0.0, best)]
    if result.has_primal_feasible_solution():
        found = np.array(result.variable_values(p), dtype=np.float64)
        found = np.clip(found, lo, hi)
        exact = _objective(ib, x + found, target, prediction)
        solver_obj = result.objective_value()
        if abs(exact - solver_obj) > 1e-6 * (1 + abs(exact)):
            raise AttackError(f"solver objective {solver_obj:.9g} disagrees with the exact "
                              f"forward pass {exact:.9g}: refusing the result.")
        if exact > best or (floor is not None and exact >= floor):
            best, incumbent = exact, found
            trace.append((elapsed, best))
    optimal = reason == mathopt.TerminationReason.OPTIMAL
    bound = best if optimal else float(result.termination.objective_bounds.dual_bound)
    return ExactResult("optimal" if optimal else "timeout", best, bound, incumbent, prediction,
                       target, elapsed, k, trace)
