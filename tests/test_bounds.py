"""The cheap certification bounds (:mod:`bnnrobust.attacks.combinatorial.bounds`): never below
the true optimum (brute force over the grid, the exact continuous optimum), the LP never
looser than the interval bound, and certification naming the method that settled each class."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ortools")

from test_exact import (  # noqa: E402
    best_over_classes,
    box_vertices,
    brute_force,
    random_bnn,
    random_case,
)

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


def test_a_start_that_breaks_the_point_settles_it_and_any_other_start_changes_nothing():
    """A counter-example given as ``start`` settles the point as attacked without a search (on
    the grid and on the continuous box); a start that breaks nothing (zero) gives the verdict
    of no start; a start on an undecided neuron's threshold is not taken as the model's."""
    rng = np.random.default_rng(3)
    seen = {"grid": 0, "continuous": 0}
    for _ in range(20):
        ib, x, k = random_case(rng, max_steps=2)
        for backend, eps in (("cpsat", k / 255 + 1e-6), ("cpsat-lp", 0.012)):
            plain = certify_point(ib, x, eps=eps, backend=backend, time_limit=20)
            zero = certify_point(ib, x, eps=eps, backend=backend, time_limit=20,
                                 start=np.zeros(len(x)))
            assert zero.status == plain.status and zero.settled_by == plain.settled_by
            if plain.status != "attacked":
                continue
            seen["grid" if backend == "cpsat" else "continuous"] += 1
            given = certify_point(ib, x, eps=eps, backend=backend, time_limit=20,
                                  start=plain.perturbation)
            assert given.status == "attacked" and given.method == "start"
            assert given.settled_by == {given.target: "start"}
            np.testing.assert_array_equal(given.perturbation, plain.perturbation)
    assert seen["grid"] and seen["continuous"]

    # a perturbation that puts an undecided neuron exactly on its threshold leaves it
    # ambiguous (either value in float32); a step away along its weights clears it
    for _ in range(50):
        ib = random_bnn(rng, depth=2)
        first = pattern_layer(ib, rng.integers(100, 156, size=6), eps=0.03, domain="continuous")
        if len(first.undecided) == 0:
            continue
        w, need = first.weight[0], first.need[0]
        p = w * need / (w @ w)
        if np.all((first.lo <= p) & (p <= first.hi)):
            assert 0 in first.ambiguous(p)
            moved = np.clip(p + np.sign(w) * 0.01, first.lo, first.hi)
            assert w @ (moved - p) > 1e-4 and 0 not in first.ambiguous(moved)
            break
    else:
        pytest.fail("no undecided neuron with its threshold inside the box")


def test_a_start_on_a_neurons_threshold_settles_the_point_only_when_both_its_values_flip():
    """A start within the float32 margin of an undecided neuron (here exactly on its
    threshold) is the model's counter-example only when the point flips whichever value the
    neuron takes: checked against the exact forward pass a small step to either side."""
    from bnnrobust.attacks.combinatorial.problem import logits_at, other_classes

    rng = np.random.default_rng(5)
    outcomes = {True: 0, False: 0}
    for _ in range(400):
        ib = random_bnn(rng, depth=2)
        x = rng.integers(100, 156, size=6)
        first = pattern_layer(ib, x, eps=0.03, domain="continuous")
        if len(first.undecided) == 0:
            continue
        w, need = first.weight[0], first.need[0]
        p = w * need / (w @ w)
        sides = [p + side * 1e-3 * w / (w @ w) for side in (1, -1)]
        inside = [np.all((first.lo <= q) & (q <= first.hi)) for q in [p, *sides]]
        # (an input on a threshold itself, which tiny integer BNNs make common, is left out:
        # its own prediction then depends on the arithmetic)
        if not all(inside) or list(first.ambiguous(p)) != [0] \
                or any(len(first.ambiguous(q)) for q in [*sides, np.zeros(len(x))]):
            continue
        prediction, order = other_classes(ib, x)
        logits = [logits_at(ib, x, q, domain="continuous") for q in sides]
        both = any(all(lg[c] >= lg[prediction] for lg in logits) for c in order)
        given = certify_point(ib, x, eps=0.03, backend="cpsat-lp", time_limit=20, start=p)
        assert (given.method == "start") == both
        if both:
            assert given.status == "attacked" and given.target in order
        outcomes[both] += 1
    assert outcomes[True] and outcomes[False]


def test_certify_takes_a_gradient_attacks_inputs_as_its_start():
    """Through the attack contract: ``Certify.run(x, y, start=x_adv)`` settles the points the
    given inputs break by ``start``; the summary counts them."""
    import torch
    from test_exact import torch_bnn

    from bnnrobust.attacks.combinatorial import Certify
    from bnnrobust.evaluate.exact import certified

    model = torch_bnn(0)
    torch.manual_seed(0)
    x = (128 + torch.randint(-3, 4, (12, 6))) / 255
    y = model(x).argmax(1)
    certify = Certify(model, eps=0.012, backend="cpsat-lp", time_limit=20)
    first = certify.run(x, y)
    broken = [s == "attacked" for s in first.status]
    assert any(broken)
    again = certify.run(x, y, start=first.x_adv)
    assert again.status == first.status
    methods = [p["method"] for p in again.extra["points"]]
    assert [m == "start" for m in methods] == broken
    assert certified(again, y).settled_by["start"] == sum(broken)


def test_a_start_that_breaks_nothing_is_where_every_exact_search_begins(monkeypatch):
    """A start that flips no class is handed, clipped to the box, to each exact search as its
    hint; without a start the searches get none."""
    from bnnrobust.attacks.combinatorial import milp

    hints = []
    real = milp.solver

    def recording(backend):
        solve = real(backend)

        def solve_and_record(*args, hint=None, **options):
            hints.append(hint)
            return solve(*args, hint=hint, **options)
        return solve_and_record

    monkeypatch.setattr(milp, "solver", recording)
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(20):
        ib, x, _ = random_case(rng, max_steps=2)
        start = np.full(len(x), 0.5)  # far outside the box: clipped to its upper corner
        hints.clear()
        plain = certify_point(ib, x, eps=0.012, backend="cpsat-lp", time_limit=20,
                              bounds=False)
        assert hints and all(h is None for h in hints)
        hints.clear()
        given = certify_point(ib, x, eps=0.012, backend="cpsat-lp", time_limit=20,
                              bounds=False, start=start)
        if given.method == "start":
            continue
        corner = np.minimum(0.012, 1 - x / 255.0)
        assert hints and all(np.array_equal(h, corner) for h in hints)
        assert given.status == plain.status
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("start", [np.zeros(5), np.full(6, np.nan)])
def test_certify_refuses_a_start_of_the_wrong_size_or_not_finite(start):
    from bnnrobust.attacks.base import AttackError

    rng = np.random.default_rng(0)
    ib, x, k = random_case(rng, max_steps=2)
    with pytest.raises(AttackError, match="start must be a finite perturbation of 6 values"):
        certify_point(ib, x, eps=k / 255 + 1e-6, start=start)


def test_an_input_on_a_threshold_is_certified_with_the_prediction_its_search_uses():
    """An input whose own first-layer pre-activation is exactly on a threshold (common in tiny
    integer BNNs) can have one prediction by the integer forward pass and another by the real
    one; on the continuous box certification and the untargeted attack take the real one, as
    their searches do, and give a verdict (not an error): a counter-example that flips the
    real forward pass, or robustness that no box vertex or sampled point contradicts."""

    from bnnrobust.attacks.combinatorial.problem import logits_at

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(200):
        ib = random_bnn(rng, depth=2)
        x = rng.integers(100, 156, size=6)
        if np.argmax(ib.logits_pixels(x[None])[0]) == np.argmax(
                logits_at(ib, x, 0, domain="continuous")):
            continue
        cert = certify_point(ib, x, eps=0.03, backend="cpsat-lp", time_limit=20)
        assert cert.prediction == int(np.argmax(logits_at(ib, x, 0, domain="continuous")))
        assert cert.status in ("robust", "attacked")
        if cert.status == "attacked":
            logits = logits_at(ib, x, cert.perturbation, domain="continuous")
            assert logits[cert.target] >= logits[cert.prediction]
        else:
            lo, hi = np.maximum(-0.03, -x / 255), np.minimum(0.03, 1 - x / 255)
            corners = box_vertices(x, 0.03)
            inside = lo + (hi - lo) * rng.random((200, len(x)))
            for p in [*corners, *inside]:
                logits = logits_at(ib, x, p, domain="continuous")
                assert np.argmax(logits) == cert.prediction
        checked += 1
    assert checked
