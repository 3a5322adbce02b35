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


class _Rows:
    """Sparse rows ``Σ coef·column >= rhs`` of a linear program, kept as coordinates."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.rhs: list[float] = []

    def add(self, columns, values, rhs: float) -> None:
        """Append the row ``Σ values·columns >= rhs``."""
        columns, values = list(columns), [float(v) for v in values]
        self.r.extend([len(self.rhs)] * len(columns))
        self.c.extend(columns)
        self.v.extend(values)
        self.rhs.append(float(rhs))

    def add_linear(self, terms: list, coefs: list, *, scale: float, column: int, value: float,
                   rhs: float) -> None:
        """Append ``scale·Σ coefs·terms + value·column >= rhs`` (``terms``: :class:`_Var`)."""
        self.add([t.index for t in terms] + [column], [scale * c for c in coefs] + [value], rhs)

    def matrix(self, width: int) -> tuple[sparse.csr_matrix, np.ndarray]:
        """The rows as a CSR matrix of ``width`` columns and their right-hand sides."""
        shape = (len(self.rhs), width)
        return sparse.csr_matrix((self.v, (self.r, self.c)), shape=shape), np.array(self.rhs)


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
    rows = _Rows()
    a_on, b_on = first.rows(np.ones(u, dtype=np.int64), range(u))
    a_off, b_off = first.rows(np.zeros(u, dtype=np.int64), range(u))
    low_on = np.minimum(a_on * first.lo, a_on * first.hi).sum(1)
    low_off = np.minimum(a_off * first.lo, a_off * first.hi).sum(1)
    for q in range(u):
        on, off = np.flatnonzero(a_on[q]), np.flatnonzero(a_off[q])
        rows.add([*on, n + q], [*a_on[q, on], -(b_on[q] - low_on[q])], low_on[q])
        rows.add([*off, n + q], [*a_off[q, off], b_off[q] - low_off[q]], b_off[q])
    columns = [n + u]
    tops: dict[int, float] = {}

    def make(li: int, j: int, const: int, terms: list, coefs: list, threshold: int,
             low: int, high: int) -> _Var:
        h = _Var(columns[0])
        columns[0] += 1
        k = const - threshold
        rows.add_linear(terms, coefs, scale=1.0, column=h.index, value=low - threshold,
                        rhs=low - threshold - k)
        rows.add_linear(terms, coefs, scale=-1.0, column=h.index, value=high - threshold + 1,
                        rhs=k + 1)
        return h

    def make_relu(j: int, const: int, terms: list, coefs: list, low: int, high: int,
                  weight: float) -> _Var:
        r = _Var(columns[0])
        columns[0] += 1
        # r >= a, and r below the chord from (low, 0) to (high, high)
        rows.add_linear(terms, coefs, scale=-1.0, column=r.index, value=1.0, rhs=const)
        rows.add_linear(terms, coefs, scale=float(high), column=r.index, value=low - high,
                        rhs=high * (low - const))
        tops[r.index] = float(high)
        return r

    last = deeper_layers(ib, _first_state(first, lambda q: _Var(n + q)), make,
                         keep=objective_relevant(ib, target, prediction))
    const, terms, coefs, _ = objective_terms(ib, last, target, prediction, make_relu)
    width = columns[0]
    matrix, rhs = rows.matrix(width)
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
