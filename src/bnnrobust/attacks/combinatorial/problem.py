"""The problem every exact attack of Khalil et al. (2019) solves, shared by the backends.

On the integer form of a fully connected BNN (:mod:`.export`), maximize
``f_target − f_prediction`` (objective (1)) over the L∞ ε-ball around one input, inside
[0, 1]; a flip is an objective > 0. Here: the per-point result (:class:`ExactResult`), input
and target checks, interval bounds of a linear layer over a box, the encoding of the binary
layers above the first one (solver-agnostic: each backend says how to make a free neuron) and
the objective's terms. The CP-SAT (:mod:`.cpsat`) and HiGHS (:mod:`.highs`) backends, IProp
and the iterated-FGSM baseline import them; none keeps its own copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnnrobust.attacks.base import AttackError, Status, check_budget, check_positive
from bnnrobust.attacks.combinatorial.export import IntegerBNN


@dataclass
class ExactResult:
    """Outcome of an exact attack on one point.

    ``status``: ``optimal`` (proved), ``timeout`` (the time limit was hit first; the incumbent
    is returned) or, for the heuristics (IProp, iterated FGSM), ``feasible`` (no proof).
    ``objective``: f_target − f_prediction at the returned perturbation (exact forward pass);
    ``bound``: the proven upper bound; ``trace``: (seconds, incumbent objective) pairs.
    ``perturbation``: whole pixel steps on the grid, or real values on the [0, 1] scale.
    """

    status: Status
    objective: float
    bound: float
    perturbation: np.ndarray
    prediction: int
    target: int
    seconds: float
    eps_steps: int
    trace: list[tuple[float, float]] = field(default_factory=list)
    iterations: int = 0

    @property
    def flipped(self) -> bool:
        """Whether the returned perturbation makes the target beat the prediction."""
        return self.objective > 0

    def as_dict(self) -> dict:
        """Plain data for JSON (the perturbation as a list; pixel steps on the grid)."""
        pert = self.perturbation
        return {"status": self.status, "objective": self.objective,
                "bound": None if math.isinf(self.bound) else self.bound,
                "flipped": self.flipped, "prediction": self.prediction, "target": self.target,
                "seconds": self.seconds, "eps_steps": self.eps_steps,
                "iterations": self.iterations, "trace": [list(t) for t in self.trace],
                "linf": float(np.abs(pert).max()) if pert.size else 0.0,
                "l0": int(np.count_nonzero(pert)), "perturbation": pert.tolist()}


def eps_steps(eps: float) -> int:
    """Whole pixel steps allowed by an L∞ budget ε on [0, 1] images: floor(255·ε)."""
    return int(math.floor(255 * check_budget("eps", eps) + 1e-9))


def grid_steps(eps: float) -> int:
    """:func:`eps_steps` for a problem on the 1/255 pixel grid, which needs at least one whole
    step: a smaller ε leaves nothing to search, and every point would be reported robust."""
    k = eps_steps(eps)
    if k == 0:
        raise AttackError(f"ε = {eps:g} allows no whole pixel step on the 1/255 grid "
                          "(floor(255·ε) = 0), so every point would be trivially robust. Use "
                          "ε >= 1/255 (0.00392), or the paper's continuous problem (the highs "
                          "backend, domain='continuous').")
    return k


def check_seconds(name: str, value: float) -> float:
    """A time limit: a finite number of seconds > 0."""
    return check_positive(name, value)


def check_pixels(pixels: np.ndarray, ib: IntegerBNN | None = None) -> np.ndarray:
    """One 8-bit input as a flat int64 vector (of the model's input size), or a clear error."""
    x = np.asarray(pixels)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x != np.round(x)) \
            or x.min() < 0 or x.max() > 255:
        raise AttackError("pixels must be integers in 0..255 (an 8-bit image).")
    x = x.astype(np.int64).ravel()
    if ib is not None and x.size != ib.layers[0].weight.shape[1]:
        raise AttackError(f"pixels has {x.size} values; the model takes "
                          f"{ib.layers[0].weight.shape[1]}.")
    return x


def resolve_target(logits: np.ndarray, target: int | str) -> tuple[int, int]:
    """``(prediction, target)`` for a class index or the rule ``"second"``."""
    prediction = int(np.argmax(logits))
    if isinstance(target, str):
        if target != "second":
            raise AttackError(f"unknown target rule {target!r}; expected a class index or "
                              "'second'.")
        target = int(np.argsort(logits, kind="stable")[-2])
    if not isinstance(target, (int, np.integer)) or not 0 <= target < len(logits) \
            or target == prediction:
        raise AttackError(f"target must be a class other than the prediction {prediction}, "
                          f"got {target!r}.")
    return prediction, int(target)


def other_classes(ib: IntegerBNN, x: np.ndarray, *, domain: str = "grid"
                  ) -> tuple[int, list[int]]:
    """``(prediction, the other classes by decreasing output)`` at the 8-bit input ``x``, by
    the forward pass of ``domain`` (:func:`logits_at`), the one its search uses: the two
    differ for an input with a first-layer pre-activation exactly on a threshold."""
    order = [int(c) for c in np.argsort(-logits_at(ib, x, 0, domain=domain), kind="stable")]
    return order[0], order[1:]


def objective_of(ib: IntegerBNN, pixels: np.ndarray, target: int, prediction: int) -> float:
    """``f_target − f_prediction`` by the exact integer forward pass (8-bit input)."""
    logits = ib.logits_pixels(pixels[None])[0]
    return float(logits[target] - logits[prediction])


def logits_at(ib: IntegerBNN, pixels: np.ndarray, p: np.ndarray | int, *, domain: str
              ) -> np.ndarray:
    """The exact forward pass at the 8-bit input ``pixels`` moved by ``p``: whole pixel steps
    on the grid (``domain="grid"``), the [0, 1] scale on the continuous box (any other)."""
    if domain == "grid":
        return ib.logits_pixels((pixels + p)[None])[0]
    return ib.logits((pixels / 255.0 + p)[None])[0]


def interval(weight: np.ndarray, base: np.ndarray, lo: np.ndarray, hi: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest ``base + weight @ p`` over the box ``lo <= p <= hi``."""
    pos, neg = np.maximum(weight, 0), np.minimum(weight, 0)
    return base + pos @ lo + neg @ hi, base + pos @ hi + neg @ lo


#: unit roundoff of float32, the arithmetic the PyTorch model computes in
FLOAT32_U = 2.0 ** -24


def float32_margin(weight: np.ndarray, upper: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per first-layer neuron, a margin δ on the pre-activation ``a = W·x' − τ`` such that
    ``a >= δ`` (``a <= −δ``) in exact arithmetic makes the model's float32 forward pass fire
    (not fire) at ``x'`` too: the rounding of ``x'`` to float32 and of the dot product
    (a bound of Higham's γ_n = n·u/(1 − n·u) times ``Σ |W| |x'|``, with ``|x'| <= upper``)
    and of the batch-norm affine map (a few ulps of ``|τ|`` and ``Σ |W| |x'|``)."""
    n = weight.shape[1]
    gamma = (n + 2) * FLOAT32_U / (1 - (n + 2) * FLOAT32_U)
    scale = np.abs(weight) @ np.abs(upper)
    return gamma * scale + 8 * FLOAT32_U * (np.abs(threshold) + scale) + 1e-9


def over_neurons(weights: Sequence[Any], state: Sequence[Any]) -> tuple[Any, list, list]:
    """``Σ w_i h_i`` over neurons that are fixed (±1 ints) or free (a backend Boolean b with
    h = 2b − 1), skipping dropped ones (None): ``(constant, free terms, their coefficients)``."""
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


#: ``make(layer, j, const, terms, coefs, threshold, low, high)``: a backend Boolean that is true
#: iff ``const + Σ coefs·terms >= threshold`` (its range over the free terms is [low, high])
NeuronMaker = Callable[[int, int, int, list, list, int, int, int], Any]


def linear_over(weight: Any, state: list) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``weight @ h`` over a layer state (±1 ints, backend Booleans ``b`` with ``h = 2b − 1``,
    or None for dropped neurons): ``(constants, coefficients on the free inputs, the free
    inputs' positions)``, so that row j is ``const[j] + Σ_k coef[j, k]·b_{free[k]}``. Dense or
    SciPy sparse ``weight``."""
    fixed = np.array([s if isinstance(s, int) else 0 for s in state], dtype=np.int64)
    free = [i for i, s in enumerate(state) if s is not None and not isinstance(s, int)]
    sub = weight[:, free]
    sub = (sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)).astype(np.int64)
    # h = 2b − 1 for a free input b: its weight moves to the constant once, doubled on b
    const = np.asarray(weight @ fixed).ravel().astype(np.int64) - sub.sum(1)
    return const, 2 * sub, free


def deeper_layers(ib: IntegerBNN, state: list, make: NeuronMaker, *,
                  keep: np.ndarray | None = None) -> list:
    """The binary layers 2..D over the first layer's ``state`` (±1 or backend Booleans).

    A neuron decided over its inputs' range is a constant ±1; the others come from ``make``,
    with only the free inputs it depends on (nonzero weight) as terms. ``keep``: which
    last-layer neurons to encode (the others become None: e.g. those with a zero objective
    coefficient). Layer weights may be dense or SciPy sparse matrices (a convolution's).
    Returns the last layer's state.
    """
    last = len(ib.layers) - 1
    for li in range(1, len(ib.layers)):
        layer = ib.layers[li]
        const, coefs, free = linear_over(layer.weight, state)
        low = const + np.minimum(coefs, 0).sum(1)
        high = const + np.maximum(coefs, 0).sum(1)
        threshold = np.asarray(layer.int_threshold, dtype=np.int64)
        new_state: list = []
        for j in range(len(threshold)):
            if li == last and keep is not None and not keep[j]:
                new_state.append(None)
            elif low[j] >= threshold[j]:
                new_state.append(1)
            elif high[j] < threshold[j]:
                new_state.append(-1)
            else:
                nz = np.flatnonzero(coefs[j])
                new_state.append(make(li, j, int(const[j]), [state[free[k]] for k in nz],
                                      [int(c) for c in coefs[j, nz]], int(threshold[j]),
                                      int(low[j]), int(high[j])))
        state = new_state
    return state


#: ``make_relu(j, const, terms, coefs, low, high, weight)``: a backend variable equal to
#: ``max(a, 0)`` for the integer ``a = const + Σ coefs·terms`` in ``[low, high]`` (``low < 0 <
#: high``); ``weight`` is its coefficient in the maximized objective
ReluMaker = Callable[[int, int, list, list, int, int, float], Any]


def objective_terms(ib: IntegerBNN, last: list, target: int, prediction: int,
                    make_relu: ReluMaker | None = None) -> tuple[float, list, list[float], list[int]]:
    """Objective (1) over the last hidden layer's state: ``(constant, terms, coefficients,
    tops)`` with ``f = const + Σ coef·term`` and each term in ``[0, top]`` (1 for a Boolean).

    With a ReLU output layer (:attr:`.export.IntegerBNN.relu_weight`) a unit whose integer
    pre-activation can change sign becomes ``make_relu``'s variable (top: its highest value),
    one that cannot is a constant or linear in the free Booleans.
    """
    d = ib.out_weight[target] - ib.out_weight[prediction]
    bias = float(ib.out_bias[target] - ib.out_bias[prediction])
    if ib.relu_weight is None:
        const, terms, coefs = over_neurons([float(v) for v in d], last)
        return const + bias, terms, coefs, [1] * len(terms)
    if make_relu is None:
        raise AttackError("this backend cannot encode a ReLU output layer.")
    rconst, rcoefs, free = linear_over(ib.relu_weight, last)
    low = rconst + np.minimum(rcoefs, 0).sum(1)
    high = rconst + np.maximum(rcoefs, 0).sum(1)
    const, terms, coefs, tops = bias, [], [], []
    for j in np.flatnonzero(d):
        nz = np.flatnonzero(rcoefs[j])
        unit_terms = [last[free[k]] for k in nz]
        unit_coefs = [int(c) for c in rcoefs[j, nz]]
        if high[j] <= 0:
            continue  # the ReLU is 0 over the whole range
        if low[j] >= 0:  # the ReLU is the identity: linear in the Booleans
            const += float(d[j]) * int(rconst[j])
            terms += unit_terms
            coefs += [float(d[j]) * c for c in unit_coefs]
            tops += [1] * len(unit_terms)
        else:
            terms.append(make_relu(int(j), int(rconst[j]), unit_terms, unit_coefs,
                                   int(low[j]), int(high[j]), float(d[j])))
            coefs.append(float(d[j]))
            tops.append(int(high[j]))
    return const, terms, coefs, tops


def objective_relevant(ib: IntegerBNN, target: int, prediction: int) -> np.ndarray | None:
    """Which last-layer neurons the objective depends on (``w_target − w_prediction != 0``);
    None (all) behind a ReLU output layer."""
    if ib.relu_weight is not None:
        return None
    return ib.out_weight[target] - ib.out_weight[prediction] != 0
