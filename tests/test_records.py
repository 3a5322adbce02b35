"""Records other tools can read: per-sample rows (JSON lines, CSV), the adversarial inputs, the
model card and the leaderboard built from several cards."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import run_cli as run
from torch import nn

from bnnrobust.errors import BnnRobustError
from bnnrobust.evaluate.audit import audit
from bnnrobust.evaluate.records import (
    FIELDS,
    adversarial_inputs,
    audit_records,
    write_records,
)
from bnnrobust.report import write_audit
from bnnrobust.report.leaderboard import Leaderboard, read_card

FAST = {"pgd_steps": 3, "restarts": 1, "eot_samples": 2, "cw_steps": 5, "substitute_rounds": 1,
        "exact_points": 0, "progress": False, "aa_steps": 3, "aa_queries": 20,
        "transfer": False}


@pytest.fixture(scope="module")
def audited():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 4)).eval()
    x = torch.rand(40, 20)
    with torch.no_grad():
        y = model(x).argmax(1)
    result = audit(model, x, y, eps=[0.05, 0.2], points=30, holdout=10, **FAST)
    return model, x[10:], y[10:], result


def test_audit_records_cover_every_point_attack_and_eps(audited):
    model, x, y, result = audited
    with torch.no_grad():
        pred = model(x).argmax(1)
    rows = audit_records(result, y=y, clean_prediction=pred, first_index=10)
    attacks = [line.label for line in result.lines]
    assert len(rows) == 2 * len(x) * len(attacks)
    assert {r["index"] for r in rows} == set(range(10, 40)) and set(rows[0]) == set(FIELDS)
    for e in (0.05, 0.2):
        last = [r for r in rows if r["eps"] == e and r["attack"] == attacks[-1]]
        # the last attack's robust_after is the worst case, point by point
        assert np.mean([r["robust_after"] for r in last]) == pytest.approx(result.worst[e])
        skipped = [r for r in rows if r["eps"] == e and not r["ran"]]
        assert all(r["success"] is None and r["l2"] is None for r in skipped)
        ran = [r for r in rows if r["eps"] == e and r["ran"]]
        assert all(r["linf"] <= e + 1e-6 for r in ran if r["attack"] != attacks[-1])
    # a cascade: the second attack ran only on the points the first left
    first = {r["index"] for r in rows if r["eps"] == 0.05 and r["attack"] == attacks[0]
             and r["robust_after"] > 0}
    assert {r["index"] for r in rows if r["eps"] == 0.05 and r["attack"] == attacks[1]
            and r["ran"]} == first


def test_adversarial_inputs_are_the_breaking_ones(audited):
    model, x, y, result = audited
    arrays = adversarial_inputs(result, x)
    for e in (0.05, 0.2):
        x_adv = torch.from_numpy(arrays[f"x_adv_eps={e:g}"])
        broken = torch.from_numpy(arrays[f"broken_eps={e:g}"])
        with torch.no_grad():
            wrong = model(x_adv).argmax(1) != y
        assert torch.equal(wrong, broken) and broken.float().mean() == pytest.approx(
            1 - result.worst[e])
        assert torch.equal(x_adv[~broken], x[~broken])
        assert (x_adv - x).abs().max() <= e + 1e-6


def test_records_files(tmp_path):
    rows = [{**dict.fromkeys(FIELDS), "eps": 0.1, "index": 3, "attack": "FGSM", "ran": True,
             "success": True, "l2": 0.5}]
    write_records(rows, tmp_path / "r.jsonl")
    assert json.loads((tmp_path / "r.jsonl").read_text())["l2"] == 0.5
    write_records(rows, tmp_path / "r.csv")
    with (tmp_path / "r.csv").open() as f:
        read = list(csv.DictReader(f))
    assert read[0]["attack"] == "FGSM" and read[0]["status"] == "" and list(read[0]) == \
        list(FIELDS)
    with pytest.raises(BnnRobustError, match="must end in .jsonl"):
        write_records(rows, tmp_path / "r.txt")


def test_model_cards_and_the_leaderboard(audited, tmp_path):
    model, x, y, result = audited
    write_audit(result, tmp_path / "a", source={"checkpoint": "a.pt", "dataset": "toy"})
    card = read_card(tmp_path / "a")
    for key in ("schema", "model", "data", "threat_model", "clean_accuracy", "robust_accuracy",
                "certified", "flags", "settings", "versions", "device", "seconds", "written"):
        assert key in card
    assert card["robust_accuracy"]["autoattack"]["0.2"] >= card["robust_accuracy"][
        "worst_case"]["0.2"]
    # a second card, more robust, ranks first
    stronger = json.loads(json.dumps(card))
    stronger["model"]["source"] = "b.pt"
    stronger["robust_accuracy"]["worst_case"] = {"0.05": 1.0, "0.2": 1.0}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "audit.json").write_text(json.dumps(stronger))
    board = Leaderboard.of([tmp_path / "a", tmp_path / "b" / "audit.json"])
    assert "(b.pt)" in board.rows()[0][0] and "(a.pt)" in board.rows()[1][0]
    files = board.write(tmp_path / "board")
    md = files["markdown"].read_text()
    assert "worst case % ε=0.2" in md and "| 100.0 |" in md
    assert "<table class='results'>" in files["html"].read_text()
    (tmp_path / "old.json").write_text(json.dumps({"worst": {}}))
    with pytest.raises(BnnRobustError, match="not a model card of schema bnnrobust.audit/1"):
        read_card(tmp_path / "old.json")
    with pytest.raises(BnnRobustError, match="does not exist"):
        read_card(tmp_path / "none.json")


def test_the_cli_writes_records_adversarials_and_a_leaderboard(monkeypatch, capsys,
                                                               fake_mnist, tmp_path):
    ckpt = tmp_path / "m.pt"
    code, _, err = run(monkeypatch, capsys, "train", "fc-bnn", "--param", "width=8",
                       "--epochs", "1", "--out", str(ckpt))
    assert code == 0, err
    fast = ["--points", "10", "--holdout", "10", "--steps", "2", "--restarts", "1",
            "--cw-steps", "3", "--aa-steps", "2", "--aa-queries", "10", "--no-transfer",
            "--eps", "0.1", "--exact-points", "0"]
    code, out, err = run(monkeypatch, capsys, "audit", str(ckpt), *fast, "--out",
                         str(tmp_path / "audit"), "--records", str(tmp_path / "r.jsonl"),
                         "--save-adv", str(tmp_path / "adv.npz"))
    assert code == 0, err
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) > 10 and json.loads(lines[0])["index"] == 10
    assert "x_adv_eps=0.1" in np.load(tmp_path / "adv.npz").files
    code, out, err = run(monkeypatch, capsys, "attack", str(ckpt), "--attack", "fgsm",
                         "--eps", "0.1", "0.2", "--limit", "20", "--no-diagnostics",
                         "--records", str(tmp_path / "a.csv"), "--save-adv",
                         str(tmp_path / "a.npz"))
    assert code == 0, err
    with (tmp_path / "a.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 40
    assert set(np.load(tmp_path / "a.npz").files) == {"x_adv_eps=0.1", "x_adv_eps=0.2"}
    code, out, err = run(monkeypatch, capsys, "leaderboard", str(tmp_path / "audit"),
                         "--out", str(tmp_path / "board"))
    assert code == 0, err
    assert "m.pt" in (tmp_path / "board" / "leaderboard.md").read_text()
    for args, message in [
        (["attack", str(ckpt), "--records", str(tmp_path / "r.txt")], "must end in .jsonl"),
        (["attack", str(ckpt), "--save-adv", str(tmp_path / "a.zip")], "must end in .npz"),
        (["leaderboard", str(tmp_path / "nothing")], "does not exist"),
    ]:
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)
