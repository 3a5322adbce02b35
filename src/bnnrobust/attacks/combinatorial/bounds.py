"""Cheap upper bounds on objective (1), so that certification calls the exact search only on
what they cannot settle.

Both bounds are sound: never below the largest ``f_target − f_prediction`` over the
perturbation box (the pixel grid, or the continuous box with the float32 margins of
:class:`.cpsat.BoxLayer`), so a bound below 0 proves that ``target`` cannot reach the
prediction.

- :func:`interval_bound`: the first-layer neurons decided over the box are constants, the
  others free; a deeper neuron whose integer pre-activation range lies on one side of its
  threshold is a constant, and the objective's free last-layer terms take their best value.
  Microseconds; no assumption beyond the float32 margins of the decided neurons.
- :func:`lp_bound`: the linear relaxation of the paper's big-M model (Khalil et al. 2019,
  eqs. (1)-(8) with integrality dropped): the perturbation real, every free neuron's
  activation in [0, 1], its big-M constants from the interval ranges. Milliseconds (HiGHS's
  dual simplex through SciPy).

Example::

    first = BoxLayer(ib, x / 255, 0.01)
    if interval_bound(ib, first, target, prediction) < 0: ...   # target cannot win
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from bnnrobust.attacks.combinatorial.cpsat import PatternLayer
from bnnrobust.attacks.combinatorial.export import IntegerBNN
from bnnrobust.attacks.combinatorial.problem import (
    deeper_layers,
    objective_relevant,
    objective_terms,
)

#: bound methods, cheapest first (a certificate names the one that settled each class)
METHODS = ("interval", "lp", "exact")


class _Free:
    """A free neuron (its value unknown): what :func:`interval_bound` propagates."""


def _first_state(first: PatternLayer, free) -> list:
    state: list = [int(v) for v in first.fixed]
    for q, j in enumerate(first.undecided):
        state[j] = free(q)
    return state


def interval_bound(ib: IntegerBNN, first: PatternLayer, target: int, prediction: int) -> float:
    """An upper bound on ``f_target − f_prediction`` over ``first``'s box by interval
    arithmetic through the binary layers (see the module doc)."""
    free = _Free()
    last = deeper_layers(ib, _first_state(first, lambda q: free), lambda *_: free,
                         keep=objective_relevant(ib, target, prediction))
    const, _, coefs, tops = objective_terms(ib, last, target, prediction, lambda *_: free)
    return float(const + sum(max(0.0, c * top) for c, top in zip(coefs, tops, strict=True)))


class _Var:
    """A column of the relaxation."""

    def __init__(self, index: int) -> None:
        self.index = index


def lp_bound(ib: IntegerBNN, first: PatternLayer, target: int, prediction: int, *,
             time_limit: float = 10.0) -> float | None:
    """An upper bound on ``f_target − f_prediction`` over ``first``'s box from the linear
    relaxation of the big-M model, or None when the LP gives no optimum in ``time_limit``
    seconds (or has no solution: every pattern would need a pre-activation within the float32
    margin of its threshold; the exact search then decides).

    Columns: the perturbation ``p`` (its box), then one activation ``h`` in [0, 1] per free
    neuron. An undecided first-layer neuron with rows ``a_on·p >= b_on`` (fires) and
    ``a_off·p >= b_off`` (does not) and ``ℓ = min over the box`` gets
    ``a_on·p − (b_on − ℓ_on)·h >= ℓ_on`` and ``a_off·p + (b_off − ℓ_off)·h >= b_off``; a free
    deeper neuron with integer pre-activation ``a = K + Σ c·b`` in ``[low, high]`` and
    threshold ``t`` gets ``a − t >= (low − t)(1 − h)`` and ``a − t <= (high − t + 1)·h − 1``.
    The LP optimum is returned with 1e-6 relative slack for the solver's tolerances.
    """
    n, u = len(first.lo), len(first.undecided)
    rows: list[tuple[dict[int, float], float]] = []  # Σ coef·column >= rhs

    a_on, b_on = first.rows(np.ones(u, dtype=np.int64), range(u))
    a_off, b_off = first.rows(np.zeros(u, dtype=np.int64), range(u))
    low_on = np.minimum(a_on * first.lo, a_on * first.hi).sum(1)
    low_off = np.minimum(a_off * first.lo, a_off * first.hi).sum(1)
    dense_p = []  # the first layer's rows over p, kept dense
    for q in range(u):
        dense_p.append(a_on[q])
        rows.append(({n + q: -float(b_on[q] - low_on[q])}, float(low_on[q])))
        dense_p.append(a_off[q])
        rows.append(({n + q: float(b_off[q] - low_off[q])}, float(b_off[q])))
    columns = [n + u]

    def make(li: int, j: int, const: int, terms: list, coefs: list, threshold: int,
             low: int, high: int) -> _Var:
        h = _Var(columns[0])
        columns[0] += 1
        k = const - threshold
        lin = {t.index: float(c) for t, c in zip(terms, coefs, strict=True)}
        rows.append(({**lin, h.index: float(low - threshold)}, float(low - threshold - k)))
        rows.append(({**{i: -c for i, c in lin.items()}, h.index: float(high - threshold + 1)},
                     float(k + 1)))
        dense_p.append(None)
        dense_p.append(None)
        return h

    def make_relu(j: int, const: int, terms: list, coefs: list, low: int, high: int,
                  weight: float) -> _Var:
        r = _Var(columns[0])
        columns[0] += 1
        lin = {t.index: float(c) for t, c in zip(terms, coefs, strict=True)}
        # r >= a, and r below the chord from (low, 0) to (high, high)
        rows.append(({**{i: -c for i, c in lin.items()}, r.index: 1.0}, float(const)))
        rows.append(({**{i: high * c for i, c in lin.items()}, r.index: float(low - high)},
                     float(high * (low - const))))
        dense_p.extend([None, None])
        tops[r.index] = float(high)
        return r

    tops: dict[int, float] = {}
    last = deeper_layers(ib, _first_state(first, lambda q: _Var(n + q)), make,
                         keep=objective_relevant(ib, target, prediction))
    const, terms, coefs, _ = objective_terms(ib, last, target, prediction, make_relu)
    width = columns[0]
    r, c, v = [], [], []
    for i, (coefs_i, _) in enumerate(rows):
        if dense_p[i] is not None:
            nz = np.flatnonzero(dense_p[i])
            r.extend([i] * len(nz))
            c.extend(nz.tolist())
            v.extend(dense_p[i][nz].tolist())
        for col, value in coefs_i.items():
            r.append(i)
            c.append(col)
            v.append(value)
    matrix = sparse.csr_matrix((v, (r, c)), shape=(len(rows), width))
    rhs = np.array([b for _, b in rows])
    cost = np.zeros(width)
    for t, coef in zip(terms, coefs, strict=True):
        cost[t.index] -= coef
    bounds = [*zip(first.lo, first.hi, strict=True)] + [(0.0, tops.get(i, 1.0))
                                                         for i in range(n, width)]
    result = linprog(cost, A_ub=-matrix, b_ub=-rhs, bounds=bounds, method="highs-ds",
                     options={"time_limit": max(float(time_limit), 0.01)})
    if result.status != 0:
        return None
    value = float(const - result.fun)
    top = [tops.get(t.index, 1.0) for t in terms]
    return value + 1e-6 * (1.0 + abs(value) + float(np.abs(np.multiply(coefs, top)).sum()))


def settle(ib: IntegerBNN, first: PatternLayer, target: int, prediction: int, *,
           time_limit: float = 10.0) -> str | None:
    """The cheapest method of :data:`METHODS` whose bound proves that ``target`` stays below
    ``prediction`` over ``first``'s box (``"interval"`` or ``"lp"``), or None."""
    if interval_bound(ib, first, target, prediction) < 0:
        return "interval"
    bound = lp_bound(ib, first, target, prediction, time_limit=time_limit)
    return "lp" if bound is not None and bound < 0 else None
