"""Acceptance run of the black-box issue: Galloway Table 4 at reduced scale (slow)."""

from __future__ import annotations

import pytest

from bnnrobust.attacks import blackbox_attack
from bnnrobust.data import load
from bnnrobust.train import TrainRequest, train_cached

pytestmark = pytest.mark.slow

# Galloway et al. 2018, Table 4: oracle accuracy on FGSM (ε = 0.3) examples transferred from
# the substitute, MNIST, K = 64
TABLE4_PAPER = {"full": "79±1%", "binary": "46±5%", "scaled": "51±4%"}
NAMES = {"full": "A", "binary": "B", "scaled": "C"}


def test_table4_shape(data_root):
    x, y = load("mnist", "test", root=data_root)
    lines = []
    for precision in ("full", "binary", "scaled"):
        request = TrainRequest("galloway-cnn", {"precision": precision, "width": 64}, "mnist",
                               epochs=5)
        oracle_model = train_cached(request, data_root=data_root, progress=False).model
        r = blackbox_attack(oracle_model, x, y, seed=0)
        again = blackbox_attack(oracle_model, x, y, seed=0)
        assert again.as_dict() == r.as_dict()  # same seed, same substitute and results
        lines.append(f"{NAMES[precision]}64: oracle clean {r.oracle_clean_accuracy:.1%}, "
                     f"transferred FGSM ε=0.3 {r.oracle_adversarial_accuracy:.1%} (paper "
                     f"{TABLE4_PAPER[precision]}); substitute clean "
                     f"{r.substitute_clean_accuracy:.1%}; oracle queries {r.training_queries} "
                     f"(training) + {r.evaluation_queries} (evaluation)")
        assert r.training_queries == 150 * 2 ** 5
        assert r.oracle_adversarial_accuracy < r.oracle_clean_accuracy
    print("\nGalloway Table 4 (K=64, 5 epochs), substitute MLP 784-200-200-10, 6 rounds, "
          "λ=0.1, 9,850 evaluation images:\n  " + "\n  ".join(lines))
