"""Evaluation tables, worst case, CW curve, diagnostics and the adversarial-training hook."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnnrobust.attacks import FGSM, PGD, AdversarialTraining, AttackError, random_eps
from bnnrobust.data import load
from bnnrobust.evaluate import (
    Row,
    accuracy_under_attack,
    cw_accuracy_curve,
    diagnose,
    expand_targets,
    worst_case,
)
from bnnrobust.evaluate.diagnostics import iterative_vs_single_step, softmax_saturation
from bnnrobust.models import build
from bnnrobust.train import TrainRequest, correct, fit, train_cached


@pytest.fixture
def small_model(fake_mnist):
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=8)
    fit(model, load("mnist", "train"), epochs=3, batch_size=32, progress=False)
    x, y = load("mnist", "test", limit=40)
    return model.eval(), x, y


def test_accuracy_over_eps(small_model):
    model, x, y = small_model
    rows = accuracy_under_attack(model, x, y, attack="fgsm", eps=[0.0, 0.1, 0.3])
    assert [r.eps for r in rows] == [0.0, 0.1, 0.3] and all(r.n == 40 for r in rows)
    assert rows[0].success_rate <= 1 - rows[0].accuracy + 1e-9
    assert rows[-1].accuracy <= rows[0].accuracy
    assert rows[1].settings["eps"] == 0.1 and rows[1].attack == "fgsm"


def test_worst_case_is_the_per_point_intersection(small_model):
    model, x, y = small_model
    fgsm, pgd = FGSM(model, eps=0.1), PGD(model, eps=0.1, steps=5)
    wc = worst_case(model, x, y, [fgsm, pgd])
    assert wc.accuracy <= min(wc.per_attack_accuracy.values()) + 1e-9
    assert len(wc.robust) == 40 and set(wc.robust.tolist()) <= {0.0, 1.0}
    by_hand = correct(model(x), y)
    for atk in (fgsm, pgd):
        by_hand &= correct(model(atk(x, y)), y)
    assert torch.equal(wc.robust.bool(), by_hand)
    # a result computed once counts only within the budget
    shared = pgd.run(x, y)
    assert worst_case(model, x, y, {"pgd": shared}, budget=0.05).accuracy == \
        pytest.approx(wc.clean.mean().item())


def test_worst_case_of_a_random_model_is_the_fraction_of_passes_correct():
    from bnnrobust.models import build
    from bnnrobust.train import accuracy

    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="stochastic")
    x, y = torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,))
    wc = worst_case(model, x, y, {}, passes=4)
    assert wc.accuracy == pytest.approx(accuracy(model, x, y, passes=4))
    assert ((wc.robust * 4) == (wc.robust * 4).round()).all()


def test_expand_targets():
    x = torch.rand(2, 1, 2, 2)
    xr, yr, t = expand_targets(x, torch.tensor([0, 3]), 4)
    assert yr.tolist() == [0, 0, 0, 3, 3, 3] and t.tolist() == [1, 2, 3, 0, 1, 2]
    assert torch.equal(xr[3], x[1])


def test_cw_curve_is_monotone(small_model):
    model, x, y = small_model
    curve = cw_accuracy_curve(model, x[:10], y[:10], iterations=[2, 5, 20])
    accs = [c["accuracy"] for c in curve]
    assert [c["iterations"] for c in curve] == [2, 5, 20]
    assert accs == sorted(accs, reverse=True)


def test_iterative_weaker_flag():
    rows = [Row("fgsm", 0.3, 0.10, 0.9, None, 10, 0.0, {}),
            Row("pgd", 0.3, 0.50, 0.5, None, 10, 0.0, {})]
    assert iterative_vs_single_step(rows).raised
    rows[1] = Row("pgd", 0.3, 0.0, 1.0, None, 10, 0.0, {})
    assert not iterative_vs_single_step(rows).raised


def test_saturated_softmax_flag():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    loud = nn.Sequential(base, nn.Identity())
    with torch.no_grad():
        base[1].weight.mul_(1000)
    x = torch.rand(20, 4)
    assert softmax_saturation(loud, x).raised
    with torch.no_grad():
        base[1].weight.div_(1000)
    assert not softmax_saturation(loud, x).raised


def test_diagnose_quantized_and_stochastic_models():
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    quant = build("fcn", width=16, precision="full", input_bits=2).eval()
    flags = {f.name: f for f in diagnose(quant, x, y, eps=0.3)}
    assert flags["non_differentiable_input_without_bpda"].raised
    assert flags["zero_or_nonfinite_gradients"].raised
    assert not {f.name: f for f in diagnose(quant, x, y, bpda=True)}[
        "non_differentiable_input_without_bpda"].raised
    stoch = build("galloway-cnn", precision="stochastic", width=4).eval()
    assert {f.name: f for f in diagnose(stoch, x, y)}["random_outputs_without_eot"].raised
    assert not {f.name: f for f in diagnose(stoch, x, y, eot_samples=4)}[
        "random_outputs_without_eot"].raised
    for flag in flags.values():
        assert flag.explanation.endswith(".") and flag.as_dict()["name"] == flag.name


def test_random_eps_distribution_text_and_code():
    """σ: the paper's text (ceil(0.3·255/2)/255 ≈ 0.153, |N(0, σ)| truncated at 2σ) or the
    authors' code (``int(ceil((0.3·255) // 2))`` = 38 on [0, 1] inputs, capped at 1, where FGSM
    saturates anyway): then ε < 1 only when |Z| < 1/38."""
    sigma = math.ceil(0.3 * 255 / 2) / 255
    eps = random_eps(20000, 0.3, torch.Generator().manual_seed(0), sigma="text")
    assert eps.min() >= 0 and eps.max() <= 2 * sigma + 1e-4
    # E|Z| for Z ~ N(0, 1) truncated to [-2, 2]: sqrt(2/π)(1 - e^-2) / erf(√2) ≈ 0.7228
    expected = math.sqrt(2 / math.pi) * (1 - math.exp(-2)) / math.erf(math.sqrt(2))
    assert abs(eps.mean().item() / sigma - expected) < 0.01
    code = random_eps(20000, 0.3, torch.Generator().manual_seed(0), sigma="code")
    assert code.max() == 1.0 and code.min() >= 0
    below = math.erf(1 / (38 * math.sqrt(2))) / math.erf(math.sqrt(2))  # P(38|Z| < 1) ≈ 0.022
    assert abs((code < 1).float().mean().item() - below) < 0.005


def test_adversarial_hook_schedule_and_labels():
    torch.manual_seed(0)
    model = build("fc-bnn", width=16).eval()
    hook = AdversarialTraining("pgd", eps=0.1, steps=2, start_epoch=1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    assert len(hook(model, x, y, epoch=0)) == 1
    (xc, yc), (xa, ya) = hook(model, x, y, epoch=1)
    assert torch.equal(xc, x) and torch.equal(yc, y)
    assert (xa - x).abs().max() <= 0.1 + 1e-6
    assert torch.equal(ya, y)  # Galloway et al.'s code: the true label in both loss terms
    assert hook.config()["steps"] == 2


def test_adversarial_training_labels_which_label_enters_which_term():
    """Crafted against the prediction, scored with the true label (the authors' code); the
    other readings as options."""
    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="binary").eval()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert not torch.equal(predicted, y)
    options = {"eps": 0.1, "crafting_bn": "running", "seed": 3}
    seed = int(torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(3)))
    code = AdversarialTraining("fgsm", **options)
    (_, y_clean), (x_adv, y_adv) = code(model, x, y, epoch=0)
    assert torch.equal(y_clean, y) and torch.equal(y_adv, y)
    assert torch.equal(x_adv, FGSM(model, eps=0.1, seed=seed)(x, predicted))
    other = AdversarialTraining("fgsm", loss_label="predicted", **options)
    assert torch.equal(other(model, x, y, epoch=0)[1][1], predicted)
    leaking = AdversarialTraining("fgsm", label="true", **options)
    assert torch.equal(leaking(model, x, y, epoch=0)[1][0], FGSM(model, eps=0.1, seed=seed)(x, y))
    assert code.config() != other.config() != leaking.config()


def test_adversarial_examples_are_crafted_with_batch_statistics():
    """The authors craft in training mode (batch norm on the batch's statistics); the running
    statistics are not changed by crafting."""
    torch.manual_seed(1)
    model = build("galloway-cnn", width=4, precision="binary").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.7)
            m.running_var.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    batch = AdversarialTraining("fgsm", eps=0.1, seed=2)(model, x, y, epoch=0)[1][0]
    running = AdversarialTraining("fgsm", eps=0.1, seed=2, crafting_bn="running")(
        model, x, y, epoch=0)[1][0]
    assert not torch.equal(batch, running)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "cw"}, "expected one of fgsm, fgsm-random, pgd, rfgsm"),
    ({"kind": "pgd", "label": "leak"}, "label must be one of"),
    ({"kind": "pgd", "loss_label": "leak"}, "loss_label must be one of predicted, true"),
    ({"kind": "fgsm", "crafting_bn": "train"}, "crafting_bn must be one of batch, running"),
    ({"kind": "fgsm-random", "sigma": "paper"}, "sigma must be one of code, text"),
    ({"kind": "pgd", "start_epoch": -1}, "start_epoch must be an integer >= 0"),
    ({"kind": "fgsm", "fresh_optimizer": "yes"}, "fresh_optimizer must be true or false"),
    ({"kind": "fgsm", "running_stats": "tf"}, "running_stats must be one of loss, mnist-attack"),
    ({"kind": "fgsm", "running_stats": "mnist-attack"}, "trains with fgsm-random or pgd"),
    ({"kind": "pgd", "running_stats": "mnist-attack", "label": "true"}, "label 'true'"),
    ({"kind": "fgsm-random", "running_stats": "blackbox"}, "blackbox.py, which trains with fgsm "
                                                           "or pgd"),
    ({"kind": "pgd", "running_stats": "blackbox", "crafting_bn": "running"},
     "crafting_bn 'running'"),
    ({"kind": "pgd", "running_stats": "mnist-attack", "start_epoch": 2, "epochs": 2},
     "needs the number of training epochs"),
    ({"kind": "fgsm", "eps": 0}, "eps must be a finite number > 0"),
])
def test_adversarial_hook_errors(kwargs, message):
    kind = kwargs.pop("kind")
    with pytest.raises(AttackError, match=message):
        AdversarialTraining(kind, **kwargs)


def test_adversarial_training_through_the_cache(fake_mnist):
    hook = AdversarialTraining("rfgsm", eps=0.3, start_epoch=1)
    request = TrainRequest("fc-bnn", {"width": 16}, "mnist", epochs=2, hook=hook.config())
    result = train_cached(request, batch_hook=hook, progress=False)
    assert not result.hit
    clean = TrainRequest("fc-bnn", {"width": 16}, "mnist", epochs=2)
    assert clean.key() != request.key()


def test_adversarial_epochs_start_with_a_fresh_optimizer_as_the_authors_code():
    """mnist_attack.py calls model_train a second time for the adversarial epochs, with a new
    Adam: the hook's configuration (the cache key) asks the loop to clear the optimizer's
    state at start_epoch; from the first epoch, or with fresh_optimizer=False, nothing is
    cleared."""
    assert AdversarialTraining("fgsm", start_epoch=10).config()["restart_optimizer_at"] == 10
    assert "restart_optimizer_at" not in AdversarialTraining("fgsm").config()
    kept = AdversarialTraining("fgsm", start_epoch=10, fresh_optimizer=False).config()
    assert "restart_optimizer_at" not in kept


def test_recorded_passes_move_running_statistics_as_training_mode_passes_do():
    from bnnrobust.attacks.adversarial_training import (
        recorded_batch_statistics,
        update_running_statistics,
    )

    torch.manual_seed(0)
    trained = build("galloway-cnn", width=4, precision="binary")
    copied = build("galloway-cnn", width=4, precision="binary")
    copied.load_state_dict(trained.state_dict())
    batches = [torch.rand(8, 1, 28, 28) * s for s in (1.0, 0.5, 0.9)]
    with torch.no_grad():
        trained.train()
        for xb in batches:
            trained(xb)
        copied.eval()
        with recorded_batch_statistics(copied) as passes:
            for xb in batches:
                copied(xb)
    assert len(passes) == 2 * len(batches)  # two batch norms a pass
    with torch.no_grad():  # record=False: the same batch-statistics passes, nothing recorded
        with recorded_batch_statistics(copied) as _:
            recorded_out = copied(batches[0])
        with recorded_batch_statistics(copied, record=False) as unrecorded:
            unrecorded_out = copied(batches[0])
        running_out = copied(batches[0])
    assert unrecorded == [] and torch.equal(unrecorded_out, recorded_out)
    assert not torch.allclose(unrecorded_out, running_out)
    update_running_statistics(passes)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(copied.state_dict()[key], value)


def _tracked(model):
    return [int(m.num_batches_tracked) for m in model.modules()
            if isinstance(m, torch.nn.BatchNorm2d)]


def _updates(model, x, y, calls):
    """Per ``(hook, epoch)`` call, how many times each batch norm's running statistics moved."""
    counts = []
    for hook, epoch in calls:
        before = _tracked(model)
        hook(model, x, y, epoch=epoch)
        counts.append([a - b for a, b in zip(_tracked(model), before, strict=True)])
    return counts


def test_mnist_attack_running_statistics_move_with_every_pass_of_the_tf_graph():
    """fgsm-random: label guess and FGSM pass, then the evaluation FGSM's guess, pass and
    forward (5 a batch, every adversarial epoch); pgd: two guesses and one pass an iterate,
    and in the last epoch the evaluation PGD-40's 2 + 40 + 1; "loss": none."""
    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="binary").train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pgd = AdversarialTraining("pgd", steps=3, start_epoch=1, epochs=3,
                              running_stats="mnist-attack")
    counts = _updates(model, x, y, [
        (AdversarialTraining("fgsm-random", running_stats="mnist-attack"), 0),
        (AdversarialTraining("fgsm-random"), 0), (pgd, 1), (pgd, 2)])
    assert counts == [[5, 5], [0, 0], [5, 5], [48, 48]]
    assert model.training
    # without batch norm nothing would move: no evaluation attack (nor its seed) at all
    full = build("galloway-cnn", width=4, precision="full").train()
    plain, graph = (AdversarialTraining("fgsm-random", running_stats=r)
                    for r in ("loss", "mnist-attack"))
    assert torch.equal(graph(full, x, y, epoch=0)[1][0], plain(full, x, y, epoch=0)[1][0])
    assert torch.equal(graph.generator.get_state(), plain.generator.get_state())
    config = AdversarialTraining("pgd", start_epoch=1, epochs=3,
                                 running_stats="mnist-attack").config()
    assert config["running_stats"] == "mnist-attack" and config["epochs"] == 3
    assert "epochs" not in AdversarialTraining("pgd", epochs=3).config()


def test_blackbox_running_statistics_move_with_the_crafting_passes_only():
    """mnist_blackbox.py / cifar10_blackbox.py build no evaluation attack: fgsm's label guess
    and gradient pass (2 a batch), pgd's two guesses and one pass an iterate, in every
    adversarial epoch, the last one included."""
    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="binary").train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pgd = AdversarialTraining("pgd", steps=3, start_epoch=1, epochs=3, running_stats="blackbox")
    counts = _updates(model, x, y, [
        (AdversarialTraining("fgsm", running_stats="blackbox"), 0), (pgd, 1), (pgd, 2)])
    assert counts == [[2, 2], [5, 5], [5, 5]]
    config = AdversarialTraining("pgd", running_stats="blackbox").config()
    assert config["running_stats"] == "blackbox" and "epochs" not in config


def test_the_cache_clears_the_optimizer_where_the_hook_says(fake_mnist, monkeypatch):
    import bnnrobust.train.cache as cache

    seen = []
    real_fit = cache.fit

    def spy(*args, **kwargs):
        seen.append(kwargs["restart_optimizer_at"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(cache, "fit", spy)
    for fresh in (True, False):
        hook = AdversarialTraining("fgsm", eps=0.1, start_epoch=1, fresh_optimizer=fresh)
        request = TrainRequest("fc-bnn", {"width": 8}, "mnist", epochs=2, train_limit=64,
                               hook=hook.config())
        train_cached(request, batch_hook=hook, progress=False)
    assert seen == [1, None]


def test_fgsm_random_training_crafts_with_the_codes_sigma():
    """The authors' σ = 38 draws budgets far above 1; crafting with them works and matches
    FGSM at ε = 1 wherever a draw reached 1."""
    torch.manual_seed(0)
    model = build("fc-bnn", width=16).eval()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    hook = AdversarialTraining("fgsm-random", eps=0.3, seed=0)
    pairs = hook(model, x, y, epoch=0)
    x_adv = pairs[1][0]
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    saturated = ((x_adv == 0) | (x_adv == 1) | (x_adv == x)).float().mean().item()
    assert saturated > 0.9  # almost every draw is >= 1: pixels go to 0 or 1 (or keep a 0 gradient)


def test_unclipped_start_pgd_is_cleverhans_madryetal():
    """CleverHans 2.0 MadryEtAl, written out: eta = U(-eps, eps); each step takes the gradient
    of the mean CE at x + eta (unclipped the first time), steps by alpha·sign, clips to [0, 1]
    and eta to [-eps, eps]. Same noise (the attack's seeded generator), same iterates."""
    from bnnrobust.attacks.adversarial_training import UnclippedStartPGD

    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="full").eval()
    x = torch.rand(6, 1, 28, 28) * (torch.rand(6, 1, 28, 28) > 0.5)  # zeros: starts below 0
    y = torch.randint(0, 10, (6,))
    eps, alpha, steps, seed = 0.3, 0.01, 5, 7
    seen = []
    handle = model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    ours = UnclippedStartPGD(model, eps=eps, alpha=alpha, steps=steps, seed=seed)(x, y)
    handle.remove()
    assert seen[0].min() < 0  # the first gradient is taken outside [0, 1]

    generator = torch.Generator().manual_seed(seed)
    eta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    for _ in range(steps):
        adv = (x + eta).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(adv), y)
        grad, = torch.autograd.grad(loss, adv)
        adv = (adv + alpha * grad.sign()).clamp(0, 1)
        eta = (adv - x).clamp(-eps, eps)
    torch.testing.assert_close(ours, x + eta, rtol=0, atol=1e-6)
    clipped = PGD(model, eps=eps, alpha=alpha, steps=steps, seed=seed)(x, y)
    assert not torch.equal(clipped, ours)


def test_pgd_training_start_follows_the_option():
    hook = AdversarialTraining("pgd", steps=2)
    assert hook.config()["pgd_start"] == "unclipped"
    assert type(hook._attack(torch.nn.Identity(), 1, bpda=False)).__name__ == "UnclippedStartPGD"
    clipped = AdversarialTraining("pgd", steps=2, pgd_start="clipped")
    assert type(clipped._attack(torch.nn.Identity(), 1, bpda=False)) is PGD
    with pytest.raises(AttackError, match="pgd_start must be one of unclipped, clipped"):
        AdversarialTraining("pgd", pgd_start="madry")
