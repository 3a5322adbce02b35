"""Panda et al.'s attack protocol on k-bit inputs: the data set is discretized first, FGSM
follows the gradient with respect to the network's discretized input, and the model
discretizes the adversarial image again; at 8 bits that is ordinary FGSM."""

from __future__ import annotations

import pytest
import torch
from test_measures_figures import column_for, task_for

from bnnrobust.attacks import FGSM, RFGSM, AdversarialTraining
from bnnrobust.data import InputQuantizer, discretize_like, load
from bnnrobust.experiments.measures import measure_named
from bnnrobust.experiments.measures.accuracy import attacked
from bnnrobust.models import build
from bnnrobust.train import batch_statistics, fit


def test_quantizer_is_the_identity_at_8_bits_and_idempotent():
    x = torch.arange(256, dtype=torch.float32) / 255
    assert torch.equal(InputQuantizer(8)(x), x)
    for bits in range(1, 9):
        q = InputQuantizer(bits)
        assert torch.equal(q(q(x)), q(x))
        assert len(q(x).unique()) == 2 ** bits
    # 2 bits: the paper's bins of 64 levels, each value the centre of its integer pixels
    two = InputQuantizer(2)(torch.tensor([0.0, 63, 64, 127, 128, 191, 192, 255]) / 255) * 255
    assert torch.allclose(two, torch.tensor([31.5, 31.5, 95.5, 95.5, 159.5, 159.5, 223.5,
                                             223.5]), atol=1e-4)


@pytest.fixture(scope="module")
def mnist_2bit(tmp_path_factory):
    """A BNN with 2-bit inputs trained one epoch on MNIST-shaped data, and 200 test images."""
    torch.manual_seed(0)
    model = build("fc-bnn", width=32, input_bits=2)
    x = (torch.rand(512, 1, 28, 28) * 255).round() / 255
    y = (x.flatten(1)[:, :392].mean(1) > x.flatten(1)[:, 392:].mean(1)).long()
    fit(model, (x, y), epochs=1, batch_size=64, progress=False)
    xt = (torch.rand(200, 1, 28, 28) * 255).round() / 255
    yt = (xt.flatten(1)[:, :392].mean(1) > xt.flatten(1)[:, 392:].mean(1)).long()
    return model.eval(), xt, yt


def test_paper_fgsm_at_eps_01_cannot_leave_a_2_bit_bin(mnist_2bit):
    model, x, y = mnist_2bit
    paper = column_for("accuracy", "FGSM ε=0.1", "fgsm", {"eps": 0.1, "bpda": True},
                       {"inputs": "discretized"})
    clean = column_for("accuracy", "clean", "clean", {}, {"inputs": "discretized"})
    measure = measure_named("accuracy")
    _, _, x_adv, _, _ = attacked(task_for("accuracy", paper), model, x, y)
    q = model.input_layer
    assert (x_adv != q(x)).any()  # the image moved...
    assert torch.equal(q(x_adv), q(x))  # ...but no discretized pixel changed
    got = measure.compute(task_for("accuracy", paper), model, x, y)
    assert got["correct"] == measure.compute(task_for("accuracy", clean), model, x, y)["correct"]
    # ε = 0.2 crosses one bin: the attack then changes the model's discretized input
    wide = column_for("accuracy", "FGSM ε=0.2", "fgsm", {"eps": 0.2, "bpda": True},
                      {"inputs": "discretized"})
    _, _, x_wide, _, _ = attacked(task_for("accuracy", wide), model, x, y)
    assert (q(x_wide) != q(x)).any()


def test_paper_fgsm_at_8_bits_is_plain_fgsm_on_the_model_without_a_quantizer(fake_mnist):
    torch.manual_seed(1)
    eight = build("fc-bnn", width=16, input_bits=8)
    fit(eight, load("mnist", "train"), epochs=1, batch_size=32, progress=False)
    plain = build("fc-bnn", width=16)
    plain.load_state_dict(eight.state_dict())
    x, y = load("mnist", "test")
    paper = column_for("accuracy", "FGSM ε=0.1", "fgsm", {"eps": 0.1, "bpda": True},
                       {"inputs": "discretized"})
    _, _, x_adv, _, _ = attacked(task_for("accuracy", paper), eight.eval(), x, y)
    assert torch.equal(x_adv, FGSM(plain.eval(), eps=0.1)(x, y))


def test_rfgsm_training_of_a_quantized_model_follows_the_gradient(mnist_2bit):
    model, x, y = mnist_2bit
    hook = AdversarialTraining("rfgsm", eps=0.3, label="true", seed=4)
    (_, _), (x_adv, _) = hook(model, x[:32], y[:32], epoch=0)
    # the same attack as the paper's protocol: on the discretized batch, through BPDA
    seed = int(torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(4)))
    x_d = discretize_like(model, x[:32])
    with batch_statistics(model):  # crafted as the authors' code does: batch statistics
        expected = RFGSM(model, eps=0.3, seed=seed, bpda=True)(x_d, y[:32])
        noise_only = RFGSM(model, eps=0.3, seed=seed)(x_d, y[:32])
    assert torch.equal(x_adv, expected)
    assert not torch.equal(x_adv, noise_only)  # without BPDA only the random step is left
