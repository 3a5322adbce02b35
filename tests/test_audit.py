"""The robustness audit: the suite a model's defenses call for, the per-point worst case, a
closed form on a linear model, the report files, the CLI and its errors."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch
from conftest import run_cli as run
from torch import nn

from bnnrobust.attacks import AttackError
from bnnrobust.data import load
from bnnrobust.evaluate.audit import audit, default_eps
from bnnrobust.models import build
from bnnrobust.report import write_audit as write
from bnnrobust.train import fit

FAST = {"pgd_steps": 5, "restarts": 1, "eot_samples": 3, "cw_steps": 10,
        "substitute_rounds": 2, "exact_points": 0, "progress": False, "aa_steps": 3,
        "aa_queries": 20}


def test_linear_model_fgsm_line_is_the_closed_form_and_worst_case_is_per_point():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    x = 0.2 + 0.6 * torch.rand(60, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = 1 - y[:5]  # five misclassified points
    result = audit(model, x, y, eps=[0.05, 0.2], points=40, holdout=20, per_attack=True,
                   suite_name="bnnrobust", **FAST)
    w = model[1].weight.detach()
    xe, ye = x[20:], y[20:]
    fgsm = next(line for line in result.lines if line.label == "FGSM")
    for e in (0.05, 0.2):
        x_adv = (xe + e * (w[1 - ye] - w[ye]).sign()).clamp(0, 1)  # FGSM's closed form
        with torch.no_grad():
            ok = model(x_adv).argmax(1) == ye
        assert fgsm.accuracy[e] == pytest.approx(ok.float().mean().item())
        assert all(result.worst[e] <= line.accuracy[e] + 1e-9 for line in result.lines)
        assert result.worst[e] <= result.clean_accuracy
        assert result.worst[e] == result.lines[-1].after[e]
    assert result.clean_accuracy == 1.0  # the flipped labels are among the 20 seed points
    assert [line.kind for line in result.lines] == ["standard", "standard", "adaptive",
                                                    "transfer", "cw"]
    assert result.exact is None and "skipped" in result.exact_note
    names = {f.name for f in result.flags}
    assert {"adaptive_stronger_than_standard", "transfer_stronger_than_white_box",
            "saturated_softmax"} <= names


def test_the_suite_follows_the_defenses():
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    stochastic = build("galloway-cnn", width=4, precision="stochastic")
    labels = [line.label for line in audit(stochastic, x, y, eps=[0.1], points=10, holdout=10,
                                           transfer=False, **FAST).lines]
    assert "PGD-5 ×1 logit margin EOT-3" in labels and "FGSM EOT-3" in labels
    quantized = build("fc-bnn", width=8, input_bits=2)
    result = audit(quantized, x, y, eps=[0.1], points=10, holdout=10, transfer=False,
                   **{**FAST, "exact_points": 2})
    labels = [line.label for line in result.lines]
    assert "PGD-5 ×1 BPDA" in labels and "FGSM BPDA" in labels
    assert result.settings["non_differentiable_input"] and result.exact is None
    assert "not applicable" in result.exact_note and "input_layer" in result.exact_note


def test_exact_attack_runs_on_a_fully_connected_bnn_and_counts_in_the_worst_case(fake_mnist):
    pytest.importorskip("ortools")
    torch.manual_seed(0)
    model = build("fc-bnn", width=16)
    fit(model, load("mnist", "train"), epochs=2, batch_size=32, progress=False)
    x, y = load("mnist", "test")
    result = audit(model, x, y, eps=[0.02], points=20, holdout=30,
                   **{**FAST, "exact_points": 4, "exact_time_limit": 20.0})
    counts = result.exact[0.02]
    assert any(f.name == "exact_finds_what_gradients_miss" for f in result.flags)
    assert counts["skipped"] + counts["robust"] + counts["attacked"] + counts["unknown"] == 4
    assert all(result.worst[0.02] <= line.after[0.02] + 1e-9 for line in result.lines)


def test_report_files(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    x, y = torch.rand(30, 6), torch.randint(0, 2, (30,))
    result = audit(model, x, y, eps=[0.1], points=10, holdout=10, **FAST)
    files = write(result, tmp_path / "a", source={"checkpoint": "m.pt", "dataset": "toy"})
    md = files["markdown"].read_text()
    assert "| FGSM |" in md and "| worst case (robust accuracy) |" in md and "audit.png" in md
    assert "PGD-5 ×1 logit margin †" in md
    assert "<table class='results'>" in files["html"].read_text()
    assert files["png"].stat().st_size > 1000
    data = json.loads(files["json"].read_text())
    assert data["schema"] == "bnnrobust.audit/1" and data["model"]["source"] == "m.pt"
    assert set(data["robust_accuracy"]["worst_case"]) == {"0.1"}
    assert data["versions"]["torch"] and data["threat_model"]["norm"] == "Linf"


@pytest.mark.parametrize(("options", "message"), [
    ({"eps": [0.0]}, r"eps must be one or more budgets in \(0, 1\]"),
    ({"eps": [1.5]}, r"eps must be one or more budgets in \(0, 1\]"),
    ({"eps": [0.1], "points": 0}, "points must be an integer >= 1"),
    ({"eps": [0.1], "holdout": 30}, "holdout must leave test inputs to audit: 30 of 30"),
])
def test_bad_options(options, message):
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    with pytest.raises(AttackError, match=message):
        audit(model, torch.rand(30, 6), torch.zeros(30, dtype=torch.long), **options)


def test_default_budgets_are_the_papers():
    assert default_eps((1, 28, 28)) == (0.1, 0.2, 0.3)
    assert default_eps((3, 32, 32)) == pytest.approx((2 / 255, 4 / 255, 8 / 255))


def test_audit_command(monkeypatch, capsys, fake_mnist, tmp_path):
    ckpt = tmp_path / "m.pt"
    code, _, err = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "width=4",
                       "--param", "precision=binary", "--epochs", "1", "--out", str(ckpt))
    assert code == 0, err
    fast = ["--points", "20", "--holdout", "30", "--steps", "3", "--restarts", "1",
            "--cw-steps", "5", "--exact-points", "2", "--exact-time", "2", "--aa-steps", "3",
            "--aa-queries", "20"]
    code, out, err = run(monkeypatch, capsys, "audit", str(ckpt), *fast, "--out",
                         str(tmp_path / "audit"))
    assert code == 0, err
    text = " ".join(out.split())
    assert "20 points" in text and "worst case" in text and "saturated_softmax" in text
    assert "AutoAttack (standard)" in text and "APGD-CE" in text
    # piped: one plain progress line per attack and ε
    assert "audit: started, 30 to do" in err and "ε=0.1 APGD-CE: " in err
    for name in ("audit.md", "audit.html", "audit.json", "audit.png"):
        assert (tmp_path / "audit" / name).exists()
    data = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert data["data"]["dataset"] == "mnist" and data["threat_model"]["eps"] == [0.1, 0.2, 0.3]
    # Galloway's B model is certified on the continuous box (its first layer is real)
    assert "the continuous box" in data["exact_note"]
    for args, message in [
        (["--eps", "0"], "--eps 0 is not a budget: each ε must be a number in (0, 1]"),
        (["--points", "0"], "points must be an integer >= 1"),
        (["--holdout", "100"], "holdout must leave test inputs to audit"),
        (["--dataset", "svhn"], "unknown dataset 'svhn'"),
        (["--suite", "all"], "--suite must be one of both, autoattack, bnnrobust, got 'all'"),
    ]:
        rest = [a for i, a in enumerate(fast) if args[0] not in (a, fast[i - 1])]
        code, _, err = run(monkeypatch, capsys, "audit", str(ckpt), *rest, *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "audit", str(tmp_path / "none.pt"))
    assert code == 2 and "does not exist" in " ".join(err.split())


def test_the_audit_refuses_non_finite_inputs_before_any_attack():
    torch.manual_seed(0)
    model = build("fc-bnn", width=8).eval()
    x = torch.rand(20, 1, 28, 28)
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(AttackError, match="NaN or infinite"):
        audit(model, x, torch.zeros(20, dtype=torch.long), eps=[0.1], points=10, holdout=5,
              **FAST)


def test_cascade_and_per_attack_audits_agree_on_the_worst_case():
    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="full").eval()
    x = torch.rand(40, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    options = {**FAST, "transfer": False, "eps": [0.01, 0.03], "points": 24, "holdout": 10}
    cascade = audit(model, x, y, **options)
    full = audit(model, x, y, per_attack=True, **options)
    assert cascade.worst == full.worst and 0 < cascade.worst[0.01] < 1
    labels = [line.label for line in cascade.lines]
    assert labels[:4] == ["APGD-CE", "APGD-T", "FAB-T", "Square"] and "FGSM" in labels
    before = {0.01: cascade.clean_accuracy, 0.03: cascade.worst[0.01]}
    for e in (0.01, 0.03):
        # AutoAttack's own number is the cascade after its four attacks
        assert cascade.autoattack[e] == cascade.lines[3].after[e] >= cascade.worst[e]
        # each line reads the robust accuracy after it; the points it broke add up
        broken = sum(line.broken[e] for line in cascade.lines)
        assert broken == round(24 * (before[e] - cascade.worst[e]))
        assert all(a.after[e] >= b.after[e] for a, b in pairwise(cascade.lines))
        # later attacks ran on fewer points than every point
        assert cascade.lines[-1].points[e] < 24 and full.lines[-1].points[e] == 24
    # a point broken at 0.01 counts at 0.03 without being attacked again
    assert cascade.lines[0].points[0.03] == round(24 * cascade.worst[0.01])
    assert all(line.accuracy[0.01] is None for line in cascade.lines)
    assert all(line.accuracy[0.01] is not None for line in full.lines)
    names = {f.name for f in cascade.flags}
    assert {"score_attack_stronger_than_white_box", "adaptive_stronger_than_standard"} <= names


def test_autoattack_suite_adapts_to_few_classes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x = torch.rand(30, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    result = audit(model, x, y, eps=[0.1], points=10, holdout=10, suite_name="autoattack",
                   **FAST)
    assert [line.label for line in result.lines] == ["APGD-CE", "FAB-T", "Square"]
    assert result.autoattack == result.worst and "not in the autoattack suite" in \
        result.exact_note
