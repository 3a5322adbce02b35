"""The command line: each command on generated data, --help of every option, clear errors."""

from __future__ import annotations

import sys

import pytest
from conftest import run_cli as run

from bnnrobust.cli import app

COMMANDS = {
    "datasets": ["--root", "--verify"],
    "models": [],
    "summary": ["--param"],
    "train": ["--dataset", "--param", "--epochs", "--batch-size", "--lr", "--seed", "--limit",
              "--clip-weights", "--out", "--device", "--root", "--json", "--adv", "--adv-eps",
              "--adv-steps", "--adv-alpha", "--adv-start", "--adv-label", "--adv-loss-label",
              "--adv-crafting-bn", "--adv-sigma"],
    "eval": ["--dataset", "--limit", "--passes", "--device", "--root"],
    "attack": ["--dataset", "--attack", "--eps", "--steps", "--alpha", "--restarts", "--target",
               "--eot", "--bpda", "--limit", "--passes", "--batch-size", "--seed",
               "--diagnostics", "--device", "--root", "--json"],
    "blackbox": ["--dataset", "--attack", "--eps", "--substitute", "--param", "--rounds",
                 "--lambda", "--epochs", "--holdout", "--tau", "--reservoir", "--white-box",
                 "--seed", "--limit", "--device", "--root", "--json"],
    "milp": ["--dataset", "--eps", "--points", "--time-limit", "--backend", "--target", "--hint",
             "--threads", "--workers", "--executor", "--address", "--seed", "--root", "--json",
             "--records", "--save-adv", "--model", "--onnx"],
    "iprop": ["--dataset", "--eps", "--points", "--time-limit", "--sub-time-limit", "--step",
              "--warm-start", "--warm-start-time", "--target", "--workers", "--executor",
              "--address", "--seed", "--root", "--json", "--records", "--save-adv",
              "--model", "--onnx"],
    "certify": ["--dataset", "--eps", "--points", "--time-limit", "--min-eps", "--workers",
                "--executor", "--address", "--root", "--json", "--records", "--save-adv",
                "--model", "--onnx"],
    "reproduce": ["--profile", "--executor", "--workers", "--address", "--device", "--store",
                  "--list", "--report"],
    "report": ["--profile", "--store", "--out"],
    "audit": ["--eps", "--dataset", "--points", "--suite", "--per-attack", "--aa-steps",
              "--aa-queries", "--restarts", "--steps", "--eot", "--cw-steps",
              "--transfer", "--holdout", "--exact-points", "--exact-time", "--seed", "--device",
              "--root", "--out", "--records", "--save-adv", "--model", "--weights", "--onnx",
              "--input-shape", "--classes", "--normalize", "--bounds", "--output-index",
              "--logits-from-probs"],
    "leaderboard": ["--out"],
}


def test_every_command_is_documented():
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert names == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_explains_every_option(monkeypatch, capsys, command):
    code, out, _ = run(monkeypatch, capsys, command, "--help")
    assert code == 0
    for option in COMMANDS[command]:
        assert option in out, f"{command} --help does not mention {option}"


def test_train_then_eval(monkeypatch, capsys, fake_mnist, tmp_path):
    ckpt = tmp_path / "out" / "m.pt"
    report = tmp_path / "m.json"
    code, out, err = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "precision=full",
                         "--param", "width=8", "--epochs", "2", "--batch-size", "32",
                         "--out", str(ckpt), "--device", "cpu", "--json", str(report))
    assert code == 0, err
    assert "trained: galloway-cnn" in out and "test accuracy:" in out and str(ckpt) in out
    assert ckpt.exists() and '"final_test_accuracy"' in report.read_text()
    code, out, _ = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "precision=full",
                       "--param", "width=8", "--epochs", "2", "--batch-size", "32")
    assert code == 0 and "cached: galloway-cnn" in out
    code, out, _ = run(monkeypatch, capsys, "eval", str(ckpt), "--limit", "50")
    assert code == 0 and "clean accuracy on mnist test (50 images)" in out


def test_datasets_and_models(monkeypatch, capsys, fake_mnist):
    code, out, _ = run(monkeypatch, capsys, "datasets")
    assert code == 0 and "mnist" in out and "verified" in out and "missing" in out
    code, out, _ = run(monkeypatch, capsys, "models")
    for name in ("galloway-cnn", "fc-bnn", "fcn", "alexnet-cifar", "resnet20", "toy-mlp"):
        assert name in out
    code, out, _ = run(monkeypatch, capsys, "summary", "galloway-cnn", "--param", "width=32")
    assert code == 0 and "BinaryConv2d" in out and "compression" in out


@pytest.mark.parametrize(("args", "message"), [
    (["train", "resnet"], "unknown model 'resnet'"),
    (["train", "fc-bnn", "--param", "width"], "--param expects key=value"),
    (["train", "fc-bnn", "--param", "wdth=3"], "valid parameters: depth"),
    (["train", "fc-bnn", "--dataset", "svhn"], "unknown dataset 'svhn'"),
    (["train", "fc-bnn", "--epochs", "0"], "epochs must be a positive integer"),
    (["train", "fc-bnn", "--device", "tpu"], "unknown device 'tpu'"),
    (["eval", "/nonexistent.pt"], "does not exist"),
    (["train", "fc-bnn", "--batch-size", "0"], "batch_size must be a positive integer"),
])
def test_errors_are_one_clear_line(monkeypatch, capsys, fake_mnist, args, message):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_cuda_request_without_cuda(monkeypatch, capsys, fake_mnist):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(monkeypatch, capsys, "train", "fc-bnn", "--device", "cuda")
    assert code == 2 and "no CUDA device" in err


def test_attack_command(monkeypatch, capsys, fake_mnist, tmp_path):
    ckpt = tmp_path / "m.pt"
    code, _, err = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "precision=full",
                       "--param", "width=8", "--epochs", "1", "--out", str(ckpt))
    assert code == 0, err
    report = tmp_path / "a.json"
    code, out, err = run(monkeypatch, capsys, "attack", str(ckpt), "--attack", "fgsm",
                         "--eps", "0.1", "0.3", "--limit", "20", "--json", str(report))
    assert code == 0, err
    assert "fgsm" in out and "saturated_softmax" in out
    import json

    data = json.loads(report.read_text())
    assert [r["eps"] for r in data["rows"]] == [0.1, 0.3]
    assert {f["name"] for f in data["flags"]} >= {"no_collapse_at_large_eps", "saturated_softmax"}
    code, out, err = run(monkeypatch, capsys, "attack", str(ckpt), "--attack", "cw", "--steps", "5",
                         "--target", "all", "--limit", "3", "--no-diagnostics")
    assert code == 0, err
    assert "n" in out
    code, _, err = run(monkeypatch, capsys, "attack", str(ckpt), "--attack", "deepfool")
    assert code == 2 and "--attack 'deepfool' is unknown; valid attacks: fgsm" in err


def test_train_with_adversarial_training(monkeypatch, capsys, fake_mnist):
    code, out, err = run(monkeypatch, capsys, "train", "fc-bnn", "--param", "width=16",
                         "--epochs", "2", "--adv", "pgd", "--adv-eps", "0.3", "--adv-steps", "3",
                         "--adv-start", "1")
    assert code == 0, err
    assert "trained: fc-bnn" in out
    for args, message in (
        (["--adv", "madry"], "unknown adversarial training 'madry'"),
        (["--adv", "pgd", "--adv-running-stats", "tf"], "running_stats must be one of"),
        (["--adv", "fgsm", "--adv-running-stats", "mnist-attack"], "trains with fgsm-random or pgd"),
        (["--adv", "pgd", "--adv-fresh-optimizer", "yes"], "Got unexpected extra argument"),
        (["--adv", "pgd", "--adv-pgd-start", "none"], "pgd_start must be one of unclipped, "
                                                      "clipped, got 'none'"),
    ):
        code, _, err = run(monkeypatch, capsys, "train", "fc-bnn", *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err


def test_blackbox_command(monkeypatch, capsys, fake_mnist, tmp_path):
    ckpt = tmp_path / "m.pt"
    code, _, err = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "precision=full",
                       "--param", "width=4", "--epochs", "1", "--out", str(ckpt))
    assert code == 0, err
    report = tmp_path / "bb.json"
    code, out, err = run(monkeypatch, capsys, "blackbox", str(ckpt), "--rounds", "2", "--epochs",
                         "1", "--holdout", "20", "--param", "hidden=16", "--json", str(report))
    assert code == 0, err
    assert "oracle queries: 40 for substitute training" in " ".join(out.split())
    assert "transfer_stronger_than_white_box" in out
    assert '"oracle_adversarial_accuracy"' in report.read_text()
    code, _, err = run(monkeypatch, capsys, "blackbox", str(ckpt), "--rounds", "0")
    assert code == 2 and "rounds must be an integer >= 1" in err


def test_attack_and_eval_count_options(monkeypatch, capsys, fake_mnist, tmp_path):
    ckpt = tmp_path / "m.pt"
    assert run(monkeypatch, capsys, "train", "fc-bnn", "--param", "width=8", "--epochs", "1",
               "--out", str(ckpt))[0] == 0
    for args, message in (
        (["eval", str(ckpt), "--passes", "0"], "--passes must be >= 1, got 0"),
        (["attack", str(ckpt), "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["attack", str(ckpt), "--passes", "0", "--limit", "4"], "--passes must be >= 1"),
    ):
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)


def test_exact_attack_commands(monkeypatch, capsys, fake_mnist, tmp_path):
    pytest.importorskip("ortools")
    import json

    code, out, err = run(monkeypatch, capsys, "train", "fc-bnn", "--param", "width=8",
                         "--epochs", "1", "--out", str(tmp_path / "fc.pt"))
    assert code == 0, err
    ckpt = str(tmp_path / "fc.pt")
    code, out, err = run(monkeypatch, capsys, "milp", ckpt, "--points", "3", "--eps", "0.01",
                         "--time-limit", "20", "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    assert "milp cpsat ε=0.01: 3 points, proven optimal 3" in " ".join(out.split())
    data = json.loads((tmp_path / "m.json").read_text())
    assert len(data["points"]) == 3 and data["settings"]["backend"] == "cpsat"
    assert all(p["status"] == "optimal" and p["eps_steps"] == 2 and p["linf"] <= 2
               for p in data["points"])
    code, out, err = run(monkeypatch, capsys, "milp", ckpt, "--points", "2", "--backend", "highs",
                         "--time-limit", "20", "--target", "untargeted")
    assert code == 0, err
    assert "milp highs" in out
    code, out, err = run(monkeypatch, capsys, "iprop", ckpt, "--points", "2", "--time-limit", "2",
                         "--sub-time-limit", "1", "--step", "1")
    assert code == 0, err
    assert "iprop ε=0.01: 2 points" in " ".join(out.split())
    code, out, err = run(monkeypatch, capsys, "certify", ckpt, "--points", "3", "--eps", "0.004",
                         "0.01", "--time-limit", "20", "--min-eps", "--json",
                         str(tmp_path / "c.json"), "--records", str(tmp_path / "c.jsonl"),
                         "--save-adv", str(tmp_path / "c.npz"))
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [(r["eps"], r["index"]) for r in rows] == [(e, i) for e in (0.004, 0.01)
                                                      for i in range(3)]
    assert all(r["attack"] == "certify" and r["status"] in ("robust", "attacked", "unknown")
               for r in rows)
    import numpy as np
    assert np.load(tmp_path / "c.npz")["x_adv_eps=0.01"].shape[0] == 3
    data = json.loads((tmp_path / "c.json").read_text())
    assert set(data["eps"]) == {"0.004", "0.01"} and len(data["minimal_eps"]) == 3
    for entry in data["eps"].values():  # every decided point names what settled it
        assert sum(entry["settled_by"].values()) == entry["robust"] + entry["attacked"]
    # several ε, given largest first, run smallest first; a point broken at the smaller ε is
    # settled at the larger by that counter-example, without a search
    code, out, err = run(monkeypatch, capsys, "certify", ckpt, "--points", "8", "--eps", "0.02",
                         "0.004", "--time-limit", "20", "--json", str(tmp_path / "c1.json"))
    assert code == 0, err
    data = json.loads((tmp_path / "c1.json").read_text())
    small, large = data["eps"]["0.004"]["points"], data["eps"]["0.02"]["points"]
    broken = [a["index"] for a in small if a["status"] == "attacked"]
    assert broken, "the test needs a point broken at one pixel step"
    assert all(b["status"] == "attacked" and b["method"] == "start"
               for b in large if b["index"] in broken)
    assert data["eps"]["0.02"]["settled_by"]["start"] == len(broken)
    code, out, err = run(monkeypatch, capsys, "certify", ckpt, "--points", "2", "--eps", "0.01",
                         "--backend", "cpsat-lp", "--time-limit", "20", "--min-eps",
                         "--tolerance", "0.001", "--json", str(tmp_path / "c2.json"))
    assert code == 0, err
    data = json.loads((tmp_path / "c2.json").read_text())
    assert data["backend"] == "cpsat-lp"
    for r in data["minimal_eps"]:
        assert r["domain"] == "continuous" and r["steps"] is None
        assert not r["proven"] or r["upper"] is None or r["upper"] - r["lower"] <= 0.001
    for args, message in [
        (["milp", ckpt, "--eps", "0"], "eps must be a finite number > 0"),
        (["milp", ckpt, "--eps", "1.5"], "eps must be at most 1"),
        (["milp", ckpt, "--time-limit", "0"], "time_limit must be a finite number > 0"),
        (["milp", ckpt, "--backend", "gurobi"], "unknown backend 'gurobi'"),
        (["milp", ckpt, "--executor", "spark"], "unknown executor 'spark'"),
        (["milp", ckpt, "--workers", "0"], "workers must be an integer >= 1"),
        (["milp", ckpt, "--target", "first"], "--target must be second, untargeted or a class"),
        (["milp", ckpt, "--points", "0"], "--points must be >= 1"),
        (["iprop", ckpt, "--step", "fast"], "--step must be 'adaptive' or a whole number"),
        (["certify", ckpt, "--eps", "-1"], "--eps -1 is not a budget"),
        (["certify", ckpt, "--backend", "gurobi"], "unknown backend 'gurobi'"),
        (["certify", ckpt, "--min-eps", "--tolerance", "0"], "--tolerance must be a finite"),
        (["certify", ckpt, "--eps", "0.002"], "allows no whole pixel step"),
    ]:
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)
    code, _, err = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "width=4",
                       "--epochs", "1", "--limit", "100", "--out", str(tmp_path / "cnn.pt"))
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "milp", str(tmp_path / "cnn.pt"))
    assert code == 2 and "use the continuous problem" in " ".join(err.split())
    code, out, err = run(monkeypatch, capsys, "milp", str(tmp_path / "cnn.pt"), "--backend",
                         "cpsat-lp", "--eps", "0.002", "--points", "1", "--time-limit", "20")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "train", "galloway-cnn", "--param", "width=4",
                       "--param", "precision=full", "--epochs", "1", "--limit", "100", "--out",
                       str(tmp_path / "full.pt"))
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "milp", str(tmp_path / "full.pt"))
    assert code == 2 and "cannot export layer" in err


def test_exact_commands_without_ortools(monkeypatch, capsys, fake_mnist, tmp_path):
    import bnnrobust.attacks

    monkeypatch.delattr(bnnrobust.attacks, "combinatorial", raising=False)
    for name in ("bnnrobust.attacks.combinatorial", "bnnrobust.attacks.combinatorial.milp"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    code, _, err = run(monkeypatch, capsys, "milp", str(tmp_path / "none.pt"))
    assert code == 2 and "the milp attack needs the 'cpsat' extra: pip install " \
        "'bnnrobust[cpsat]'" in " ".join(err.split())


def test_train_with_an_unwritable_cache_still_writes_out_and_says_so(monkeypatch, capsys,
                                                                     fake_mnist, tmp_path):
    """The cache's folder cannot be created (its parent is a file; tests run as root, which
    ignores a read-only mode): training finishes, --out is written, the warning says why."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BNNROBUST_CACHE", str(blocker / "cache"))
    ckpt = tmp_path / "m.pt"
    code, out, err = run(monkeypatch, capsys, "train", "fc-bnn", "--param", "width=8",
                         "--epochs", "1", "--out", str(ckpt), "--device", "cpu")
    assert code == 0, err
    assert "could not be written to the checkpoint cache" in " ".join(err.split())
    from bnnrobust.train import load as load_ckpt

    assert load_ckpt(ckpt).model.config["name"] == "fc-bnn" and str(ckpt) in out


def test_a_write_killed_midway_keeps_the_old_file_and_its_part_is_cleaned_later(tmp_path):
    """A subprocess killed (SIGKILL) in the middle of an atomic write leaves the destination as
    it was; the next write removes the stale temporary file."""
    import os
    import signal
    import subprocess
    import sys

    from bnnrobust.files import STALE_PART_SECONDS, atomic_write

    dest = tmp_path / "out.pt"
    dest.write_bytes(b"OLD")
    script = (
        "import sys, time\n"
        "from bnnrobust.files import atomic_path\n"
        f"with atomic_path({str(dest)!r}) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'NEW' * 1000); f.flush()\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert dest.read_bytes() == b"OLD"
    parts = list(tmp_path.glob(".out.pt.*.part"))
    assert len(parts) == 1
    fresh = tmp_path / ".out.pt.fresh.part"  # a live writer's file: young, kept
    fresh.write_bytes(b"")
    old = parts[0].stat().st_mtime - STALE_PART_SECONDS - 10
    os.utime(parts[0], (old, old))
    atomic_write(dest, b"NEWER")
    assert dest.read_bytes() == b"NEWER" and not parts[0].exists() and fresh.exists()
