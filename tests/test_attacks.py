"""White-box attacks: closed forms on linear models, the contract (modes, seeds, targets,
budgets), EOT and BPDA, and each bad-parameter error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnrobust.attacks import BIM, CWL2, FGSM, JSMA, PGD, RFGSM, AttackError, bpda_mode
from bnnrobust.data import InputQuantizer
from bnnrobust.models import build
from bnnrobust.nn import seeded


def linear2(d: int = 10, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, 2)


def inner_inputs(n: int, d: int, margin: float = 0.35, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return margin + (1 - 2 * margin) * torch.rand(n, d, generator=g)


def test_fgsm_closed_form_on_linear_model():
    model = linear2()
    x = inner_inputs(16, 10)
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    x_adv = FGSM(model, eps=0.25)(x, y)
    w = model.weight.detach()
    expected = 0.25 * torch.sign(w[1 - y] - w[y])  # ascend CE: towards the other class
    assert torch.allclose(x_adv - x, expected, atol=1e-7)


def test_targeted_fgsm_closed_form():
    model = linear2()
    x = inner_inputs(8, 10)
    y = torch.zeros(8, dtype=torch.long)
    x_adv = FGSM(model, eps=0.1)(x, y, target=torch.ones(8, dtype=torch.long))
    w = model.weight.detach()
    assert torch.allclose(x_adv - x, 0.1 * torch.sign(w[1] - w[0]).expand(8, -1), atol=1e-7)


def test_margin_loss_fgsm_closed_form_on_a_saturated_linear_model():
    # Logits so large that the softmax saturates in float32: the CE gradient vanishes for
    # correctly classified inputs, the logit margin's does not (Galloway et al.'s model B).
    torch.manual_seed(3)
    model = nn.Linear(10, 4)
    with torch.no_grad():
        model.weight.mul_(1e4)
    x = inner_inputs(16, 10)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    runner_up = logits.topk(2, dim=1).indices[:, 1]
    w = model.weight.detach()
    x_adv = FGSM(model, eps=0.05, loss="margin")(x, y)
    assert torch.allclose(x_adv - x, 0.05 * torch.sign(w[runner_up] - w[y]), atol=1e-7)
    assert torch.equal(FGSM(model, eps=0.05)(x, y), x)  # CE: zero gradient, no move
    target = (y + 1) % 4  # targeted: ascend z_t - max_{j != t} z_j
    best_other = logits.masked_fill(torch.nn.functional.one_hot(target, 4).bool(),
                                    -float("inf")).argmax(1)
    x_t = FGSM(model, eps=0.05, loss="margin")(x, y, target=target)
    assert torch.allclose(x_t - x, 0.05 * torch.sign(w[target] - w[best_other]), atol=1e-7)


def test_temperature_divides_the_logits_before_the_loss():
    # Closed form: the CE gradient w.r.t. x of CE(z / T, y) on a linear model is
    # (softmax(z / T) - onehot(y)) @ W / T; a tiny T on a saturated model still sees the
    # direction the softmax at T = 1 hides (Galloway et al. 2018, Figure 5).
    torch.manual_seed(3)
    model = nn.Linear(6, 3)
    x = inner_inputs(5, 6)
    y = torch.tensor([0, 1, 2, 0, 1])
    w = model.weight.detach()
    for t in (0.5, 1.0, 4.0):
        with torch.no_grad():
            p = torch.softmax(model(x) / t, dim=1)
        expected = (p - nn.functional.one_hot(y, 3).float()) @ w / t / len(x)
        got = FGSM(model, eps=0.1, temperature=t).input_gradient(x, y)
        assert torch.allclose(got, expected, atol=1e-6)
    assert FGSM(model, temperature=2.0).settings()["temperature"] == 2.0


def test_input_gradient_is_the_attack_direction_and_restores_the_model():
    model = build("galloway-cnn", width=4, precision="stochastic")
    model.train()
    x, y = torch.rand(3, 1, 28, 28) * 0.5 + 0.25, torch.tensor([0, 1, 2])
    trained = [p.requires_grad for p in model.parameters()]  # batch norms' γ is not trained
    assert any(trained) and not all(trained)
    atk = FGSM(model, eps=0.1, seed=7)
    direction = atk.input_gradient(x, y).sign()
    assert torch.allclose(atk(x, y), (x + 0.1 * direction).clamp(0, 1), atol=1e-7)
    assert model.training and [p.requires_grad for p in model.parameters()] == trained


def test_cw_finds_near_minimal_l2_on_linear_model():
    model = linear2(20)
    x = inner_inputs(12, 20, margin=0.3)
    y = model(x).argmax(1)
    w, b = model.weight.detach(), model.bias.detach()
    dw = w[1 - y] - w[y]
    gap = (x * -dw).sum(1) - (b[1 - y] - b[y])  # how far the other logit is behind
    minimal = gap / dw.norm(dim=1)  # distance to the decision hyperplane
    result = CWL2(model, c=1.0, steps=300, lr=0.01, binary_search_steps=8).run(x, y)
    assert result.success.all()
    assert (result.l2 >= minimal - 1e-4).all()
    assert (result.l2 <= minimal * 1.1 + 1e-3).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box(norm):
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=4)
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    eps = 0.2 if norm == "linf" else 1.5
    result = PGD(model, eps=eps, alpha=eps / 4, steps=10, norm=norm, restarts=2).run(x, y)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    bound = result.linf if norm == "linf" else result.l2
    assert (bound <= eps + 1e-5).all()


def test_bim_and_rfgsm_budgets():
    torch.manual_seed(0)
    model = build("fc-bnn", width=16)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    assert (BIM(model, eps=0.1, steps=5).run(x, y).linf <= 0.1 + 1e-6).all()
    assert (RFGSM(model, eps=0.1).run(x, y).linf <= 0.1 + 1e-6).all()
    # alpha = 0: R-FGSM is FGSM
    assert torch.equal(RFGSM(model, eps=0.1, alpha=0.0)(x, y), FGSM(model, eps=0.1)(x, y))


def test_per_sample_eps():
    model = linear2()
    x, y = inner_inputs(3, 10), torch.tensor([0, 1, 0])
    eps = torch.tensor([0.0, 0.1, 0.2])
    r = FGSM(model, eps=eps).run(x, y)
    assert torch.allclose(r.linf, eps, atol=1e-6)


def test_jsma_reaches_target_with_few_pixels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(6, 16) * 0.5
    y = model(x).argmax(1)
    target = (y + 1) % 3
    result = JSMA(model, theta=1.0, gamma=0.5)(x, y, target=target)
    changed = (result - x).abs() > 0
    assert (changed.sum(1) <= 8).all() and (changed.sum(1) % 2 == 0).all()
    assert torch.all(result[changed] == 1.0)  # theta = +1 saturates the chosen pixels
    assert (model(result).argmax(1) == target).float().mean() >= 0.5


def test_attack_restores_mode_parameters_and_grad_flags():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="scaled", width=4)
    model.train()
    model.body[1].eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]  # batch norms' γ is not trained
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    for atk in (FGSM(model), PGD(model, steps=2), CWL2(model, steps=3, binary_search_steps=1)):
        out = atk(x, y)
        assert out.device == x.device
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and any(flags)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attack_runs_on_the_model_device():
    model = build("galloway-cnn", precision="stochastic", width=4).cuda()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    result = PGD(model, steps=2, eot_samples=2).run(x, y)
    assert result.x_adv.device.type == "cpu" and result.success.device.type == "cpu"
    assert PGD(model, steps=2).run(x.cuda(), y.cuda()).x_adv.device.type == "cuda"


def test_deterministic_under_seed():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="stochastic", width=4)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    a = PGD(model, steps=3, seed=1, eot_samples=2)(x, y)
    b = PGD(model, steps=3, seed=1, eot_samples=2)(x, y)
    c = PGD(model, steps=3, seed=2, eot_samples=2)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eot_gradient_is_mean_of_single_pass_gradients():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="stochastic", width=4).eval()
    x, y = torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,))
    eot = FGSM(model, eot_samples=5)
    single = FGSM(model, eot_samples=1)
    with seeded(model, 11):
        grad_eot = eot.gradient(x, y, None).grad
    with seeded(model, 11):
        grads = [single.gradient(x, y, None).grad for _ in range(5)]
    assert torch.allclose(grad_eot, torch.stack(grads).mean(0), atol=1e-6)
    assert not torch.allclose(grads[0], grads[1])  # the passes really differ


def test_eot_on_a_deterministic_model_is_one_pass_with_the_same_result():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="binary", width=4).eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,))
    assert FGSM(model, eot_samples=10).eot_passes == 1
    eot = FGSM(model, eot_samples=10).gradient(x, y, None).grad
    assert len(calls) == 1
    assert torch.equal(eot, FGSM(model).gradient(x, y, None).grad)
    stochastic = build("galloway-cnn", precision="stochastic", width=4)
    assert FGSM(stochastic, eot_samples=10).eot_passes == 10


def test_bpda_uses_the_declared_surrogate():
    torch.manual_seed(0)
    model = build("fcn", width=16, precision="full", input_bits=2).eval()
    x = torch.rand(4, 1, 28, 28) * 0.9 + 0.05
    y = torch.randint(0, 10, (4,))
    plain = FGSM(model, eps=0.1)(x, y)
    assert torch.equal(plain, x)  # floor has no gradient: FGSM cannot move
    adaptive = FGSM(model, eps=0.1, bpda=True).run(x, y)
    assert (adaptive.linf > 0.09).all()
    with bpda_mode(model) as wrapped, torch.no_grad():
        assert wrapped == 1
        assert torch.equal(model(x), model.body(InputQuantizer(2)(x)))  # forward unchanged


def test_target_rules():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=4).eval()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    logits = model(x)
    second = FGSM(model, eps=0.01, target="second").run(x, y).target
    assert torch.equal(second, logits.topk(2, 1).indices[:, 1])
    assert torch.equal(FGSM(model, target="least_likely").run(x, y).target, logits.argmin(1))
    r1 = FGSM(model, target="random", seed=3).run(x, y).target
    r2 = FGSM(model, target="random", seed=3).run(x, y).target
    assert torch.equal(r1, r2) and not (r1 == y).any()


BAD = [
    (lambda m: FGSM(m, eps=-0.1), "eps must be a finite number >= 0"),
    (lambda m: FGSM(m, eps=float("nan")), "eps must be a finite number"),
    (lambda m: PGD(m, steps=0), "steps must be an integer >= 1"),
    (lambda m: PGD(m, alpha=0), "alpha must be a finite number > 0"),
    (lambda m: PGD(m, norm="l1"), "expected one of linf, l2"),
    (lambda m: PGD(m, restarts=0), "restarts must be an integer >= 1"),
    (lambda m: FGSM(m, target="nearest"), "unknown target rule"),
    (lambda m: FGSM(m, eot_samples=0), "eot_samples must be an integer >= 1"),
    (lambda m: RFGSM(m, eps=0.1, alpha=0.2), "alpha .* must not exceed eps"),
    (lambda m: CWL2(m, c=0), "c must be a finite number > 0"),
    (lambda m: CWL2(m, record_at=[10], binary_search_steps=2), "record_at needs"),
    (lambda m: CWL2(m, steps=50, record_at=[100], binary_search_steps=1), "beyond steps"),
    (lambda m: JSMA(m, target=None), "JSMA is a targeted attack"),
    (lambda m: JSMA(m, gamma=1.5), "gamma is a fraction"),
    (lambda m: JSMA(m, theta=0), "theta must be a non-zero number"),
    (lambda m: FGSM("not a model"), "model must be a torch.nn.Module"),
    (lambda m: PGD(m, loss="hinge"), "unknown loss 'hinge'; expected one of ce, margin"),
    (lambda m: CWL2(m, loss="margin"), "cw has no parameter 'loss'; valid parameters: "),
    (lambda m: FGSM(m, temperature=0), "temperature must be a finite number > 0"),
    (lambda m: CWL2(m, temperature=0.5), "cw has no parameter 'temperature'"),
    (lambda m: PGD(m, epsilon=0.3), "pgd has no parameter 'epsilon'; valid parameters: alpha, "),
    (lambda m: FGSM(m, bpda=1), "bpda must be true or false"),
]


@pytest.mark.parametrize(("make", "message"), BAD)
def test_bad_parameters(make, message):
    with pytest.raises(AttackError, match=message):
        make(build("fc-bnn", width=8))


def test_bad_inputs():
    model = build("galloway-cnn", width=4)
    atk = FGSM(model)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(AttackError, match=r"must lie in \[0, 1\]"):
        atk(x * 2, y)
    with pytest.raises(AttackError, match="3×32×32 but the model takes 1×28×28"):
        atk(torch.rand(2, 3, 32, 32), y)
    with pytest.raises(AttackError, match="one label per input"):
        atk(x, torch.tensor([0]))
    with pytest.raises(AttackError, match="target equals the true label for input"):
        atk(x, y, target=torch.tensor([0, 2]))
    with pytest.raises(AttackError, match="per-sample eps has 3 values for 2 inputs"):
        FGSM(model, eps=torch.tensor([0.1, 0.1, 0.1]))(x, y)
    with pytest.raises(AttackError, match="floating point"):
        atk(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), y)


def test_result_norms():
    model = linear2()
    x, y = inner_inputs(4, 10), torch.tensor([0, 1, 0, 1])
    r = FGSM(model, eps=0.1).run(x, y)
    assert torch.equal(r.l0, torch.full((4,), 10))
    assert torch.allclose(r.l2, torch.full((4,), 0.1 * 10 ** 0.5))
    assert r.settings["attack"] == "fgsm" and r.settings["eps"] == 0.1 and r.seconds > 0
    assert r.success.dtype == torch.bool and 0 <= r.success_rate <= 1
    assert torch.equal(r.success, model(r.x_adv).argmax(1) != y)


def test_fgsm_zero_eps_changes_nothing():
    model = linear2()
    x, y = inner_inputs(4, 10), torch.tensor([0, 1, 0, 1])
    assert torch.equal(FGSM(model, eps=0.0)(x, y), x)


def test_cw_uses_eot_passes():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="stochastic", width=4)
    x, y = torch.rand(2, 1, 28, 28), torch.randint(0, 10, (2,))
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    CWL2(model, steps=3, binary_search_steps=1, abort_early=False, eot_samples=4)(x, y)
    handle.remove()
    assert len(calls) == 3 * 4  # every iteration averages 4 passes


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "rfgsm", "cw", "jsma"])
def test_every_gradient_attack_refuses_non_finite_inputs(name):
    from bnnrobust.attacks.catalogue import entry

    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=4)
    x = torch.rand(2, 1, 28, 28)
    x[1, 0, 5, 5] = float("nan")
    attack = entry(name).make(model, {})
    with pytest.raises(AttackError, match="NaN or infinite"):
        attack.run(x, torch.tensor([1, 2]))
    x[1, 0, 5, 5] = float("inf")
    with pytest.raises(AttackError, match="NaN or infinite"):
        attack.run(x, torch.tensor([1, 2]))
