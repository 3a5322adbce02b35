"""Agreement with an independent implementation: torchattacks 3.5.1 (test-only peer)."""

from __future__ import annotations

import pytest
import torch

from bnnrobust.attacks import CWL2, FGSM, PGD
from bnnrobust.attacks.apgd import APGD, APGDT
from bnnrobust.attacks.fab import FABT
from bnnrobust.attacks.square import Square
from bnnrobust.data import load
from bnnrobust.evaluate import autoattack
from bnnrobust.models import build
from bnnrobust.train import fit

torchattacks = pytest.importorskip("torchattacks")


@pytest.fixture(scope="module")
def trained(data_root):
    """A full-precision Galloway CNN trained briefly on real MNIST, and 200 test images."""
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=16)
    fit(model, load("mnist", "train", root=data_root, limit=5000), epochs=1, progress=False)
    x, y = load("mnist", "test", root=data_root, limit=200)
    return model.eval(), x, y


def test_fgsm_identical(trained):
    model, x, y = trained
    ours = FGSM(model, eps=0.2)(x, y)
    theirs = torchattacks.FGSM(model, eps=0.2)(x, y)
    assert torch.equal(ours, theirs)


def test_pgd_without_random_start_agrees(trained):
    model, x, y = trained
    ours = PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=False)(x, y)
    theirs = torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=False)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_cw_success_rates_within_two_points(trained):
    model, x, y = trained
    ours = CWL2(model, c=1.0, confidence=0.0, steps=100, lr=0.01, binary_search_steps=1,
                abort_early=False).run(x, y)
    theirs_adv = torchattacks.CW(model, c=1.0, kappa=0, steps=100, lr=0.01)(x, y)
    with torch.no_grad():
        theirs = (model(theirs_adv).argmax(1) != y).float().mean().item()
    print(f"\nCW-L2 success rate: ours {ours.success_rate:.1%}, torchattacks {theirs:.1%}")
    assert abs(ours.success_rate - theirs) <= 0.02


def broken_by(model, x_adv, y):
    """Where torchattacks' output misclassifies."""
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_identical_to_torchattacks(trained, loss):
    # same seed, same random start, same steps: the same adversarial inputs
    model, x, y = trained
    ours = APGD(model, eps=0.1, steps=25, loss=loss).run(x, y)
    theirs = torchattacks.APGD(model, eps=0.1, steps=25, loss=loss, seed=0)(x, y)
    broken = broken_by(model, theirs, y)
    print(f"\nAPGD-{loss} success: ours {ours.success_rate:.1%}, torchattacks "
          f"{broken.float().mean():.1%}")
    assert 0 < broken.sum() < len(y) - 10  # a case that separates the inputs
    assert torch.equal(ours.success, broken)
    assert torch.equal(ours.x_adv[broken], theirs[broken])


def test_apgd_t_identical_to_torchattacks(trained):
    model, x, y = trained
    ours = APGDT(model, eps=0.1, steps=10).run(x, y)
    theirs = torchattacks.APGDT(model, eps=0.1, steps=10, n_classes=10, seed=0)(x, y)
    broken = broken_by(model, theirs, y)
    assert 0 < broken.sum() < len(y) - 10
    assert torch.equal(ours.success, broken)
    assert torch.equal(ours.x_adv[broken], theirs[broken])


def test_square_identical_to_torchattacks(trained):
    # the same draws in the same order: window, sign per channel, per query
    model, x, y = trained
    ours = Square(model, eps=0.1, queries=200).run(x, y)
    theirs = torchattacks.Square(model, eps=0.1, n_queries=200, resc_schedule=False,
                                 seed=0)(x, y)
    broken = broken_by(model, theirs, y)
    assert 0 < broken.sum() < len(y) - 10
    assert torch.equal(ours.success, broken)
    assert torch.equal(ours.x_adv[broken], theirs[broken])
    assert ours.queries is not None and int(ours.queries.max()) <= 201


def test_fab_t_success_within_two_points_of_torchattacks(trained):
    # our L∞ projection is exact where fra31's bisects, so the runs differ in rounding only
    model, x, y = trained
    ours = FABT(model, eps=0.1, steps=20).run(x, y)
    theirs = torchattacks.FAB(model, eps=0.1, steps=20, multi_targeted=True, n_classes=10,
                              seed=0)(x, y)
    broken = broken_by(model, theirs, y)
    print(f"\nFAB-T success: ours {ours.success_rate:.1%}, torchattacks "
          f"{broken.float().mean():.1%}")
    assert 0 < broken.sum() < len(y) - 10
    assert abs(ours.success_rate - broken.float().mean().item()) <= 0.02
    assert ours.linf.max() <= 0.1 + 1e-6


def test_autoattack_cascade_within_one_point_of_torchattacks(trained):
    # the standard ensemble with fewer steps and queries (the test's time), configured alike in
    # both; torchattacks' MultiAttack is its cascade
    model, x, y = trained
    ours = autoattack(model, x, y, eps=0.1, steps=10, queries=100)
    theirs = torchattacks.MultiAttack([
        torchattacks.APGD(model, eps=0.1, steps=10, loss="ce", seed=0),
        torchattacks.APGDT(model, eps=0.1, steps=10, n_classes=10, seed=0),
        torchattacks.FAB(model, eps=0.1, steps=10, multi_targeted=True, n_classes=10, seed=0),
        torchattacks.Square(model, eps=0.1, n_queries=100, resc_schedule=False, seed=0)])(x, y)
    theirs_accuracy = 1 - broken_by(model, theirs, y).float().mean().item()
    print(f"\nAutoAttack robust accuracy: ours {ours.accuracy:.1%}, torchattacks "
          f"{theirs_accuracy:.1%}; ours after each attack {ours.accuracy_after}")
    assert abs(ours.accuracy - theirs_accuracy) <= 0.01
    assert list(ours.after) == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    # the cascade: each attack ran only on what the earlier ones left
    assert len(ours.attacked["APGD-T"]) == int(ours.after["APGD-CE"].sum())
