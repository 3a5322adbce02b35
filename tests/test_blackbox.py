"""The Papernot substitute attack: Jacobian augmentation by hand, the label-only oracle and
its query counter, determinism, substitute training against a plain function, the attack's
contract (run, fit, fitted), and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnrobust.attacks import AttackError, Oracle, blackbox_attack, jacobian_augmentation
from bnnrobust.attacks.blackbox import SubstituteAttack, train_substitute
from bnnrobust.data import load
from bnnrobust.evaluate import transfer_vs_white_box
from bnnrobust.models import build


def test_jacobian_augmentation_on_linear_substitute():
    torch.manual_seed(0)
    sub = nn.Linear(4, 3)
    x = torch.tensor([[0.5, 0.2, 0.9, 0.4], [0.1, 0.6, 0.3, 0.7]])
    labels = torch.tensor([2, 0])
    w, b = sub.weight.detach(), sub.bias.detach()
    p = (x @ w.T + b).softmax(1)
    # ∂p_y/∂x = p_y (W_y − Σ_j p_j W_j)
    grad = torch.stack([p[i, labels[i]] * (w[labels[i]] - p[i] @ w) for i in range(2)])
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    assert torch.allclose(jacobian_augmentation(sub, x, labels, 0.1), expected)


def test_oracle_answers_labels_and_counts():
    torch.manual_seed(0)
    model = build("fc-bnn", width=8)
    oracle = Oracle(model, device="cpu")
    labels = oracle(torch.rand(7, 1, 28, 28))
    assert labels.dtype == torch.int64 and labels.shape == (7,)
    oracle(torch.rand(3, 1, 28, 28))
    assert oracle.queries == 10
    assert model.training  # the oracle leaves the model's mode alone
    with pytest.raises(AttackError, match=r"takes inputs of shape \(1, 28, 28\)"):
        oracle(torch.rand(2, 3, 32, 32))


def _function_oracle(x: torch.Tensor) -> torch.Tensor:
    """A labeller that is only a Python function: class = brightest third of the image."""
    flat = x.flatten(1)
    return torch.stack([flat[:, :261].mean(1), flat[:, 261:522].mean(1),
                        flat[:, 522:].mean(1)]).argmax(0)


def test_substitute_training_against_a_plain_function():
    torch.manual_seed(0)
    x = torch.rand(20, 1, 28, 28)
    sub = build("mlp", hidden=16, num_classes=3)
    oracle = Oracle(_function_oracle)
    _, history = train_substitute(oracle, x, sub, rounds=3, epochs=2, progress=False)
    assert [h.training_points for h in history] == [20, 40, 80]
    assert oracle.queries == 80 and history[-1].oracle_queries == 80


def test_blackbox_attack_end_to_end_and_deterministic(fake_mnist):
    x, y = load("mnist", "test")
    torch.manual_seed(0)
    target = build("galloway-cnn", precision="full", width=4)
    results = [blackbox_attack(target, x, y, holdout=20, rounds=2, epochs=2,
                               substitute_params={"hidden": 32}, seed=5) for _ in range(2)]
    a, b = results
    assert a.as_dict() == b.as_dict()
    assert a.n_eval == 80 and a.training_queries == 40 and a.evaluation_queries == 160
    c = blackbox_attack(target, x, y, holdout=20, rounds=2, epochs=2,
                        substitute_params={"hidden": 32}, seed=6)
    assert c.as_dict() != a.as_dict()


def test_substitute_attack_contract_and_a_stochastic_oracle(fake_mnist):
    x, y = load("mnist", "test")
    torch.manual_seed(0)
    stochastic = build("galloway-cnn", precision="stochastic", width=4)
    atk = SubstituteAttack(stochastic, holdout=10, rounds=1, epochs=1)
    result = atk.run(x[:50], y[:50])  # fits on the first 10, attacks all 50
    assert atk.oracle.queries == 10 + 50  # once per input, never averaged
    assert result.queries.tolist() == [1] * 50 and result.extra["training_queries"] == 10
    assert result.linf.max() <= 0.3 + 1e-6
    again = atk.fitted(eps=0.1)
    assert again.substitute is atk.substitute and again.params.eps == 0.1
    assert again.run(x[:20], y[:20]).linf.max() <= 0.1 + 1e-6
    with pytest.raises(AttackError, match="changes eps and craft only"):
        atk.fitted(rounds=3)
    with pytest.raises(AttackError, match="must hold more than holdout=150"):
        SubstituteAttack(stochastic).run(x[:20], y[:20])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"holdout": 100}, r"holdout must be an integer in 1\.\.99"),
    ({"holdout": 0}, "holdout must be an integer"),
    ({"lmbda": 0.0, "holdout": 20}, "lmbda must be a finite number > 0"),
    ({"rounds": 0, "holdout": 20}, "rounds must be an integer >= 1"),
    ({"craft": "boundary", "holdout": 20}, "unknown craft 'boundary'"),
    ({"craft": "cw", "holdout": 20}, "unknown craft 'cw'; expected one of fgsm, bim"),
    ({"eps": 1.5, "holdout": 20}, "eps must be at most 1"),
])
def test_bad_settings(fake_mnist, kwargs, message):
    x, y = load("mnist", "test")
    with pytest.raises(AttackError, match=message):
        blackbox_attack(build("fc-bnn", width=8), x, y, **kwargs)


def test_oracle_shape_mismatch_is_named(fake_mnist):
    x, y = load("mnist", "test")
    cifar = build("galloway-cnn", channels=3, size=32, width=4)
    with pytest.raises(AttackError, match=r"takes inputs of shape \(3, 32, 32\)"):
        blackbox_attack(cifar, x, y)


def test_transfer_flag():
    assert transfer_vs_white_box(white_box_accuracy=0.6, transfer_accuracy=0.4, eps=0.3).raised
    assert not transfer_vs_white_box(white_box_accuracy=0.1, transfer_accuracy=0.4, eps=0.3).raised
