"""Exact and combinatorial attacks against brute-force enumeration on tiny random BNNs."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch

pytest.importorskip("ortools")

from bnnrobust.attacks import AttackError  # noqa: E402
from bnnrobust.attacks.combinatorial import (  # noqa: E402
    Certify,
    IntegerBNN,
    IntegerBNNModule,
    IntegerLayer,
    IProp,
    MILPAttack,
    certify_point,
    cpsat_attack,
    eps_steps,
    export,
    iterated_fgsm,
    minimal_eps,
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


def random_case(rng: np.random.Generator, *, depth: int = 2,
                max_steps: int = 3) -> tuple[IntegerBNN, np.ndarray, int]:
    """A random tiny BNN, an input near mid-grey and a budget of 1..max_steps pixel steps."""
    ib = random_bnn(rng, depth=depth)
    x = rng.integers(100, 156, size=6)
    return ib, x, int(rng.integers(1, max_steps + 1))


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
        ib, x, k = random_case(rng, max_steps=3)
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


def test_exact_attacks_through_run_equal_their_per_point_solvers_on_50_tiny_bnns():
    """The contract: run(x, y) on [0, 1] inputs gives each point the per-point solver's
    result (objective, status, the adversarial input), for the MILP, IProp and certify."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        ib, x, k = random_case(rng, max_steps=3)
        model = IntegerBNNModule(ib)
        x01 = torch.tensor(x[None] / 255.0, dtype=torch.float32)
        y = torch.zeros(1, dtype=torch.long)
        eps = k / 255 + 1e-6
        direct = cpsat_attack(ib, x, eps=eps, time_limit=10)
        through = MILPAttack(model, eps=eps, hint="none", time_limit=10).run(x01, y)
        assert through.status == (direct.status,)
        assert through.objective.item() == direct.objective
        assert bool(through.success) == direct.flipped
        assert torch.equal(torch.round(through.x_adv * 255).long()[0],
                           torch.tensor(x + direct.perturbation))
        assert through.extra["points"][0]["target"] == direct.target
        cert = Certify(model, eps=eps, time_limit=10).run(x01, y)
        assert cert.status == (certify_point(ib, x, eps=eps, time_limit=10).status,)
        ip = IProp(model, eps=eps, time_limit=5, sub_time_limit=1, **OURS)
        assert ip.run(x01, y).objective.item() == \
            ip.attack_point(x, target="second").objective


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
    with pytest.raises(AttackError, match="time_limit must be a finite number > 0"):
        cpsat_attack(ib, x, eps=0.01, time_limit=0)
    with pytest.raises(AttackError, match="eps must be at most 1"):
        cpsat_attack(ib, x, eps=1.5)
    with pytest.raises(AttackError, match="threads must be an integer >= 1"):
        cpsat_attack(ib, x, eps=0.01, threads=0)
    with pytest.raises(AttackError, match="integers in 0..255"):
        cpsat_attack(ib, x + 300, eps=0.01)
    pred = int(np.argmax(ib.logits_pixels(x[None])[0]))
    with pytest.raises(AttackError, match="other than the prediction"):
        cpsat_attack(ib, x, eps=0.01, target=pred)
    from bnnrobust.attacks.combinatorial.highs import highs_attack

    for gap in (-1e-4, float("nan"), "0"):
        with pytest.raises(AttackError, match="gap must be a finite number >= 0"):
            highs_attack(ib, x, eps=0.01, gap=gap)


# --------------------------------------------------------------------------- shared helpers
def best_over_classes(ib: IntegerBNN, x: np.ndarray, k: int) -> tuple[int, float]:
    """(prediction, max over every other class and every perturbation of f_c − f_pred)."""
    steps = [range(max(-k, -v), min(k, 255 - v) + 1) for v in x]
    grid = np.array(list(itertools.product(*steps)), dtype=np.int64)
    logits = ib.logits_pixels(x[None] + grid)
    pred = int(np.argmax(ib.logits_pixels(x[None])[0]))
    others = np.delete(logits, pred, axis=1)
    return pred, float((others - logits[:, [pred]]).max())


def torch_bnn(seed: int, n_in: int = 6, width: int = 8, classes: int = 4):
    """A tiny PyTorch fc-bnn whose first-layer thresholds sit near its input (0.5, ..., 0.5)."""
    import torch

    from bnnrobust.models import build

    torch.manual_seed(seed)
    model = build("fc-bnn", depth=2, width=width, in_features=n_in, num_classes=classes)
    linear, act = model.body[1], model.body[2]
    with torch.no_grad():
        pre = torch.where(linear.weight >= 0, 1.0, -1.0) @ torch.full((n_in,), 0.5)
        act.bn.running_mean.copy_(pre + torch.empty(width).uniform_(-0.05, 0.05))
        act.bn.running_var.fill_(0.01)
    return model.eval()


# --------------------------------------------------------------------------- the MILP
def test_cpsat_depth_three_and_floor_mode():
    rng = np.random.default_rng(3)
    for _ in range(10):
        ib, x, k = random_case(rng, depth=3, max_steps=2)
        result = cpsat_attack(ib, x, eps=k / 255 + 1e-6, time_limit=10)
        optimum = brute_force(ib, x, k, result.target, result.prediction)
        assert result.status == "optimal" and result.objective == pytest.approx(optimum, abs=1e-9)
        floored = cpsat_attack(ib, x, eps=k / 255 + 1e-6, time_limit=10, floor=0.0)
        assert floored.status == "optimal"
        assert (floored.objective >= 0) == (optimum >= 0)  # found iff one exists


def test_highs_continuous_attack_is_exact_and_at_least_the_grid_optimum():
    from bnnrobust.attacks.combinatorial.highs import highs_attack

    rng = np.random.default_rng(4)
    for _ in range(10):
        ib, x, k = random_case(rng, max_steps=3)
        grid = cpsat_attack(ib, x, eps=k / 255, time_limit=10)
        cont = highs_attack(ib, x, eps=k / 255, time_limit=10)
        assert cont.status == "optimal"
        assert np.abs(cont.perturbation).max() <= k / 255 + 1e-12
        exact = ib.logits((x / 255 + cont.perturbation)[None])[0]
        assert cont.objective == pytest.approx(exact[cont.target] - exact[cont.prediction], abs=1e-12)
        assert cont.objective >= grid.objective - 1e-9  # the continuous box contains the grid


def test_milp_attack_untargeted_equals_brute_force_over_classes():
    rng = np.random.default_rng(5)
    for _ in range(10):
        ib, x, k = random_case(rng, max_steps=3)
        result = MILPAttack(IntegerBNNModule(ib), eps=k / 255 + 1e-6, hint="none",
                            time_limit=20).attack_point(x, target="untargeted")
        _, optimum = best_over_classes(ib, x, k)
        assert result.status == "optimal" and result.objective == pytest.approx(optimum, abs=1e-9)


def test_milp_attack_with_fgsm_hint_on_a_pytorch_bnn():
    for seed in range(5):
        model = torch_bnn(seed)
        ib = export(model)
        x = np.full(6, 128)
        result = MILPAttack(model, eps=3 / 255, hint="fgsm", time_limit=20).attack_point(
            x, target="second")
        assert result.status == "optimal"
        assert result.objective == pytest.approx(
            brute_force(ib, x, 3, result.target, result.prediction), abs=1e-9)


def test_milp_attack_errors():
    rng = np.random.default_rng(6)
    ib = IntegerBNNModule(random_bnn(rng))
    with pytest.raises(AttackError, match="unknown backend 'gurobi'"):
        MILPAttack(ib, eps=0.01, backend="gurobi", hint="none")
    with pytest.raises(AttackError, match="needs the PyTorch model"):
        MILPAttack(ib, eps=0.01)
    with pytest.raises(AttackError, match="time_limit must be a finite number > 0"):
        MILPAttack(ib, eps=0.01, hint="none", time_limit=float("nan"))
    with pytest.raises(AttackError, match="unknown target 'first'"):
        MILPAttack(ib, eps=0.01, hint="none", target="first")
    with pytest.raises(AttackError, match="eps must be a finite number > 0"):
        MILPAttack(ib, eps=-0.1, hint="none")
    with pytest.raises(AttackError, match="pixels has 5 values"):
        MILPAttack(ib, eps=0.01, hint="none").attack_point(np.zeros(5), target="second")
    with pytest.raises(AttackError, match="x holds NaN"):
        MILPAttack(ib, eps=0.01, hint="none").run(torch.full((1, 6), float("nan")),
                                                   torch.zeros(1, dtype=torch.long))
    with pytest.raises(AttackError, match="1/255 grid"):
        MILPAttack(ib, eps=0.01, hint="none").run(torch.full((1, 6), 0.5001),
                                                   torch.zeros(1, dtype=torch.long))
    with pytest.raises(AttackError, match="cannot export"):
        MILPAttack(torch.nn.Linear(6, 4), eps=0.01, hint="none")


# --------------------------------------------------------------------------- certification
def test_certify_and_minimal_eps_agree_with_brute_force():
    rng = np.random.default_rng(7)
    robust = attacked = 0
    for _ in range(15):
        ib, x, k = random_case(rng, max_steps=2)
        cert = certify_point(ib, x, eps=k / 255 + 1e-6, time_limit=20)
        pred, worst = best_over_classes(ib, x, k)
        assert cert.prediction == pred
        if worst >= 0:
            assert cert.status == "attacked"
            logits = ib.logits_pixels((x + cert.perturbation)[None])[0]
            assert logits[cert.target] >= logits[pred]
            attacked += 1
        else:
            assert cert.status == "robust"
            robust += 1
        smallest = next((s for s in range(1, 4) if best_over_classes(ib, x, s)[1] >= 0), None)
        found = minimal_eps(ib, x, max_eps=3 / 255 + 1e-6, time_limit=30)
        assert found.proven and found.steps == smallest
    assert robust and attacked


# --------------------------------------------------------------------------- IProp, baseline
#: our additions to IProp (named options, off by default: the paper's pseudocode)
OURS = {"fix_decided": True, "greedy_fallback": True, "early_stop": True}


def test_iprop_is_the_papers_pseudocode_by_default(monkeypatch):
    """By default IProp runs to its time limit, solves problem (10) exactly only and holds no
    first-layer neuron fixed in (9); each addition of ours is a named option."""
    from bnnrobust.attacks.combinatorial import iprop

    params = IProp.Params()
    assert not (params.fix_decided or params.greedy_fallback or params.early_stop)
    rng = np.random.default_rng(11)
    fixed_seen, greedy_calls = [], []
    propagate = iprop.propagate_layer
    monkeypatch.setattr(iprop, "propagate_layer", lambda *a, **k: (
        fixed_seen.append(dict(a[4])), propagate(*a, **k))[1])
    monkeypatch.setattr(iprop, "_perturb_greedy", lambda *a, **k: greedy_calls.append(1) or a[2])
    for _ in range(20):
        ib, x, k = random_case(rng, max_steps=3)
        model = IntegerBNNModule(ib)
        paper = IProp(model, eps=k / 255 + 1e-6, time_limit=0.6, sub_time_limit=0.2)
        result = paper.attack_point(x, target="second")
        ideal = np.where(ib.out_weight[result.target] - ib.out_weight[result.prediction] > 0, 1,
                         -1)
        last = ib.hidden_pixels((x + result.perturbation)[None])[-1][0]
        if not np.all(last == ideal):  # no global optimum: it ran to the time limit
            assert result.seconds >= 0.55
            ours = IProp(model, eps=k / 255 + 1e-6, time_limit=0.6, sub_time_limit=0.2,
                         early_stop=True).attack_point(x, target="second")
            assert ours.seconds < result.seconds
    assert fixed_seen and all(f == {} for f in fixed_seen) and not greedy_calls
    fixed_seen.clear()
    ib, x, k = random_case(rng, max_steps=3)
    IProp(IntegerBNNModule(ib), eps=k / 255 + 1e-6, time_limit=0.3, sub_time_limit=0.1,
          fix_decided=True, early_stop=True).attack_point(x, target="second")
    assert any(f for f in fixed_seen)  # decided first-layer neurons held fixed in (9)

def test_iprop_never_beats_the_optimum_on_50_tiny_bnns():
    rng = np.random.default_rng(0)
    reached = 0
    for _ in range(50):
        ib, x, k = random_case(rng, max_steps=3)
        result = IProp(IntegerBNNModule(ib), eps=k / 255 + 1e-6, time_limit=5,
                       sub_time_limit=1, **OURS).attack_point(x, target="second")
        optimum = brute_force(ib, x, k, result.target, result.prediction)
        assert result.objective <= optimum + 1e-9
        assert result.objective == objective_of(ib, x + result.perturbation, result.target,
                                                result.prediction)
        assert [t[1] for t in result.trace] == sorted(t[1] for t in result.trace)
        reached += result.objective == pytest.approx(optimum, abs=1e-9)
    assert reached >= 25  # a local search, but a good one on tiny networks


def test_iprop_constant_step_warm_start_and_errors():
    model = torch_bnn(0)
    x = np.full(6, 128)
    result = IProp(model, eps=3 / 255, step=2, warm_start="fgsm", warm_start_time=0.2,
                   time_limit=5, sub_time_limit=1, **OURS).attack_point(x, target="second")
    assert result.objective <= brute_force(export(model), x, 3, result.target,
                                           result.prediction) + 1e-9
    ib = IntegerBNNModule(export(model))
    with pytest.raises(AttackError, match="step must be an integer >= 1"):
        IProp(ib, eps=0.01, step=0)
    with pytest.raises(AttackError, match="unknown warm_start 'pgd'; expected one of none, fgsm"):
        IProp(ib, eps=0.01, warm_start="pgd")
    with pytest.raises(AttackError, match="needs the PyTorch model"):
        IProp(ib, eps=0.01, warm_start="fgsm")
    with pytest.raises(AttackError, match="sub_time_limit must be a finite number > 0"):
        IProp(ib, eps=0.01, sub_time_limit=0)


def test_margin_pgd_is_closed_form_on_a_linear_model():
    import torch

    from bnnrobust.attacks.combinatorial.baseline import MarginPGD

    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 3)
    x = torch.rand(4, 5) * 0.5 + 0.25
    y, target = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    x_adv = MarginPGD(linear, eps=0.05, alpha=0.01, steps=10, random_start=False)(
        x, y, target=target)
    direction = (linear.weight[2] - linear.weight[0]).sign()
    assert torch.allclose(x_adv, (x + 0.05 * direction).clamp(0, 1), atol=1e-6)


def test_iterated_fgsm_is_exact_and_below_the_optimum():
    for seed in range(5):
        model = torch_bnn(seed)
        ib = export(model)
        x = np.full(6, 128)
        result = iterated_fgsm(model, ib, x, eps=3 / 255, time_limit=0.5)
        assert np.abs(result.perturbation).max() <= 3
        assert result.objective == objective_of(ib, x + result.perturbation, result.target,
                                                result.prediction)
        assert result.objective <= brute_force(ib, x, 3, result.target, result.prediction) + 1e-9
        assert result.iterations >= 1 and result.status == "feasible"


def test_cores_are_minimal_infeasible_subsets():
    from bnnrobust.attacks.combinatorial import FirstLayer

    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(200):
        ib = random_bnn(rng, n_in=8, width=12)
        x = rng.integers(100, 156, size=8)
        first = FirstLayer(ib, x, 3)
        u = len(first.undecided)
        if u < 3:
            continue
        pattern = rng.integers(0, 2, size=u)
        if not isinstance(first.reach(pattern, range(u), 10), str):
            continue  # reachable: no core
        core = first.core(pattern, time.perf_counter() + 30)
        assert first.reach(pattern, core, 10) == "infeasible"
        for q in core:  # minimal: dropping any member makes it reachable
            rest = [r for r in core if r != q]
            assert not rest or not isinstance(first.reach(pattern, rest, 10), str)
        checked += 1
    assert checked >= 10


def test_reachability_agrees_with_enumerating_the_grid(monkeypatch):
    """Linear-relaxation path and CP-SAT path both agree with enumerating every perturbation."""
    from bnnrobust.attacks.combinatorial import FirstLayer

    rng = np.random.default_rng(9)
    answers = {"lp": [], "cpsat": []}
    for _ in range(100):
        ib, x, k = random_case(rng)
        first = FirstLayer(ib, x, k)
        u = len(first.undecided)
        if u < 2:
            continue
        grid = np.array(list(itertools.product(*[range(lo, hi + 1) for lo, hi in
                                                  zip(first.lo, first.hi, strict=True)])))
        fires = (grid @ first.weight.T >= first.need).astype(np.int64)
        pattern = rng.integers(0, 2, size=u)
        subset = sorted(rng.choice(u, size=int(rng.integers(2, u + 1)), replace=False))
        reachable = bool(np.any(np.all(fires[:, subset] == pattern[subset], axis=1)))
        for path in answers:
            if path == "cpsat":
                monkeypatch.setattr(FirstLayer, "_reach_lp", lambda self, a, b: (None, None))
            got = first.reach(pattern, subset, 10)
            monkeypatch.undo()
            if reachable:
                assert not isinstance(got, str)
                assert np.all((first.weight[subset] @ got >= first.need[subset])
                              == (pattern[subset] == 1))
                assert np.all(got >= first.lo) and np.all(got <= first.hi)
            else:
                assert isinstance(got, str) and got == "infeasible"
            answers[path].append(reachable)
    assert sum(answers["lp"]) >= 10 and len(answers["lp"]) - sum(answers["lp"]) >= 10


def test_the_baseline_follows_the_approximate_bnn_gradient_in_closed_form():
    """Two hidden layers of one neuron: with g = clip(·, −1, 1) forward (the paper's
    approximate BNN) the gradient of f_1 − f_0 is v · g'(a2) γ2/σ2 w2 · g'(a1) γ1/σ1 w1;
    with the sign forward h1 = ±1 pushes a2 outside [−1, 1], where the straight-through
    gradient vanishes."""
    from bnnrobust.attacks.combinatorial.baseline import MarginPGD
    from bnnrobust.models import build
    from bnnrobust.nn import approximate_activations

    model = build("fc-bnn", depth=2, width=1, in_features=2, num_classes=2).eval()
    lin1, act1, lin2, act2, out = model.body[1], model.body[2], model.body[3], model.body[4], \
        model.body[5]
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[0.3, -0.4]]))  # ±1 weights: (+1, −1)
        lin2.weight.fill_(0.5)  # +1
        for act, mean, var, gamma in ((act1, 0.0, 1.0, 1.0), (act2, 0.0, 1.0, 0.6)):
            act.bn.running_mean.fill_(mean)
            act.bn.running_var.fill_(var)
            act.bn.weight.fill_(gamma)
            act.bn.bias.zero_()
        out.weight.copy_(torch.tensor([[0.0], [2.0]]))
        out.bias.zero_()
    x = torch.tensor([[0.8, 0.3]])  # a1 = 0.5 / sqrt(1 + 1e-5): inside (−1, 1)
    y, target = torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long)
    attack = MarginPGD(model, eps=0.01, alpha=0.01, steps=1, random_start=False)
    s = 1 / math.sqrt(1 + 1e-5)
    with approximate_activations(model) as replaced:
        assert replaced == 2
        grad = attack.input_gradient(x, y, target=target)
    a1 = 0.5 * s
    a2 = 0.6 * s * a1  # inside (−1, 1) too: g' = 1 at both layers
    assert abs(a1) < 1 and abs(a2) < 1
    expected = 2.0 * (0.6 * s * 1.0) * (1.0 * s) * torch.tensor([[1.0, -1.0]])
    assert torch.allclose(grad, expected, atol=1e-6)
    # sign forward: h1 = +1, a2 = 0.6 s < 1 still; make the second layer's scale 1.5 instead:
    with torch.no_grad():
        act2.bn.weight.fill_(1.5)  # a2 = 1.5 s · h1: 0.75 s with g, 1.5 s with the sign
    with approximate_activations(model):
        approx = attack.input_gradient(x, y, target=target)
    ste = attack.input_gradient(x, y, target=target)
    assert torch.allclose(approx, 2.0 * 1.5 * s * s * torch.tensor([[1.0, -1.0]]), atol=1e-6)
    assert torch.equal(ste, torch.zeros_like(ste))  # |a2| = 1.5 s > 1: the STE is cut


def test_the_milp_columns_time_includes_its_warm_start():
    """Khalil et al.: "all methods are run with a time cutoff of 3 minutes"; the MILP column's
    iterated-FGSM warm start comes out of the same budget and its time is counted."""
    from test_measures_figures import column_for, task_for

    from bnnrobust.experiments.measures import measure_named

    model = torch_bnn(0)
    x = torch.full((3, 6), 128 / 255)
    y = torch.zeros(3, dtype=torch.long)
    column = column_for("exact", "MILP", "milp", {"eps": 3 / 255, "hint": "none"},
                        {"start": "fgsm", "start_share": 0.5})
    assert column.params.time_limit == 5.0  # the profile's limit
    value = measure_named("exact").compute(task_for("exact", column), model, x, y)
    ib = export(model)
    for point in value["points"]:
        assert point["clean_objective"] == objective_of(ib, np.full(6, 128), point["target"],
                                                        point["prediction"])
        assert 0 < point["warm_start_seconds"] <= point["seconds"]
        assert point["warm_start_seconds"] >= 0.5 * 5.0 * 0.9  # FGSM used its share
        assert point["seconds"] <= 5.0 + 1.0  # the whole budget, warm start included
        assert point["trace"][0][0] >= point["warm_start_seconds"]


def test_iprop_and_fgsm_on_the_continuous_problem_stay_below_its_optimum():
    """The paper's problem (|p| <= ε, real): IProp (problem (10) as a small MILP) and iterated
    FGSM never beat HiGHS's proven optimum, stay in the box, and improve where it can."""
    from bnnrobust.attacks.combinatorial import IteratedFGSM

    rng = np.random.default_rng(12)
    improved = 0
    for _ in range(12):
        ib, x, k = random_case(rng, max_steps=3)
        model = IntegerBNNModule(ib)
        x01 = torch.tensor(x[None] / 255.0, dtype=torch.float32)
        y = torch.zeros(1, dtype=torch.long)
        eps = k / 255
        best = MILPAttack(model, eps=eps, backend="highs", hint="none", time_limit=20).run(x01, y)
        assert best.status == ("optimal",)
        ip = IProp(model, eps=eps, time_limit=1.0, sub_time_limit=0.3, domain="continuous",
                   early_stop=True).run(x01, y)
        assert ip.objective.item() <= best.objective.item() + 1e-9
        assert ip.linf.item() <= eps + 1e-6
        clean = ib.logits(x[None] / 255.0)[0]
        improved += ip.objective.item() > np.sort(clean)[-2] - clean.max() + 1e-9
    assert improved >= 3
    for seed in range(3):
        model = torch_bnn(seed)
        x01 = torch.full((1, 6), 128 / 255)
        y = torch.zeros(1, dtype=torch.long)
        fgsm = IteratedFGSM(model, eps=3 / 255, time_limit=0.3, domain="continuous").run(x01, y)
        best = MILPAttack(model, eps=3 / 255, backend="highs", hint="none",
                          time_limit=20).run(x01, y)
        assert fgsm.linf.item() <= 3 / 255 + 1e-6
        assert fgsm.objective.item() <= best.objective.item() + 1e-6


def test_the_normalized_objective_is_the_objective_over_the_starting_gap():
    from bnnrobust.experiments.measures.exact import normalized_objective

    assert normalized_objective({"objective": -2.0, "clean_objective": -2.0}) == -1.0
    assert normalized_objective({"objective": 1.0, "clean_objective": -2.0}) == 0.5
    assert normalized_objective({"objective": 9.0, "clean_objective": -2.0}, -1.0) == -0.5


def test_grid_problems_refuse_a_budget_below_one_pixel_step():
    """ε = 0.001 gives floor(255·ε) = 0 whole steps: the grid attack, IProp on the grid,
    iterated FGSM on the grid and grid certification refuse it instead of calling every point
    robust; the continuous problem takes it."""
    rng = np.random.default_rng(0)
    ib = random_bnn(rng)
    x = rng.integers(100, 156, size=6)
    for call in (lambda: cpsat_attack(ib, x, eps=0.001, time_limit=5),
                 lambda: certify_point(ib, x, eps=0.001, backend="cpsat", time_limit=5)):
        with pytest.raises(AttackError, match="allows no whole pixel step"):
            call()
    assert certify_point(ib, x, eps=0.001, backend="highs", time_limit=5).status in (
        "robust", "attacked", "unknown")


@pytest.mark.parametrize("eps", [1.5, float("inf"), float("nan")])
def test_budgets_above_one_or_not_finite_are_refused_everywhere(eps):
    from bnnrobust.attacks import FGSM, PGD, RFGSM, AdversarialTraining

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    for make in (lambda: FGSM(model, eps=eps), lambda: PGD(model, eps=eps),
                 lambda: RFGSM(model, eps=eps), lambda: AdversarialTraining("fgsm", eps=eps),
                 lambda: MILPAttack(model, eps=eps), lambda: Certify(model, eps=eps)):
        with pytest.raises(AttackError, match="eps"):
            make()


def box_vertices(x: np.ndarray, eps: float) -> np.ndarray:
    """Every vertex of the continuous ε-box around the 8-bit input ``x``, as perturbations on
    the [0, 1] scale (one row each)."""
    lo, hi = np.maximum(-eps, -x / 255), np.minimum(eps, 1 - x / 255)
    return np.array(list(itertools.product(*zip(lo, hi, strict=True))))


def test_continuous_optimum_equals_the_gap_zero_milp_and_the_box_vertices_on_50_tiny_bnns():
    """The continuous optimum of cpsat-lp (CP-SAT master, LP reachability with the float32
    margins) against two independent references on 50 random tiny BNNs and budgets: the HiGHS
    big-M MILP solved with an optimality gap of 0 proves the same optimum, and no vertex of the
    box does better. Where at most one first-layer neuron can change sign, the best vertex *is*
    the optimum (a linear pre-activation takes its extremes at vertices, so each of the two
    sides is reached at one if at all), and is required to equal it. Certification on the same
    box agrees: a point certified robust has no other class with a non-negative optimum and
    no vertex of the box that changes its prediction; an attacked one has a counter-example
    that changes it."""
    from bnnrobust.attacks.combinatorial.cpsat import pattern_layer
    from bnnrobust.attacks.combinatorial.highs import highs_attack

    rng = np.random.default_rng(11)
    by_vertices, verdicts = 0, {"robust": 0, "attacked": 0}
    for _ in range(50):
        ib = random_bnn(rng, depth=int(rng.integers(1, 4)))
        x = rng.integers(100, 156, size=6)
        eps = float(rng.uniform(0.002, 0.03))
        ours = cpsat_attack(ib, x, eps=eps, time_limit=20, domain="continuous")
        reference = highs_attack(ib, x, eps=eps, time_limit=20, gap=0)
        assert ours.status == reference.status == "optimal"
        assert ours.objective == pytest.approx(reference.objective, abs=1e-9)
        assert np.abs(ours.perturbation).max() <= eps + 1e-12
        exact = ib.logits((x / 255 + ours.perturbation)[None])[0]
        assert ours.objective == exact[ours.target] - exact[ours.prediction]

        logits = ib.logits(x / 255 + box_vertices(x, eps))
        best_vertex = float((logits[:, ours.target] - logits[:, ours.prediction]).max())
        assert best_vertex <= ours.objective + 1e-9
        if len(pattern_layer(ib, x, eps=eps, domain="continuous").undecided) <= 1:
            assert ours.objective == pytest.approx(best_vertex, abs=1e-9)
            by_vertices += 1

        cert = certify_point(ib, x, eps=eps, backend="cpsat-lp", time_limit=20)
        verdicts[cert.status] += 1
        prediction = cert.prediction
        if cert.status == "robust":
            assert (logits.argmax(1) == prediction).all()
            for c in set(range(logits.shape[1])) - {prediction}:
                worst = cpsat_attack(ib, x, eps=eps, target=c, time_limit=20, domain="continuous")
                assert worst.status == "optimal" and worst.objective < 0
        else:
            assert cert.status == "attacked"
            assert np.abs(cert.perturbation).max() <= eps + 1e-12
            broken = ib.logits((x / 255 + cert.perturbation)[None])[0]
            assert broken[cert.target] >= broken[prediction]
    assert by_vertices >= 10, by_vertices
    assert min(verdicts.values()) >= 5, verdicts


def test_continuous_decomposition_results_hold_in_the_pytorch_model():
    """Through the attack contract (which replays every result in the float32 model and
    refuses one that does not hold), the cpsat-lp objective is the model's on the returned
    input; a point it certifies robust is not flipped by the untargeted attack, and a point
    the attack flips is not certified."""
    for seed in range(4):
        model = torch_bnn(seed)
        x = torch.full((1, 6), 128 / 255)
        y = model(x).argmax(1)
        result = MILPAttack(model, eps=0.02, backend="cpsat-lp", hint="none",
                            time_limit=20).run(x, y)
        record = result.extra["points"][0]
        with torch.no_grad():
            logits = model(result.x_adv)[0]
        assert record["status"] == "optimal"
        assert record["objective"] == pytest.approx(
            float(logits[record["target"]] - logits[record["prediction"]]), abs=1e-5)
        status = Certify(model, eps=0.02, backend="cpsat-lp", time_limit=20).run(x, y).status[0]
        broken = MILPAttack(model, eps=0.02, backend="cpsat-lp", hint="none", time_limit=20,
                            target="untargeted").run(x, y).success[0]
        assert status in ("robust", "attacked") and (status == "attacked") == bool(broken)


def test_remembered_reachability_answers_as_the_lp_does():
    """The pattern layers remember earlier checks; on random partial patterns the remembered
    answer is the fresh LP's, and a returned perturbation gives the pattern asked for."""
    from bnnrobust.attacks.combinatorial.cpsat import pattern_layer

    rng = np.random.default_rng(12)
    answered = {"infeasible": 0, "point": 0}
    for _ in range(10):
        ib = random_bnn(rng, n_in=6, width=12, depth=1)
        x = rng.integers(100, 156, size=6)
        for domain, eps in (("continuous", 0.02), ("grid", 3 / 255 + 1e-9)):
            layer = pattern_layer(ib, x, eps=eps, domain=domain)
            u = len(layer.undecided)
            if u == 0:
                continue
            for _ in range(40):
                pattern = rng.integers(0, 2, size=u)
                subset = sorted(rng.choice(u, size=int(rng.integers(1, u + 1)), replace=False))
                got = layer.reach(pattern, subset, 10.0)
                fresh = layer.solve(pattern, subset, 10.0)
                assert isinstance(got, str) == isinstance(fresh, str)
                if isinstance(got, str):
                    assert got == fresh
                    answered["infeasible"] += 1
                else:
                    a, b = layer.rows(pattern, subset)
                    assert np.all(a @ got >= b)
                    answered["point"] += 1
    assert answered["infeasible"] and answered["point"]


def test_reachable_intermediate_master_solutions_raise_the_floor_and_keep_the_optimum(
        monkeypatch):
    """When the master's optimum is unreachable, the solutions it met on the way are checked
    too: on small BNNs some of them are reachable (an improvement that raises the master's
    floor), and the answer is still the HiGHS big-M optimum, each incumbent better than the
    one before."""
    from bnnrobust.attacks.combinatorial import cpsat
    from bnnrobust.attacks.combinatorial.highs import highs_attack

    improvements = []
    search = cpsat.search

    def counting(*args, improve=None, **options):
        def counted(*found):
            improvements.append(found[2])
            return improve(*found)
        return search(*args, improve=None if improve is None else counted, **options)

    monkeypatch.setattr(cpsat, "search", counting)
    rng = np.random.default_rng(5)
    for _ in range(30):
        ib = random_bnn(rng, n_in=10, width=16, depth=2)
        x = rng.integers(100, 156, size=10)
        ours = cpsat_attack(ib, x, eps=0.02, time_limit=20, domain="continuous")
        reference = highs_attack(ib, x, eps=0.02, time_limit=20)
        assert ours.status == reference.status == "optimal"
        assert ours.objective == pytest.approx(reference.objective, abs=1e-9)
        values = [v for _, v in ours.trace]
        assert all(b > a for a, b in zip(values, values[1:], strict=False))
    assert len(improvements) >= 3


def test_climbing_ends_where_no_reachable_single_flip_is_better():
    """:func:`.cpsat.climb` from the zero perturbation, on 20 small BNNs on both problems:
    its objective is the exact forward pass's at the returned perturbation, which lies in the
    box, never below the start nor above the proven optimum; and every single-neuron flip of
    the final pattern that would be better is unreachable (a fresh exact check). The batched
    objectives of the flips are the one-at-a-time ones."""
    from bnnrobust.attacks.combinatorial.cpsat import (
        climb,
        pattern_layer,
        pattern_value,
        pattern_values,
    )
    from bnnrobust.attacks.combinatorial.problem import logits_at, resolve_target

    rng = np.random.default_rng(21)
    moved = 0
    for case in range(20):
        ib = random_bnn(rng, n_in=10, width=16, depth=2)
        x = rng.integers(100, 156, size=10)
        domain, eps = ("continuous", 0.02) if case % 2 else ("grid", 3 / 255 + 1e-9)
        first = pattern_layer(ib, x, eps=eps, domain=domain)
        prediction, target = resolve_target(logits_at(ib, x, 0, domain=domain), "second")

        def value_at(p, ib=ib, x=x, target=target, prediction=prediction, domain=domain):
            logits = logits_at(ib, x, p, domain=domain)
            return float(logits[target] - logits[prediction])

        start = np.zeros(10, np.int64 if domain == "grid" else np.float64)
        p, value, moves = climb(ib, first, start, value_at(start), target=target,
                                prediction=prediction, value_at=value_at,
                                deadline=time.perf_counter() + 20)
        moved += moves > 0
        assert value == value_at(p) >= value_at(start)
        assert np.all(first.lo <= p) and np.all(p <= first.hi)
        optimum = cpsat_attack(ib, x, eps=eps, time_limit=20, domain=domain)
        assert optimum.status == "optimal" and value <= optimum.objective
        pattern = (first.weight @ p >= first.need).astype(np.int64)
        flips = np.repeat(pattern[None], len(pattern), axis=0) ^ np.eye(len(pattern), dtype=int)
        batched = pattern_values(ib, first, flips, target, prediction, chunk=3)
        for flip, batch_value in zip(flips, batched, strict=True):
            single = pattern_value(ib, first, flip, target, prediction)
            assert batch_value == pytest.approx(single, abs=1e-9)
            if single > value:
                assert first.solve(flip, range(len(flip)), 10.0) == "infeasible"
    assert moved >= 5


def test_a_search_out_of_time_leaves_the_climb_its_share(monkeypatch):
    """When the search ends without a proof (here: made to return at once), the attack
    climbs from its incumbent in the time kept for it: the objective is the climb's, the
    trace records it; with ``climbing=0`` the incumbent stays; a share outside [0, 1] is
    refused."""
    from bnnrobust.attacks.combinatorial import cpsat

    deadlines = []

    def out_of_time(*args, deadline, **options):
        deadlines.append(deadline)
        return cpsat.PatternSearch("timeout")

    monkeypatch.setattr(cpsat, "search", out_of_time)
    rng = np.random.default_rng(22)
    climbed = 0
    for _ in range(10):
        ib = random_bnn(rng, n_in=10, width=16, depth=2)
        x = rng.integers(100, 156, size=10)
        begin = time.perf_counter()
        kept = cpsat_attack(ib, x, eps=0.02, time_limit=20, domain="continuous", climbing=0)
        assert deadlines[-1] >= begin + 20
        begin = time.perf_counter()
        result = cpsat_attack(ib, x, eps=0.02, time_limit=20, domain="continuous")
        assert begin + 18 <= deadlines[-1] <= time.perf_counter() + 18  # 10 % kept
        assert result.status == kept.status == "timeout"
        assert len(kept.trace) == 1 and result.objective >= kept.objective
        if result.objective > kept.objective:
            climbed += 1
            assert result.trace[-1][1] == result.objective
    assert climbed >= 3
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(AttackError, match="climbing"):
            cpsat_attack(ib, x, eps=0.02, time_limit=5, domain="continuous", climbing=bad)
