"""The figure measures: the toy AND surface (Galloway Figures 3-4), the logit sweep (Galloway
Figure 5) and the first-layer activation norms (Panda Figure 6) — closed forms on linear
models, finite differences, a shipped spec end to end, and their spec errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bnnrobust.experiments import LocalExecutor
from bnnrobust.experiments.measures import MeasureError, Task, measure_named
from bnnrobust.experiments.measures.activation_norm import first_layer_norms
from bnnrobust.experiments.measures.base import train_request, trained_model
from bnnrobust.experiments.measures.logit_sweep import eps_grid, flip_eps, label_logit_change
from bnnrobust.experiments.measures.toy_surface import surface
from bnnrobust.experiments.parse import load
from bnnrobust.experiments.runner import reproduce
from bnnrobust.experiments.spec import Column, Profile, SpecError
from bnnrobust.experiments.store import ResultStore, Unit
from bnnrobust.models import build
from bnnrobust.report import report

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


QUICK = Profile("quick", epochs=1, test_points=10, seeds=(0,), chunk=10, time_limit=5.0)


def column_for(measure: str, label: str, attack: str, params: dict | None = None,
               options: dict | None = None) -> Column:
    """A column validated by the measure, as the spec loader makes it."""
    m = measure_named(measure)
    opts = m.Options.create(m.name, dict(options or {}))
    return Column(label, attack, m.column_params(attack, dict(params or {}), opts, QUICK),
                  tuple(sorted(params or {})), opts)


def task_for(measure: str, column: Column, seed: int = 0) -> Task:
    return Task(Unit("t/t", "quick", "m", seed, column.label, {}, 0), measure, "mnist", None,
                column, column.params_for(seed))


# ---------------------------------------------------------------- toy surface
def test_surface_is_the_sigmoid_and_its_exact_derivative_on_a_linear_model():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -2.0]]))
        model.bias.fill_(0.5)
    out, grad = surface(model, grid=5, low=0.0, high=1.0)
    axis = torch.linspace(0, 1, 5)
    x2, x1 = torch.meshgrid(axis, axis, indexing="ij")
    f = torch.sigmoid(3 * x1 - 2 * x2 + 0.5)
    assert torch.allclose(out, f, atol=1e-6)
    assert torch.allclose(grad, -2 * f * (1 - f), atol=1e-6)


def test_galloway_figure3_quick_learns_and_and_matches_finite_differences(tmp_path):
    spec = load(EXPERIMENTS / "galloway2018" / "figure3.toml")
    with ResultStore(tmp_path / "s.sqlite") as store:
        summary = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                            cache_dir=str(tmp_path / "ckpt"), progress=False)
        assert summary.computed == 2 and summary.missing is None
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
        rows = {r.unit.model: r.value for r in store.rows(spec=spec.name)}
    (table,) = rep.tables
    for model in table.rows:
        assert table.rows[model]["AND accuracy (%)"].values == [100.0]
    # the stored derivative is autograd's, and for the smooth full-precision model autograd
    # equals a central difference of F along x2
    full = spec.model_plans("quick")[0]
    model = trained_model(train_request(full, spec.profile("quick"), "and", 0), device="cpu",
                          data_root=None, cache_dir=str(tmp_path / "ckpt")).model.eval()
    value = rows[full.label]
    _, grad = surface(model, grid=value["grid"], low=0.0, high=1.0)
    assert torch.allclose(torch.tensor(value["derivative"]), grad, rtol=1e-4, atol=1e-9)
    h, point = 1e-3, torch.tensor([[0.37, 0.55]], requires_grad=True)
    (g,) = torch.autograd.grad(torch.sigmoid(model(point)).sum(), point)
    with torch.no_grad():
        up = torch.sigmoid(model(point + torch.tensor([[0.0, h]]))).item()
        down = torch.sigmoid(model(point - torch.tensor([[0.0, h]]))).item()
    assert g[0, 1].item() == pytest.approx((up - down) / (2 * h), rel=1e-3, abs=1e-6)
    assert (tmp_path / "r" / "galloway2018" / "figure3.png").stat().st_size > 1000


# ---------------------------------------------------------------- logit sweep
def test_logit_sweep_is_the_closed_form_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x = 0.3 + 0.4 * torch.rand(5, 6)
    y = torch.tensor([0, 2, 1, 2, 0])
    column = column_for("logit_sweep", "T=0.5", "fgsm", {"temperature": 0.5},
                        {"eps_max": 0.2, "points": 5, "label": 2, "clamp": False})
    value = measure_named("logit_sweep").compute(task_for("logit_sweep", column), model, x, y)
    assert value["index"] == 1 and value["eps"] == eps_grid(0.2, 5)
    lin = model[1]
    w, b = lin.weight.detach(), lin.bias.detach()
    x0 = x[1]
    p = torch.softmax((w @ x0 + b) / 0.5, dim=0)
    direction = ((p - nn.functional.one_hot(torch.tensor(2), 3)) @ w).sign()
    for e, logits in zip(value["eps"], value["logits"], strict=True):
        expected = w @ (x0 + e * direction) + b
        assert torch.allclose(torch.tensor(logits), expected, atol=1e-4)


def test_flip_eps_and_label_logit_change():
    value = {"label": 1, "eps": [-0.2, -0.1, 0.0, 0.1, 0.2],
             "logits": [[5, 0], [0, 1], [0, 2], [0, 1.5], [3, 1]]}
    assert flip_eps(value) == -0.2  # a tie in |ε| goes to the negative side
    value["logits"][0] = [0, 9]  # now only +0.2 flips
    assert flip_eps(value) == 0.2
    value["logits"][1] = [9, 0]
    assert flip_eps(value) == -0.1
    assert label_logit_change(value) == pytest.approx(1 - 2)
    assert flip_eps({"label": 0, "eps": [0.0, 0.1], "logits": [[1, 0], [1, 0]]}) is None


def test_logit_sweep_without_the_label_in_the_test_points_says_so():
    column = column_for("logit_sweep", "T=1", "fgsm", {}, {"label": 7})
    with pytest.raises(MeasureError, match="no test point among the first 3 has label 7"):
        measure_named("logit_sweep").compute(task_for("logit_sweep", column),
                                             nn.Sequential(nn.Flatten(), nn.Linear(4, 10)),
                                             torch.rand(3, 4), torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------- activation norms
def test_first_layer_norms_are_the_mean_absolute_pre_activation():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.Linear(4, 2))
    x = torch.rand(7, 6)
    expected = (x @ model[1].weight.T + model[1].bias).abs().mean(1)
    assert torch.allclose(torch.tensor(first_layer_norms(model, x, batch_size=3)), expected,
                          atol=1e-6)


def test_activation_norm_of_an_fgsm_column_uses_the_attacked_inputs():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    x, y = 0.3 + 0.4 * torch.rand(4, 6), torch.tensor([0, 1, 1, 0])
    column = column_for("activation_norm", "FGSM", "fgsm", {"eps": 0.1})
    value = measure_named("activation_norm").compute(task_for("activation_norm", column, 3),
                                                     model, x, y)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    x_adv = x + 0.1 * (w[1 - y] - w[y]).sign()  # FGSM's closed form on two classes
    expected = (x_adv @ w.T + b).abs().mean(1)
    assert torch.allclose(torch.tensor(value["norms"]), expected, atol=1e-5)


NORM_SPEC = """
title = "norms"
paper = "panda2019"
dataset = "mnist"
measure = "activation_norm"
[profiles.paper]
epochs = 1
test_points = 40
seeds = [0]
chunk = 20
[profiles.quick]
epochs = 1
train_limit = 200
test_points = 40
seeds = [0]
chunk = 20
[[models]]
label = "BNN"
family = "fc-bnn"
params = { width = 8, depth = 1 }
[[attacks]]
label = "clean"
attack = "clean"
[[attacks]]
label = "FGSM ε=0.3"
attack = "fgsm"
params = { eps = 0.3 }
"""


def test_activation_norm_tables_read_the_stored_norms(tmp_path, fake_mnist):
    path = tmp_path / "panda2019" / "norms.toml"
    path.parent.mkdir()
    path.write_text(NORM_SPEC, encoding="utf-8")
    spec = load(path)
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
        stored = {(r.unit.attack, r.unit.chunk): r.value["norms"]
                  for r in store.rows(spec=spec.name)}
    (table,) = rep.tables
    assert table.columns == ["clean: median", "clean: max", "FGSM ε=0.3: median",
                             "FGSM ε=0.3: max", "FGSM ε=0.3: above clean max (%)"]
    clean = sorted(stored[("clean", 0)] + stored[("clean", 1)])
    adv = sorted(stored[("FGSM ε=0.3", 0)] + stored[("FGSM ε=0.3", 1)])
    cells = table.rows["BNN"]
    assert cells["clean: median"].values == [clean[20]]
    assert cells["clean: max"].values == [clean[-1]]
    assert cells["FGSM ε=0.3: above clean max (%)"].values == [
        100.0 * sum(v > clean[-1] for v in adv) / 40]
    assert (tmp_path / "r" / "panda2019" / "norms.png").stat().st_size > 1000


# ---------------------------------------------------------------- spec errors
@pytest.mark.parametrize(("spec", "old", "new", "message"), [
    ("galloway2018/figure3", 'dataset = "and"', 'dataset = "mnist"',
     r'toy_surface measure needs dataset = "and"'),
    ("galloway2018/figure3", "grid = 101", "grid = 1", r"grid must be an integer from 2"),
    ("galloway2018/figure3", "range = [0.0, 1.0]", "range = [1.0, 0.0]",
     r"range must be \[low, high\] with low < high"),
    ("galloway2018/figure5", "temperature = 0.6 }", "temperature = 0.6, eps = 0.1 }",
     r"eps comes from options eps_max and points"),
    ("galloway2018/figure5", "temperature = 0.6 }", "temperature = 0 }",
     r"temperature must be a finite number > 0"),
    ("galloway2018/figure5", "temperature = 0.6 }", "temprature = 0.6 }",
     r"fgsm has no parameter 'temprature'; valid parameters: bpda, "),
    ("galloway2018/figure5", "label = 1 }", "label = 1, eps_mx = 0.3 }",
     r"the logit_sweep measure has no option 'eps_mx'; valid options: eps_max, points"),
    ("galloway2018/figure5", "points = 61, label = 1 }", "points = 2, label = 1 }",
     r"points must be an integer >= 3"),
    ("galloway2018/figure5", "points = 61, label = 1 }", "points = 61, label = -1 }",
     r"label must be an integer >= 0"),
    ("galloway2018/figure5", "points = 61, label = 1 }", "points = 61, label = 1, clamp = 1 }",
     r"clamp must be true or false"),
    ("galloway2018/figure5", "eps_max = 0.3, points = 61, label = 1 }",
     "eps_max = 0, points = 61, label = 1 }", r"eps_max must be a number > 0"),
    ("panda2019/figure6", "params = { eps = 0.1 }",
     "params = { eps = 0.1 }\noptions = { all_targets = true }",
     r"activation_norm takes no all_targets"),
    ("panda2019/figure6", 'attack = "clean"', 'attack = "surface"',
     r"attack = 'surface' is unknown \(an attack the 'activation_norm' measure runs\)"),
    ("panda2019/figure6", 'attack = "clean"', 'attack = "clean"\nparams = { eps = 0.1 }',
     r"clean takes no attack parameters"),
])
def test_figure_spec_errors(tmp_path, spec, old, new, message):
    text = (EXPERIMENTS / f"{spec}.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / f"{spec}.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(SpecError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- input sweep (Khalil Fig. 1)
def test_input_sweep_is_the_bnn_and_its_approximate_bnn_in_closed_form():
    from bnnrobust.experiments.measures.input_sweep import sign_changes

    torch.manual_seed(3)
    model = build("fc-bnn", depth=1, width=4, in_features=6, num_classes=3).eval()
    lin, act, out = model.body[1], model.body[2], model.body[3]
    with torch.no_grad():
        act.bn.running_mean.uniform_(-1, 1)
        act.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 6)
    column = column_for("input_sweep", "sweep", "sweep", {},
                        {"index": 1, "feature": 2, "radius": 0.2, "points": 5})
    value = measure_named("input_sweep").compute(task_for("input_sweep", column), model, x,
                                                 torch.zeros(2, dtype=torch.long))
    first, second = value["classes"]
    w = torch.where(lin.weight >= 0, 1.0, -1.0)
    bn = act.bn
    for v, bnn, approx in zip(value["values"], value["bnn"], value["approximate"], strict=True):
        z = x[1].clone()
        z[2] = v
        a = (w @ z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        for h, got in ((torch.where(a >= 0, 1.0, -1.0), bnn), (a.clamp(-1, 1), approx)):
            logits = out.weight @ h + out.bias
            assert got == pytest.approx([logits[first].item(), logits[second].item()], abs=1e-4)
    assert value["values"][0] == pytest.approx(max(0.0, x[1, 2].item() - 0.2), abs=1e-6)
    assert sign_changes([1, -2, 0, -1, 3, 3]) == 2


def test_khalil_figure1_quick_runs_and_reports(tmp_path, fake_mnist):
    spec = load(EXPERIMENTS / "khalil2019" / "figure1.toml")
    with ResultStore(tmp_path / "s.sqlite") as store:
        summary = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                            cache_dir=str(tmp_path / "ckpt"), progress=False)
        assert summary.computed == 1
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
    (table,) = rep.tables
    assert set(table.rows["3x30"]) == {"sign changes (BNN)", "sign changes (approximate)",
                                       "largest gap"}
    assert (tmp_path / "r" / "khalil2019" / "figure1.png").stat().st_size > 1000
