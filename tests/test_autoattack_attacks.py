"""The AutoAttack suite's attacks in our contract: APGD, APGD-T, FAB-T, Square (their agreement
with torchattacks is in test_against_torchattacks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from bnnrobust.attacks import FGSM, PGD, AttackError
from bnnrobust.attacks.apgd import APGD, APGDT, dlr_loss
from bnnrobust.attacks.catalogue import entry, make
from bnnrobust.attacks.fab import FABT, linf_projection
from bnnrobust.attacks.square import SCHEDULE, Square
from bnnrobust.data import InputQuantizer
from bnnrobust.evaluate import autoattack_suite, worst_case
from bnnrobust.models import build


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=4).eval()
    x = torch.rand(12, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_dlr_values_by_hand():
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.0], [1.0, 5.0, 2.0, 0.5]])
    y = torch.tensor([0, 0])
    # untargeted: -(z_y - max other) / (z_pi1 - z_pi3)
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-(4 - 3) / (4 - 1),
                                                             -(1 - 5) / (5 - 1)]))
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    t = torch.tensor([2, 1])
    assert torch.allclose(dlr_loss(logits, y, t),
                          torch.tensor([-(4 - 1) / (4 - 0.5), -(1 - 5) / (5 - 0.75)]))
    # shift and scale of the logits do not change it
    assert torch.allclose(dlr_loss(3 * logits + 7, y), dlr_loss(logits, y))
    with pytest.raises(AttackError, match="at least 4 classes"):
        dlr_loss(logits[:, :3], y, t.clamp(max=2))


def _lp_radius(t: np.ndarray, w: np.ndarray, b: float) -> float | None:
    """min ‖d‖∞ s.t. w·(t + d) = b, 0 <= t + d <= 1, by an LP (None: infeasible)."""
    n = len(t)
    cost = np.r_[np.zeros(n), 1.0]
    upper = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
    bounds = [(-ti, 1 - ti) for ti in t] + [(0, None)]
    res = linprog(cost, A_ub=upper, b_ub=np.zeros(2 * n), A_eq=np.r_[w, 0.0][None],
                  b_eq=[b - w @ t], bounds=bounds, method="highs")
    return res.fun if res.status == 0 else None


def test_linf_projection_is_the_lp_optimum():
    gen = torch.Generator().manual_seed(3)
    checked = unreachable = 0
    for _ in range(200):
        n = int(torch.randint(1, 7, (1,), generator=gen))
        t = torch.rand(1, n, generator=gen, dtype=torch.float64)
        w = torch.randn(1, n, generator=gen, dtype=torch.float64)
        w[torch.rand(1, n, generator=gen) < 0.2] = 0.0
        b = torch.randn(1, generator=gen, dtype=torch.float64) * 2
        d = linf_projection(t, w, b)
        radius = _lp_radius(t[0].numpy(), w[0].numpy(), float(b))
        z = t + d
        assert (z >= -1e-12).all() and (z <= 1 + 1e-12).all()
        assert (d[w == 0] == 0).all()
        if radius is None:  # the box misses the hyperplane: the nearest corner
            unreachable += 1
            side = torch.sign((w * t).sum() - b)
            corner = torch.where(side * w > 0, 0.0, 1.0).to(t.dtype)
            assert torch.allclose(z[w != 0], corner[w != 0])
            continue
        checked += 1
        assert abs(float((w * z).sum()) - float(b)) <= 1e-9
        assert abs(float(d.abs().max()) - radius) <= 1e-7
    assert checked >= 50 and unreachable >= 50  # both cases well covered (77 and 123)


def test_square_windows():
    assert Square.window(0.8, 28, 28) == (25, 25)  # round(sqrt(0.8 · 784))
    assert Square.window(0.0001, 28, 28) == (1, 1)
    assert Square.window(0.5, 1, 10) == (1, 5)  # feature vectors: an interval


def test_square_schedule():
    atk = Square(nn.Flatten(), eps=0.1, queries=5000)
    assert atk.window_fraction(0) == atk.window_fraction(10) == 0.8
    assert atk.window_fraction(11) == 0.4
    assert atk.window_fraction(SCHEDULE[-1] + 1) == 0.8 / 2 ** len(SCHEDULE)
    rescaled = Square(nn.Flatten(), eps=0.1, queries=1000, rescale_schedule=True)
    assert rescaled.window_fraction(4) == 0.4  # 4 of 1000 is 40 of 10000
    assert rescaled.window_fraction(6) == 0.2  # 60 of 10000


@pytest.mark.parametrize("cls", [APGD, APGDT, FABT, Square])
def test_results_stay_in_the_ball_and_already_wrong_inputs_keep_x(small, cls):
    model, x, y = small
    wrong = y.clone()
    wrong[:3] = (y[:3] + 1) % 10  # labels the model already gets wrong
    params = {"queries": 50} if cls is Square else {"steps": 5}
    result = cls(model, eps=0.05, **params).run(x, wrong)
    assert result.linf.max() <= 0.05 + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.equal(result.x_adv[:3], x[:3]) and result.success[:3].all()


def test_apgd_targeted_reaches_the_target(small):
    model, x, y = small
    target = (y + 1) % 10
    result = APGD(model, eps=0.3, steps=20, loss="dlr").run(x, y, target=target)
    with torch.no_grad():
        reached = model(result.x_adv).argmax(1) == target
    assert torch.equal(result.success, reached) and reached.any()


def test_apgd_bpda_breaks_through_an_input_quantizer(small):
    model, x, y = small
    quantized = nn.Sequential(InputQuantizer(bits=2), model).eval()
    with torch.no_grad():
        y = quantized(x).argmax(1)
    masked = APGD(quantized, eps=0.1, steps=10).input_gradient(x, y)
    assert masked.abs().sum() == 0  # the quantizer's true gradient is zero
    through = APGD(quantized, eps=0.1, steps=10, bpda=True)
    assert through.input_gradient(x, y).abs().sum() > 0


def test_catalogue_builds_them():
    model = nn.Flatten()
    for name, cls in (("apgd", APGD), ("apgd-t", APGDT), ("fab-t", FABT), ("square", Square)):
        assert isinstance(make(name, model, eps=0.1), cls)
        assert entry(name).kind == "gradient" if name != "square" else entry(name).kind == "score"


@pytest.mark.parametrize(("cls", "params", "message"), [
    (APGD, {"rho": 1.5}, "rho must be in"),
    (APGD, {"loss": "margin"}, "unknown loss"),
    (APGD, {"steps": 0}, "steps must be an integer"),
    (APGD, {"eps": 2.0}, "eps must be at most 1"),
    (APGDT, {"loss": "ce"}, "targeted DLR loss only"),
    (APGDT, {"target": "second"}, "picks its own targets"),
    (FABT, {"target": "random"}, "picks its own targets"),
    (FABT, {"alpha_max": 1.5}, "alpha_max must be in"),
    (Square, {"p_init": 0.0}, "p_init must be a finite number > 0"),
    (Square, {"queries": 0}, "queries must be an integer"),
])
def test_bad_parameters(cls, params, message):
    with pytest.raises(AttackError, match=message):
        cls(nn.Flatten(), **params)


def test_bad_inputs_for_the_model(small):
    model, x, y = small
    with pytest.raises(AttackError, match=r"square attacks images \(N, C, H, W\) or feature"):
        Square(nn.Flatten(), eps=0.1, queries=5).run(x[:, 0], y)
    with pytest.raises(AttackError, match="apgd-t cannot aim at 9 target classes"):
        APGDT(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), eps=0.1).run(x, y % 5)
    with pytest.raises(AttackError, match="fab-t cannot aim at 9 target classes"):
        FABT(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), eps=0.1).run(x, y % 5)
    with pytest.raises(AttackError, match="apgd-t picks its own targets"):
        APGDT(model, eps=0.1).run(x, y, target=(y + 1) % 10)


def test_cascade_gives_the_same_worst_case_for_less_work(small):
    model, x, y = small
    attacks = lambda: {"FGSM": FGSM(model, eps=0.03), "PGD": PGD(model, eps=0.03, steps=5)}  # noqa: E731
    full = worst_case(model, x, y, attacks(), budget=0.03)
    cascade = worst_case(model, x, y, attacks(), budget=0.03, cascade=True)
    assert torch.equal(full.robust, cascade.robust) and 0 < full.accuracy < 1
    assert cascade.per_attack == {} and set(full.per_attack) == {"FGSM", "PGD"}
    survivors = (cascade.after["FGSM"] > 0).nonzero().flatten()
    assert torch.equal(cascade.attacked["PGD"], survivors) and len(survivors) < len(x)
    assert len(cascade.results["PGD"].x_adv) == len(survivors)
    assert torch.equal(cascade.after["PGD"], cascade.robust)
    # a start carried over from an earlier cascade
    carried = worst_case(model, x, y, {"PGD": PGD(model, eps=0.03, steps=5)}, budget=0.03,
                         cascade=True, start=cascade.after["FGSM"])
    assert torch.equal(carried.robust, cascade.robust)


def test_autoattack_suites():
    model = nn.Flatten()
    standard = autoattack_suite(model, eps=0.1)
    assert list(standard) == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert standard["APGD-CE"].params.steps == 100 and standard["APGD-T"].params.targets == 9
    assert standard["FAB-T"].params.steps == 100 and standard["Square"].params.queries == 5000
    assert not standard["Square"].params.rescale_schedule
    rand = autoattack_suite(model, eps=0.1, version="rand")
    assert list(rand) == ["APGD-CE", "APGD-DLR"]
    assert all(a.params.eot_samples == 20 for a in rand.values())
    with pytest.raises(AttackError, match="unknown version 'plus'"):
        autoattack_suite(model, eps=0.1, version="plus")
    with pytest.raises(AttackError, match="eps must be"):
        autoattack_suite(model, eps=0.0)


class _HardSign(nn.Module):
    """Piecewise constant in its input (a BNN exported without its straight-through
    estimator): no input gradient at all."""

    def forward(self, x):
        return torch.where(x.flatten(1)[:, :10] < 0.5, -1.0, 1.0) * torch.arange(1.0, 11.0)


@pytest.mark.parametrize("cls", [APGD, APGDT, FABT, FGSM, PGD])
def test_a_model_without_input_gradient_meets_zero_gradients_not_an_error(small, cls):
    _, x, _ = small
    model = _HardSign()
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = cls(model, eps=0.05)
    assert torch.equal(atk.input_gradient(x, y), torch.zeros_like(x))
    result = atk.run(x, y)
    assert result.linf.max() <= 0.05 + 1e-6
