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
    ({"epochs": 1, "lr": 0.0}, "lr must be a finite number > 0"),
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


def test_reference_schedules_cut_the_rate_where_the_cited_code_does():
    from bnnrobust.train.loop import schedule_factor

    def rates(name, lr, epochs):
        out = []
        for e in range(1, epochs + 1):
            lr *= schedule_factor(name, e)
            out.append(lr)
        return out

    alex = rates("binarynet-alexnet", 5e-3, 45)  # regime {0: 5e-3, 20: 1e-3, 30: 5e-4, ...}
    for epoch0, lr in ((0, 5e-3), (19, 5e-3), (20, 1e-3), (30, 5e-4), (35, 1e-4), (40, 1e-5)):
        assert alex[epoch0] == pytest.approx(lr)
    xnor = rates("xnor-imagenet", 1e-3, 60)  # lr · 0.1 ** (epoch // 25), epochs from 0
    assert all(xnor[e] == pytest.approx(1e-3 * 0.1 ** (e // 25)) for e in range(60))
    step = rates("step30", 0.01, 90)
    assert all(step[e] == pytest.approx(0.01 * 0.1 ** (e // 30)) for e in range(90))


def test_center_xnor_weights_centres_over_input_channels_and_clamps():
    from bnnrobust.nn import BinaryConv2d, center_xnor_weights

    layer = BinaryConv2d(3, 2, 3, xnor=True, init_std=None)
    plain = BinaryConv2d(3, 2, 3, init_std=None)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 3, 3, 3) * 2)
        plain.weight.copy_(layer.weight)
    before = layer.weight.detach().clone()
    center_xnor_weights(torch.nn.Sequential(layer, plain))
    want = (before - before.mean(dim=1, keepdim=True)).clamp(-1, 1)
    assert torch.equal(layer.weight.detach(), want)
    assert torch.equal(plain.weight.detach(), before)  # only XNOR layers


def test_weight_decay_spares_the_latent_weights_of_binary_layers():
    from bnnrobust.train.loop import _optimizer

    model = build("fc-bnn", width=8)
    opt = _optimizer(model, optimizer="adam", lr=1e-3, weight_decay=1e-5)
    latent = {id(m.weight) for m in model.modules() if hasattr(m, "binary_weight")}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert group["weight_decay"] == (0.0 if ids <= latent else 1e-5)
        assert ids <= latent or not ids & latent
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_crop_flip_pads_crops_and_flips_by_the_generator():
    from bnnrobust.train.loop import crop_flip

    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    a = crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    b = crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # each output is one window of the padded image, maybe mirrored
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in windows)


def test_fit_trains_on_a_streamed_dataset(fake_imagenet):
    from bnnrobust.data import images
    from bnnrobust.train import fit

    torch.manual_seed(0)
    model = build("alexnet-imagenet", num_classes=3)
    train = images("imagenet", "train", size=227, train=True)
    test = images("imagenet", "test", size=227, train=False)
    history = fit(model, train, test, epochs=1, batch_size=4, progress=False, center_weights=True,
                  weight_decay=1e-5)
    assert len(history.epochs) == 1 and 0.0 <= history.final_test_accuracy <= 1.0
    assert all(m.weight.abs().max() <= 1 for m in model.modules() if getattr(m, "xnor", False))


def test_fit_refuses_bad_new_options():
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    model = build("fc-bnn", width=8)
    for kwargs, message in (({"weight_decay": -1.0}, "weight_decay must be"),
                            ({"workers": -1}, "workers must be"),
                            ({"augment": "mixup"}, "unknown augmentation 'mixup'")):
        with pytest.raises(TrainingError, match=message):
            fit(model, (x, y), epochs=1, progress=False, **kwargs)


def test_cifar_schedules_and_the_full_alexnet_weight_decay_switch():
    from bnnrobust.train.loop import schedule_factor, schedule_weight_decay

    def cuts(name, epochs):
        return [e for e in range(1, epochs + 1) if schedule_factor(name, e) != 1.0]

    assert cuts("xnor-cifar", 320) == [120, 200, 240, 280]
    assert cuts("resnet-cifar", 164) == [83, 124]
    lr = 1e-2
    rates = []
    for e in range(1, 31):
        lr *= schedule_factor("binarynet-alexnet-full", e)
        rates.append(lr)
    for epoch0, want in ((0, 1e-2), (10, 5e-3), (15, 1e-3), (20, 5e-4), (25, 1e-4)):
        assert rates[epoch0] == pytest.approx(want)
    assert [e for e in range(1, 31) if schedule_weight_decay("binarynet-alexnet-full", e)
            is not None] == [16]
    assert schedule_weight_decay("binarynet-alexnet-full", 16) == 0.0
    assert all(schedule_weight_decay("step30", e) is None for e in range(1, 91))


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0])
def test_non_finite_or_negative_learning_rates_are_refused(lr):
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with pytest.raises(TrainingError, match="lr must be a finite number > 0"):
        fit(build("fc-bnn", width=8), (x, y), epochs=1, lr=lr, progress=False)


def test_a_diverging_loss_stops_training_with_a_clear_error():
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model = build("fcn", arch="fcn2", precision="full", width=16)
    with torch.no_grad():
        model.body[-1].weight.fill_(float("nan"))  # every logit NaN: the loss is NaN at once
    with pytest.raises(TrainingError, match="the training loss became nan at epoch 1 .*diverged"):
        fit(model, (x, y), epochs=1, batch_size=8, progress=False)


def test_evaluation_refuses_non_finite_inputs():
    x = torch.rand(3, 1, 28, 28)
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(BnnRobustError, match="NaN or infinite"):
        accuracy(build("fc-bnn", width=8), x, torch.zeros(3, dtype=torch.long))


_KILLED_RUN = """
import os, signal, sys
import torch
from bnnrobust.attacks.adversarial_training import AdversarialTraining
from bnnrobust.models import build
from bnnrobust.train import fit

class KillAtSecondEpoch(AdversarialTraining):
    def __call__(self, model, x, y, *, epoch):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # as a killed session: no cleanup at all
        return super().__call__(model, x, y, epoch=epoch)

gen = torch.Generator().manual_seed(0)
x, y = torch.rand(96, 1, 28, 28, generator=gen), torch.randint(0, 10, (96,), generator=gen)
torch.manual_seed(3)
model = build("galloway-cnn", precision="stochastic", width=4)
hook = KillAtSecondEpoch("fgsm-random", eps=0.3, start_epoch=1, seed=5)
fit(model, (x, y), epochs=3, batch_size=32, seed=5, batch_hook=hook, restart_optimizer_at=1,
    resume=sys.argv[1], save_every=0, progress=False)
"""


def _resumable_run(state):
    from bnnrobust.attacks.adversarial_training import AdversarialTraining

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 28, 28, generator=gen), torch.randint(0, 10, (96,), generator=gen)
    torch.manual_seed(3)
    model = build("galloway-cnn", precision="stochastic", width=4)
    hook = AdversarialTraining("fgsm-random", eps=0.3, start_epoch=1, seed=5)
    history = fit(model, (x, y), epochs=3, batch_size=32, seed=5, batch_hook=hook,
                  restart_optimizer_at=1, resume=state, save_every=0, progress=False)
    return model, history


def test_training_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    """A run killed (SIGKILL) during epoch 2 continues from the state saved after epoch 1 and
    ends with exactly the weights of a run never interrupted (stochastic weights and
    random-ε adversarial training from epoch 2 with a fresh optimizer: every generator is part
    of the state, and the optimizer is cleared where the uninterrupted run clears it)."""
    import subprocess
    import sys

    state = tmp_path / "run.partial.pt"
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_RUN)
    killed = subprocess.run([sys.executable, str(script), str(state)], capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert torch.load(state, weights_only=True)["epoch"] == 1
    resumed, resumed_history = _resumable_run(state)
    whole, whole_history = _resumable_run(None)
    assert [e.epoch for e in resumed_history.epochs] == [1, 2, 3]
    assert resumed_history.epochs[0].train_loss == whole_history.epochs[0].train_loss
    assert resumed_history.epochs[-1].train_loss == whole_history.epochs[-1].train_loss
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_a_saved_state_of_other_options_or_a_hook_without_state_is_refused(tmp_path):
    """Also: with ``save_every`` elapsed, a state is written after every epoch but the last."""
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    state = tmp_path / "state.pt"
    fit(build("galloway-cnn", width=4), (x, y), epochs=2, batch_size=8, resume=state,
        save_every=0, progress=False)
    assert torch.load(state, weights_only=True)["epoch"] == 1  # the last epoch is not saved
    with pytest.raises(TrainingError, match="other training options .*differing: batch_size"):
        fit(build("galloway-cnn", width=4), (x, y), epochs=2, batch_size=4, resume=state,
            progress=False)
    state.write_bytes(b"not a state")
    with pytest.raises(TrainingError, match="cannot read the saved training state"):
        fit(build("galloway-cnn", width=4), (x, y), epochs=2, batch_size=8, resume=state,
            progress=False)

    class Stateless:
        def __call__(self, model, x, y, *, epoch):
            return [(x, y)]

        def config(self):
            return {"kind": "stateless"}

    with pytest.raises(TrainingError, match="Stateless has no state_dict"):
        fit(build("galloway-cnn", width=4), (x, y), epochs=1, batch_size=8, progress=False,
            batch_hook=Stateless(), resume=tmp_path / "other.pt")


def test_the_checkpoint_cache_resumes_an_interrupted_training(fake_mnist, tmp_path, monkeypatch):
    """``train_cached`` keeps the state after each epoch beside the checkpoint; interrupted in
    epoch 2 it continues from epoch 1, ends with the weights of an uninterrupted run, and
    deletes the state once the checkpoint is written."""
    from bnnrobust.train import TrainRequest, loop, train_cached

    request = TrainRequest("galloway-cnn", {"precision": "binary", "width": 4}, "mnist",
                           epochs=2, batch_size=64, train_limit=256, seed=7)
    whole = train_cached(request, cache_dir=tmp_path / "whole", progress=False)
    evaluate, calls = loop._evaluate, []

    def interrupt_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "_evaluate", interrupt_in_epoch_two)
    monkeypatch.setattr(loop, "SAVE_EVERY", 0.0)  # a state after every epoch
    with pytest.raises(KeyboardInterrupt):
        train_cached(request, cache_dir=tmp_path / "cut", progress=False)
    monkeypatch.setattr(loop, "_evaluate", evaluate)
    assert [p.name.endswith(".partial.pt") for p in (tmp_path / "cut").iterdir()] == [True]
    resumed = train_cached(request, cache_dir=tmp_path / "cut", progress=False)
    assert [p.name for p in (tmp_path / "cut").iterdir()] == [resumed.path.name]
    assert [e["train_loss"] for e in resumed.metrics["epochs"]] == \
        [e["train_loss"] for e in whole.metrics["epochs"]]
    assert resumed.metrics["final_test_accuracy"] == whole.metrics["final_test_accuracy"]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def _edited(monkeypatch, module: str) -> None:
    """Make the fingerprints see ``module``'s source as edited."""
    from bnnrobust import code

    real = code._source_hash
    monkeypatch.setattr(code, "_source_hash",
                        lambda name: real(name) + ("-edited" if name == module else ""))


@pytest.mark.parametrize(("edited", "changes"), [
    ("bnnrobust.models.galloway_cnn", True),
    ("bnnrobust.nn.layers", True),
    ("bnnrobust.models.base", True),
    ("bnnrobust.train.loop", True),
    ("bnnrobust.models.fully_connected", False),
    ("bnnrobust.models.resnet20", False),
    ("bnnrobust.models", False),  # the zoo's index of families
])
def test_a_models_training_fingerprint_holds_its_own_family_not_the_others(
        monkeypatch, edited, changes):
    from bnnrobust.train.cache import family_modules, training_code

    assert "bnnrobust.models.galloway_cnn" in family_modules("galloway-cnn")
    assert not {"bnnrobust.models.fully_connected", "bnnrobust.models"} \
        & set(family_modules("galloway-cnn"))
    before = training_code(family="galloway-cnn"), training_code(family="galloway-cnn",
                                                                 hook=True)
    _edited(monkeypatch, edited)
    after = training_code(family="galloway-cnn"), training_code(family="galloway-cnn",
                                                                hook=True)
    assert (before[0] != after[0], before[1] != after[1]) == (changes, changes)


@pytest.mark.parametrize(("attack", "edited", "changes"), [
    ("fgsm", "bnnrobust.attacks.fgsm", True),
    ("fgsm", "bnnrobust.models.base", True),
    ("fgsm", "bnnrobust.models.galloway_cnn", False),  # in the unit's model key instead
    ("substitute", "bnnrobust.models.mlp", True),  # the attack trains an mlp of its own
])
def test_a_units_code_fingerprint_leaves_the_model_families_to_the_model_key(
        monkeypatch, attack, edited, changes):
    from bnnrobust.experiments.measures.base import unit_code

    module = "bnnrobust.experiments.measures.accuracy"
    before = unit_code.__wrapped__(module, attack)
    _edited(monkeypatch, edited)
    assert (unit_code.__wrapped__(module, attack) != before) == changes


def _adam_run(restart):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 1, 2, 2, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    weights = []
    for epochs in (2, 3):  # the same first epochs (deterministic), then one more
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        fit(model, (x, y), epochs=epochs, batch_size=16, lr=0.01, seed=2,
            restart_optimizer_at=restart if restart is not None and restart < epochs else None,
            progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return weights[1] - weights[0]


def test_restarting_the_optimizer_makes_the_next_step_a_fresh_adam_step():
    """One batch an epoch: the first step of a fresh Adam moves every parameter by exactly lr
    (m̂/√v̂ = sign of the gradient); the third step of a continued Adam does not."""
    fresh = _adam_run(2)
    assert torch.allclose(fresh.abs(), torch.full_like(fresh, 0.01), atol=1e-6)
    continued = _adam_run(None)
    assert not torch.allclose(continued.abs(), torch.full_like(continued, 0.01), atol=1e-4)


@pytest.mark.parametrize("restart", [-1, 3, 1.5, True])
def test_restart_epoch_out_of_range_is_refused(restart):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(4, 1, 2, 2), torch.randint(0, 3, (4,))
    with pytest.raises(TrainingError, match="restart_optimizer_at must be None or an epoch "
                       "in 0..2"):
        fit(model, (x, y), epochs=3, restart_optimizer_at=restart, progress=False)
