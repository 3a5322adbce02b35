"""The exact attacks on Galloway et al.'s convolutional BNN (model B): the integer form equals
the PyTorch model, the continuous optimum of the pattern decomposition equals the big-M MILP's
on tiny conv BNNs and is never beaten by sampled perturbations, and certified points are never
attacked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("ortools")

from bnnrobust.attacks import AttackError  # noqa: E402
from bnnrobust.attacks.combinatorial import Certify, MILPAttack, export  # noqa: E402
from bnnrobust.attacks.combinatorial.conv_export import conv_matrix  # noqa: E402
from bnnrobust.attacks.combinatorial.cpsat import cpsat_attack  # noqa: E402
from bnnrobust.attacks.combinatorial.export import ExportError  # noqa: E402
from bnnrobust.attacks.combinatorial.highs import highs_attack  # noqa: E402
from bnnrobust.models import build  # noqa: E402


def tiny_cnn(seed: int, *, precision: str = "binary", width: int = 2):
    """A Galloway CNN on 28×28 inputs, its batch-norm statistics those of random images (so
    thresholds fall where activations are), γ of random sign, β random; in eval mode."""
    torch.manual_seed(seed)
    model = build("galloway-cnn", precision=precision, width=width)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # cumulative averages
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(32, 1, 28, 28))
        for m in norms:
            n = m.num_features
            m.weight.copy_(torch.randn(n))
            m.bias.copy_(torch.randn(n) * 0.3)
    return model.eval()


def test_conv_matrix_is_the_convolution():
    rng = np.random.default_rng(0)
    for stride, padding in ((1, (0, 0, 0, 0)), (2, (3, 4, 3, 4)), (2, (1, 0, 2, 1))):
        w = rng.normal(size=(3, 2, 4, 4))
        x = rng.normal(size=(2, 9, 9))
        expected = F.conv2d(F.pad(torch.tensor(x)[None], padding), torch.tensor(w),
                            stride=stride)[0]
        got = conv_matrix(w, (2, 9, 9), stride=stride, padding=padding) @ x.ravel()
        assert np.allclose(got, expected.numpy().ravel())


def test_the_integer_form_equals_the_model_on_real_and_grid_inputs():
    for seed in range(4):
        model = tiny_cnn(seed)
        ib = export(model)
        assert ib.relu_weight is not None and not ib.grid_exact
        x = torch.rand(64, 1, 28, 28)
        grid = (torch.rand(64, 1, 28, 28) * 255).round() / 255
        for batch in (x, grid):
            with torch.no_grad():
                ref = model(batch).double().numpy()
            ours = ib.logits(batch.reshape(64, -1).double().numpy())
            assert np.allclose(ours, ref, atol=1e-4)
        # the exported thresholds are really used: many neurons flip over the batch
        acts = ib.hidden(x.reshape(64, -1).double().numpy())
        assert all((a.min(0) < a.max(0)).any() for a in acts)


def test_continuous_optimum_equals_the_big_m_milp_and_beats_sampling():
    """On 10 tiny conv BNNs the decomposition proves the optimum the HiGHS big-M MILP proves at
    an optimality gap of 0, and no sampled perturbation (box vertices, interior points) beats
    it."""
    rng = np.random.default_rng(1)
    for seed in range(10):
        model = tiny_cnn(10 + seed)
        ib = export(model)
        x = np.where(rng.random(784) < 0.2, rng.integers(100, 256, size=784), 0)  # MNIST-like
        eps = float(rng.choice([0.005, 0.01]))
        ours = cpsat_attack(ib, x, eps=eps, time_limit=60, domain="continuous")
        reference = highs_attack(ib, x, eps=eps, time_limit=60, gap=0)
        assert ours.status == reference.status == "optimal"
        assert ours.objective == pytest.approx(reference.objective, abs=1e-6)
        # no sampled perturbation (box vertices and interior points) beats the optimum
        lo, hi = np.maximum(-eps, -x / 255), np.minimum(eps, 1 - x / 255)
        samples = np.where(rng.random((400, 784)) < 0.5, lo, hi)
        samples[200:] = lo + rng.random((200, 784)) * (hi - lo)
        logits = ib.logits(x / 255 + samples)
        sampled = logits[:, ours.target] - logits[:, ours.prediction]
        assert sampled.max() <= ours.objective + 1e-9


def test_certified_points_are_never_attacked_and_results_hold_in_the_model():
    rng = np.random.default_rng(4)
    outcomes = set()
    for seed in range(6):
        model = tiny_cnn(20 + seed)
        pixels = np.where(rng.random(784) < 0.2, rng.integers(100, 256, size=784), 0)
        x = torch.tensor(pixels / 255, dtype=torch.float32).reshape(1, 1, 28, 28)
        y = model(x).argmax(1)
        for eps in (0.002, 0.01):
            cert = Certify(model, eps=eps, backend="cpsat-lp", time_limit=60).run(x, y)
            attack = MILPAttack(model, eps=eps, backend="cpsat-lp", hint="none",
                                target="untargeted", time_limit=60).run(x, y)
            status = cert.status[0]
            assert status in ("robust", "attacked")
            assert (status == "attacked") == bool(attack.success[0])
            outcomes.add(status)
            record = attack.extra["points"][0]
            assert record["objective"] == pytest.approx(record["model_objective"], abs=1e-5)
    assert outcomes == {"robust", "attacked"}


def test_conv_export_errors():
    for precision in ("scaled", "stochastic"):  # C and S scale each block's output
        with pytest.raises(ExportError, match=r"cannot export layer .*\(LearnedScale\)"):
            export(tiny_cnn(0, precision=precision))
    with pytest.raises(ExportError, match="cannot export layer '3' \\(Conv2d\\): expected a binary"):
        export(tiny_cnn(0, precision="full"))
    ib = export(tiny_cnn(0))
    with pytest.raises(AttackError, match="use the continuous problem"):
        cpsat_attack(ib, np.full(784, 128), eps=0.01)
    from bnnrobust.attacks.combinatorial import IProp

    x = torch.full((1, 1, 28, 28), 128 / 255)
    with pytest.raises(AttackError, match="IProp .* fully connected BNNs"):
        IProp(tiny_cnn(0), eps=0.01, time_limit=1).run(x, torch.tensor([0]))
