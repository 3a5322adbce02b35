"""The training loop: learning, determinism, the batch hook, metrics, bad options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnrobust.data import load
from bnnrobust.errors import BnnRobustError, TrainingError
from bnnrobust.models import build
from bnnrobust.train import accuracy, eval_mode, fit


def _and_data():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, torch.tensor([0, 0, 0, 1])


@pytest.mark.parametrize("quantized", [False, True])
def test_toy_mlp_learns_and(quantized):
    """Galloway Appendix B: Adam lr 0.1 learns logical AND (1000 epochs in the paper)."""
    torch.manual_seed(0)
    model = build("toy-mlp", hidden=4, quantized=quantized)
    data = _and_data()
    history = fit(model, data, data, epochs=300, batch_size=4, lr=0.1, progress=False)
    assert history.final_test_accuracy == 1.0


def test_fit_on_generated_mnist_learns(fake_mnist):
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=8)
    train, test = load("mnist", "train"), load("mnist", "test")
    history = fit(model, train, test, epochs=3, batch_size=32, progress=False)
    assert len(history.epochs) == 3
    assert history.final_test_accuracy > 0.8
    e = history.epochs[-1]
    assert e.epoch == 3 and e.seconds > 0 and 0 <= e.train_accuracy <= 1 and e.train_loss > 0
    assert not model.training


def test_fit_is_deterministic_on_cpu(fake_mnist):
    train = load("mnist", "train", limit=128)
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build("galloway-cnn", precision="stochastic", width=4)
        fit(model, train, epochs=1, batch_size=32, seed=5, progress=False)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_batch_hook_transforms_batches(fake_mnist):
    calls = []

    class Doubler:
        """Trains on the clean batch and a noisy copy: loss = (clean + noisy) / 2."""

        def __call__(self, model, x, y, *, epoch):
            calls.append((epoch, len(x), model.training))
            return [(x, y), ((x + 0.1).clamp(0, 1), y)]

        def config(self):
            return {"kind": "doubler"}

    model = build("fc-bnn", width=16)
    fit(model, load("mnist", "train", limit=100), epochs=2, batch_size=40,
        batch_hook=Doubler(), progress=False)
    assert [c[:2] for c in calls] == [(0, 40), (0, 40), (0, 20), (1, 40), (1, 40), (1, 20)]


def test_clip_weights_keeps_latent_in_unit_box(fake_mnist):
    model = build("fc-bnn", width=16)
    fit(model, load("mnist", "train", limit=64), epochs=1, lr=0.5, clip_weights=True,
        progress=False)
    assert model.body[1].weight.abs().max() <= 1.0


def test_stochastic_accuracy_is_mean_of_seeded_passes(fake_mnist):
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="stochastic", width=4)
    x, y = load("mnist", "test")
    a = accuracy(model, x, y, passes=3, seed=10)
    b = accuracy(model, x, y, passes=3, seed=10)
    assert a == b


def test_eval_mode_restores_each_submodule():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model.train()
    model[1].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training


@pytest.mark.parametrize(("options", "message"), [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"epochs": 1, "batch_size": 0}, "batch_size must be a positive integer"),
    ({"epochs": 1, "lr": 0.0}, "lr must be > 0"),
    ({"epochs": 1, "optimizer": "lbfgs"}, "expected one of adam, sgd"),
])
def test_bad_options(options, message):
    data = _and_data()
    with pytest.raises(TrainingError, match=message):
        fit(build("toy-mlp"), data, **options, progress=False)


def test_mismatched_or_empty_data():
    with pytest.raises(TrainingError, match="same, non-zero"):
        fit(build("toy-mlp"), (torch.zeros(4, 2), torch.zeros(3)), epochs=1, progress=False)


def test_wrong_input_shape_is_named():
    model = build("galloway-cnn", width=4)
    data = (torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long))
    with pytest.raises(BnnRobustError, match=r"3×32×32 but the model takes 1×28×28.*channels=3"):
        fit(model, data, epochs=1, progress=False)


def test_binarynet_schedule_cuts_the_rate_once_at_epochs_40_and_80():
    from bnnrobust.train.loop import schedule_factor

    factors = [schedule_factor("binarynet-mnist", e) for e in range(1, 101)]
    assert [e for e, f in enumerate(factors, 1) if f != 1.0] == [40, 80]
    assert all(f == 0.1 for f in factors if f != 1.0)
    assert all(schedule_factor("constant", e) == 1.0 for e in range(1, 101))


def test_fit_applies_the_schedule_and_refuses_an_unknown_one(monkeypatch):
    import bnnrobust.train.loop as loop

    torch.manual_seed(0)
    model = build("fc-bnn", width=8)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    seen = []
    monkeypatch.setattr(loop, "schedule_factor", lambda s, e: seen.append((s, e)) or 0.5)
    loop.fit(model, (x, y), epochs=3, batch_size=8, lr=0.01, schedule="binarynet-mnist",
             progress=False)
    assert seen == [("binarynet-mnist", 1), ("binarynet-mnist", 2), ("binarynet-mnist", 3)]
    monkeypatch.undo()
    with pytest.raises(TrainingError, match="unknown learning-rate schedule 'cosine'"):
        loop.fit(model, (x, y), epochs=1, schedule="cosine", progress=False)
