"""The exact CP-SAT attack against brute-force enumeration on tiny random BNNs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("ortools")

from bnnrobust.attacks import AttackError  # noqa: E402
from bnnrobust.attacks.combinatorial import (  # noqa: E402
    IntegerBNN,
    IntegerLayer,
    cpsat_attack,
    eps_steps,
    objective_of,
)


def random_bnn(rng: np.random.Generator, n_in: int = 6, width: int = 8, depth: int = 2,
               classes: int = 4) -> IntegerBNN:
    layers = []
    fan_in = n_in
    for li in range(depth):
        w = rng.choice([-1, 1], size=(width, fan_in)).astype(np.int8)
        if li == 0:  # thresholds on the pixel grid near the typical pre-activation
            thr = rng.integers(-40, 40, size=width) + (w.sum(1) * 128)
        else:
            thr = rng.integers(-3, 4, size=width)
        layers.append(IntegerLayer(weight=w, threshold=thr / (255.0 if li == 0 else 1.0),
                                   int_threshold=thr.astype(np.int64)))
        fan_in = width
    return IntegerBNN(layers=tuple(layers), out_weight=rng.normal(size=(classes, width)),
                      out_bias=rng.normal(size=classes))


def brute_force(ib: IntegerBNN, x: np.ndarray, k: int, target: int, prediction: int) -> float:
    steps = [range(max(-k, -v), min(k, 255 - v) + 1) for v in x]
    best = -np.inf
    grid = np.array(list(itertools.product(*steps)), dtype=np.int64)
    logits = ib.logits_pixels(x[None] + grid)
    best = (logits[:, target] - logits[:, prediction]).max()
    return float(best)


def test_cpsat_equals_brute_force_on_50_tiny_bnns():
    rng = np.random.default_rng(0)
    checked = flips = 0
    for _ in range(50):
        ib = random_bnn(rng)
        x = rng.integers(100, 156, size=6)
        k = int(rng.integers(1, 4))
        result = cpsat_attack(ib, x, eps=k / 255 + 1e-6, time_limit=10)
        assert result.eps_steps == k
        assert result.status == "optimal"
        optimum = brute_force(ib, x, k, result.target, result.prediction)
        assert result.objective == pytest.approx(optimum, abs=1e-9)
        assert result.bound >= optimum - 1e-4
        assert np.abs(result.perturbation).max() <= k
        assert result.objective == objective_of(ib, x + result.perturbation, result.target,
                                                result.prediction)
        checked += 1
        flips += result.flipped
    assert checked == 50 and 0 < flips < 50  # the set mixes flippable and robust points


def test_trace_records_incumbents_with_a_hint():
    rng = np.random.default_rng(1)
    ib = random_bnn(rng, n_in=6, width=8)
    x = rng.integers(100, 156, size=6)
    result = cpsat_attack(ib, x, eps=3 / 255, hint=np.full(6, 2), time_limit=10)
    assert result.trace and result.trace[-1][1] == pytest.approx(result.objective, abs=1e-4)


def test_eps_steps_and_errors():
    assert eps_steps(0.01) == 2 and eps_steps(1 / 255) == 1 and eps_steps(0.1) == 25
    rng = np.random.default_rng(2)
    ib = random_bnn(rng)
    x = rng.integers(0, 256, size=6)
    with pytest.raises(AttackError, match="eps must be a finite number > 0"):
        cpsat_attack(ib, x, eps=0)
    with pytest.raises(AttackError, match="time_limit must be > 0"):
        cpsat_attack(ib, x, eps=0.01, time_limit=0)
    with pytest.raises(AttackError, match="threads must be an integer >= 1"):
        cpsat_attack(ib, x, eps=0.01, threads=0)
    with pytest.raises(AttackError, match="integers in 0..255"):
        cpsat_attack(ib, x + 300, eps=0.01)
    pred = int(np.argmax(ib.logits_pixels(x[None])[0]))
    with pytest.raises(AttackError, match="other than the prediction"):
        cpsat_attack(ib, x, eps=0.01, target=pred)
