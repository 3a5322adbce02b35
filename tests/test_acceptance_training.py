"""Acceptance runs of the foundation issue on real data (slow: run with ``pytest -m slow``).

Each prints the measured figure; the thresholds are the issue's.
"""

from __future__ import annotations

import pytest
import torch

from bnnrobust.data import load
from bnnrobust.nn import seed_stochastic
from bnnrobust.train import TrainRequest, accuracy, train_cached

pytestmark = pytest.mark.slow


def _train(data_root, model, params, dataset, epochs):
    result = train_cached(TrainRequest(model, params, dataset, epochs=epochs),
                          data_root=data_root, progress=False)
    accs = [e["test_accuracy"] for e in result.metrics["epochs"]]
    print(f"\n{model} {params} on {dataset}: test accuracy per epoch "
          + ", ".join(f"{a:.2%}" for a in accs)
          + f"; seconds per epoch {[round(e['seconds'], 1) for e in result.metrics['epochs']]}")
    return result, accs


def test_galloway_cnn_full_precision_two_epochs(data_root):
    _, accs = _train(data_root, "galloway-cnn", {"precision": "full", "width": 64}, "mnist", 2)
    assert accs[-1] >= 0.985


def test_galloway_cnn_binary_reproduces_table_6(data_root):
    """Model B with the paper's settings (15 epochs): Table 6 gives 2.3 ± 0.1 % error (97.7 %).

    With the paper's σ = 0.2 latent init and Adam 1e-3, B learns slowly: it passes 96 % only
    around epoch 7 (measured 90.2 % after 2 epochs), so the check is made where the paper made it.
    """
    _, accs = _train(data_root, "galloway-cnn", {"precision": "binary", "width": 64}, "mnist", 15)
    assert accs[-1] >= 0.97


@pytest.mark.parametrize(("dataset", "threshold"), [("mnist", 0.90), ("fashion-mnist", 0.80)])
def test_fc_bnn_ten_epochs(data_root, dataset, threshold):
    _, accs = _train(data_root, "fc-bnn", {"depth": 2, "width": 100}, dataset, 10)
    assert max(accs) >= threshold


def test_stochastic_model_trains_and_is_random(data_root):
    result, accs = _train(data_root, "galloway-cnn", {"precision": "stochastic", "width": 64},
                          "mnist", 3)
    assert accs[-1] > 0.90
    model = result.model.eval()
    x, _ = load("mnist", "test", root=data_root, limit=64)
    with torch.no_grad():
        seed_stochastic(model, 1)
        a = model(x)
        seed_stochastic(model, 2)
        b = model(x)
        seed_stochastic(model, 1)
        c = model(x)
    assert not torch.equal(a, b)
    assert torch.equal(a, c)
    xt, yt = load("mnist", "test", root=data_root)
    print(f"S model mean accuracy over 5 seeded passes: {accuracy(model, xt, yt, passes=5):.2%}")
