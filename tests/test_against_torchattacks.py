"""Agreement with an independent implementation: torchattacks 3.5.1 (test-only peer)."""

from __future__ import annotations

import pytest
import torch

from bnnrobust.attacks import CWL2, FGSM, PGD
from bnnrobust.data import load
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
