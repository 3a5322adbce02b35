"""One contract for every attack: each catalogue entry builds from validated, frozen
parameters and runs through ``run(x, y)`` on a batch of [0, 1] inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bnnrobust.attacks import AttackError, AttackResult
from bnnrobust.attacks.catalogue import CATALOGUE, entry, make, names
from bnnrobust.models import build

#: fast settings per attack (the defaults are the papers', minutes per point for some)
FAST = {
    "fgsm": {"eps": 0.05},
    "bim": {"eps": 0.05, "steps": 3},
    "pgd": {"eps": 0.05, "steps": 3, "restarts": 2},
    "rfgsm": {"eps": 0.05},
    "apgd": {"eps": 0.05, "steps": 3},
    "apgd-t": {"eps": 0.05, "steps": 3, "targets": 3},
    "fab-t": {"eps": 0.05, "steps": 3, "targets": 3},
    "square": {"eps": 0.05, "queries": 20},
    "cw": {"steps": 5, "binary_search_steps": 1},
    "jsma": {"gamma": 0.5},
    "substitute": {"eps": 0.1, "holdout": 10, "rounds": 1, "epochs": 1},
    "milp": {"eps": 3 / 255, "time_limit": 10.0},
    "iprop": {"eps": 3 / 255, "time_limit": 2.0, "sub_time_limit": 0.5, "early_stop": True},
    "iterated-fgsm": {"eps": 3 / 255, "time_limit": 0.3},
    "certify": {"eps": 3 / 255, "time_limit": 10.0},
}


@pytest.fixture(scope="module")
def tiny():
    """A small fully connected BNN (every attack applies to it) and 20 inputs on the grid."""
    torch.manual_seed(0)
    model = build("fc-bnn", depth=2, width=8, in_features=6, num_classes=4).eval()
    x = torch.randint(90, 166, (20, 6)).float() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_every_attack_has_fast_settings():
    assert set(FAST) == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_attack_runs_through_run(tiny, name):
    if CATALOGUE[name].extra:
        pytest.importorskip("ortools")
    model, x, y = tiny
    atk = make(name, model, **FAST[name])
    result = atk.run(x, y)
    assert isinstance(result, AttackResult)
    n = len(x)
    assert result.x_adv.shape == x.shape and result.success.shape == (n,)
    assert result.success.dtype == torch.bool
    assert 0 <= result.x_adv.min() and result.x_adv.max() <= 1
    for norm in (result.l0, result.l2, result.linf):
        assert norm.shape == (n,)
    assert result.settings["attack"] == name and result.seconds > 0
    kind = CATALOGUE[name].kind
    if CATALOGUE[name].budget is not None:
        assert result.linf.max() <= FAST[name]["eps"] + 1e-6
    if kind in ("exact", "certify"):
        assert len(result.status) == n and result.point_seconds.shape == (n,)
        assert len(result.extra["points"]) == n
    if kind == "exact":
        assert torch.equal(result.success, result.objective > 0)
    if kind == "transfer":
        assert result.queries.tolist() == [1] * n
    if kind == "gradient":
        with torch.no_grad():  # success is what the model says on the returned inputs
            predicted = model(result.x_adv).argmax(1)
        target = result.target
        assert torch.equal(result.success, predicted == target if target is not None
                           else predicted != y)
    # the call form returns the same adversarial inputs (deterministic attacks)
    if kind != "transfer":
        assert torch.equal(make(name, model, **FAST[name])(x, y), result.x_adv)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_parameters_are_frozen_typed_and_checked_once(tiny, name):
    if CATALOGUE[name].extra:
        pytest.importorskip("ortools")
    model, _, _ = tiny
    params = entry(name).check(FAST[name])
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 3
    atk = make(name, model, **FAST[name])
    assert atk.params == params
    with pytest.raises(AttackError, match=f"{name} has no parameter 'colour'; valid parameters"):
        make(name, model, colour="red")
    with pytest.raises(AttackError, match="seed must be an integer"):
        entry(name).check({**FAST[name], "seed": "one"})


def test_kinds_and_requirements():
    assert names("gradient") == ("fgsm", "bim", "pgd", "rfgsm", "apgd", "apgd-t", "fab-t", "cw",
                                 "jsma")
    assert names("score") == ("square",)
    assert names("transfer") == ("substitute",)
    assert set(names("exact", "certify")) == {"milp", "iprop", "iterated-fgsm", "certify"}
    assert all(CATALOGUE[n].requires == ("fc-bnn",) for n in names("exact", "certify"))
    with pytest.raises(AttackError, match="unknown attack 'deepfool'; valid attacks: fgsm"):
        entry("deepfool")
