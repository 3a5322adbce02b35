"""The cheap certification bounds (:mod:`bnnrobust.attacks.combinatorial.bounds`): never below
the true optimum (brute force over the grid, the exact continuous optimum), the LP never
looser than the interval bound, and certification naming the method that settled each class."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ortools")

from test_exact import best_over_classes, brute_force, random_bnn, random_case  # noqa: E402

from bnnrobust.attacks.combinatorial import certify_point, cpsat_attack  # noqa: E402
from bnnrobust.attacks.combinatorial.bounds import interval_bound, lp_bound  # noqa: E402
from bnnrobust.attacks.combinatorial.cpsat import pattern_layer  # noqa: E402


def test_bounds_are_never_below_the_grid_optimum_on_50_tiny_bnns():
    rng = np.random.default_rng(3)
    interval_tight = lp_tight = 0
    for _ in range(50):
        ib, x, k = random_case(rng, depth=int(rng.integers(1, 4)))
        first = pattern_layer(ib, x, eps=k / 255 + 1e-9)
        logits = ib.logits_pixels(x[None])[0]
        pred = int(np.argmax(logits))
        for target in range(len(logits)):
            if target == pred:
                continue
            truth = brute_force(ib, x, k, target, pred)
            box = interval_bound(ib, first, target, pred)
            lp = lp_bound(ib, first, target, pred)
            assert lp is not None
            assert truth <= lp + 1e-9 and truth <= box + 1e-9
            assert lp <= box + 1e-3  # the relaxation keeps the interval ranges as big-M
            interval_tight += abs(box - truth) < 1e-9
            lp_tight += abs(lp - truth) < 1e-4
    assert lp_tight > interval_tight  # the LP is strictly stronger somewhere


def test_bounds_are_never_below_the_continuous_optimum():
    rng = np.random.default_rng(5)
    for _ in range(25):
        ib = random_bnn(rng, depth=int(rng.integers(1, 4)))
        x = rng.integers(100, 156, size=6)
        eps = float(rng.uniform(0.002, 0.03))
        first = pattern_layer(ib, x, eps=eps, domain="continuous")
        exact = cpsat_attack(ib, x, eps=eps, time_limit=20, domain="continuous")
        assert exact.status == "optimal"
        lp = lp_bound(ib, first, exact.target, exact.prediction)
        assert lp is not None and exact.objective <= lp + 1e-9
        assert exact.objective <= interval_bound(ib, first, exact.target, exact.prediction) + 1e-9


def test_certification_names_what_settled_each_class():
    """With the bounds or without, the same verdict as brute force; with them, some classes
    are settled by the interval or LP bound, and the point's method is its costliest class's."""
    rng = np.random.default_rng(7)
    methods = set()
    for _ in range(15):
        ib, x, k = random_case(rng, max_steps=2)
        worst = best_over_classes(ib, x, k)[1]
        for bounds in (True, False):
            cert = certify_point(ib, x, eps=k / 255 + 1e-6, time_limit=20, bounds=bounds)
            assert cert.status == ("attacked" if worst >= 0 else "robust")
            assert set(cert.settled_by) == set(cert.per_class)
            if not bounds:
                assert set(cert.settled_by.values()) == {"exact"}
            order = ["interval", "lp", "exact"]
            assert cert.method == max(cert.settled_by.values(), key=order.index)
            assert cert.as_dict()["method"] == cert.method
            methods |= set(cert.settled_by.values())
    assert {"interval", "exact"} <= methods


def test_continuous_minimal_eps_brackets_the_flip_and_both_backends_agree():
    """On the continuous box the bracket (lower, upper] is at most the tolerance wide, the
    returned perturbation has L∞ norm ``upper`` and reaches the prediction in the exact forward
    pass, and HiGHS big-M brackets the same ε."""
    from bnnrobust.attacks.combinatorial import minimal_eps

    rng = np.random.default_rng(2)
    flipped = 0
    for _ in range(8):
        ib = random_bnn(rng, depth=2)
        x = rng.integers(100, 156, size=6)
        found = minimal_eps(ib, x, max_eps=0.03, backend="cpsat-lp", tolerance=1e-4,
                            time_limit=60)
        assert found.proven and found.domain == "continuous"
        if found.upper is None:
            assert found.lower == 0.03
            continue
        flipped += 1
        assert 0 <= found.upper - found.lower <= 1e-4
        assert np.abs(found.perturbation).max() == pytest.approx(found.upper)
        logits = ib.logits((x / 255 + found.perturbation)[None])[0]
        pred = int(np.argmax(ib.logits((x / 255)[None])[0]))
        assert np.delete(logits, pred).max() >= logits[pred]
        other = minimal_eps(ib, x, max_eps=0.03, backend="highs", tolerance=1e-4,
                            time_limit=60)
        assert other.proven and other.upper is not None
        assert other.lower <= found.upper + 1e-9 and found.lower <= other.upper + 1e-9
    assert flipped


@pytest.mark.parametrize("options, message", [
    ({"tolerance": 0.0}, "tolerance must be a finite number > 0"),
    ({"tolerance": float("nan")}, "tolerance must be a finite number > 0"),
    ({"backend": "gurobi"}, "gurobi"),
    ({"max_eps": -0.1, "backend": "cpsat-lp"}, "max_eps must be a finite number > 0"),
    ({"max_eps": 0.0}, "max_eps must be a finite number > 0"),
])
def test_minimal_eps_refuses_bad_options(options, message):
    from bnnrobust.attacks.base import AttackError
    from bnnrobust.attacks.combinatorial import minimal_eps

    rng = np.random.default_rng(0)
    ib = random_bnn(rng, depth=2)
    with pytest.raises(AttackError, match=message):
        minimal_eps(ib, rng.integers(100, 156, size=6), **options)
