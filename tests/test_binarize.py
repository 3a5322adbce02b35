"""Straight-through estimators and stochastic binarization against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from bnnrobust.errors import BnnRobustError
from bnnrobust.nn import hard_sigmoid, sign_ste, stochastic_binarize

X = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
G = torch.tensor([3.0, -3.0, 0.5, -0.25, 2.0, -0.75, 1.5])


def test_sign_forward_with_zero_positive():
    assert sign_ste(X).tolist() == [-1, -1, -1, 1, 1, 1, 1]


def test_hubara_rule_passes_where_abs_at_most_one():
    x = X.clone().requires_grad_()
    (sign_ste(x, "hubara") * G).sum().backward()
    assert x.grad.tolist() == [0.0, -3.0, 0.5, -0.25, 2.0, -0.75, 0.0]


def test_galloway_rule_clips_gradient():
    x = X.clone().requires_grad_()
    (sign_ste(x, "galloway") * G).sum().backward()
    assert x.grad.tolist() == [1.0, -1.0, 0.5, -0.25, 1.0, -0.75, 1.0]


def test_unknown_rule():
    with pytest.raises(BnnRobustError, match="galloway, hubara"):
        sign_ste(X, "bengio")


def test_hard_sigmoid_values():
    assert hard_sigmoid(X).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_stochastic_mean_matches_hard_sigmoid():
    w = torch.tensor([-1.5, -0.6, 0.0, 0.3, 0.9, 2.0]).repeat(40000, 1)
    gen = torch.Generator().manual_seed(0)
    samples = stochastic_binarize(w, generator=gen)
    assert set(samples.unique().tolist()) <= {-1.0, 1.0}
    expected = 2 * hard_sigmoid(w[0]) - 1
    # 40000 samples: standard error <= 0.005; 5 sigma tolerance
    assert torch.allclose(samples.mean(0), expected, atol=0.025)
    assert samples[:, 0].eq(-1).all() and samples[:, -1].eq(1).all()


def test_stochastic_is_resampled_and_reproducible():
    w = torch.zeros(1000)
    a = stochastic_binarize(w, generator=torch.Generator().manual_seed(1))
    b = stochastic_binarize(w, generator=torch.Generator().manual_seed(2))
    c = stochastic_binarize(w, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize(("rule", "expected"), [
    ("galloway", [1.0, -1.0, 0.5, -0.25, 1.0, -0.75, 1.0]),
    ("hubara", [0.0, -3.0, 0.5, -0.25, 2.0, -0.75, 0.0]),
])
def test_stochastic_gradient_reaches_latent_weights(rule, expected):
    w = X.clone().requires_grad_()
    (stochastic_binarize(w, rule=rule) * G).sum().backward()
    assert w.grad.tolist() == expected
