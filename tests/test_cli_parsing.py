"""The command line as people type it: options before or after positionals, ``--opt=value``,
several values after one option, and one clear paragraph with exit status 2 for every usage
error and every bad value, never a traceback."""

from __future__ import annotations

import pytest
import typer
from conftest import run_cli as run

from bnnrobust.cli import app
from bnnrobust.cli.main import UsageError, normalize

#: per command: its positionals and a set of options (with values) to parse
SAMPLES = {
    "datasets": ([], ["--no-verify", "--root", "/tmp/d"]),
    "models": ([], []),
    "summary": (["fc-bnn"], ["--param", "width=8"]),
    "train": (["fc-bnn"], ["--epochs", "2", "--param", "width=8", "--lr", "0.01"]),
    "eval": (["m.pt"], ["--passes", "3", "--limit", "10"]),
    "attack": (["m.pt"], ["--eps", "0.1", "0.2", "--attack", "pgd", "--steps", "5"]),
    "blackbox": (["m.pt"], ["--eps", "0.3", "--rounds", "2"]),
    "milp": (["m.pt"], ["--eps", "0.01", "--points", "3", "--backend", "highs"]),
    "iprop": (["m.pt"], ["--eps", "0.02", "--step", "3"]),
    "certify": (["m.pt"], ["--eps", "0.01", "0.02", "--points", "4"]),
    "reproduce": (["galloway2018/table1", "khalil2019"], ["--profile", "paper", "--workers",
                                                          "2"]),
    "report": (["galloway2018/table1"], ["--out", "/tmp/r", "--profile", "paper"]),
    "audit": (["m.pt"], ["--eps", "0.1", "0.3", "--points", "20"]),
    "leaderboard": (["a/audit.json", "b"], ["--out", "/tmp/board"]),
}


def parsed(argv: list[str]) -> dict:
    """The parameters click reads from ``bnnrobust ARGV`` (after :func:`normalize`)."""
    args = normalize(argv)
    group = typer.main.get_command(app)
    sub = group.commands[args[0]]
    return sub.make_context(args[0], args[1:]).params


def with_equals(options: list[str]) -> list[str]:
    """``--opt value`` as ``--opt=value`` (the first value of each option)."""
    out, i = [], 0
    while i < len(options):
        if options[i].startswith("--") and i + 1 < len(options) \
                and not options[i + 1].startswith("--"):
            out.append(f"{options[i]}={options[i + 1]}")
            i += 2
        else:
            out.append(options[i])
            i += 1
    return out


def test_every_command_is_sampled():
    assert set(SAMPLES) == {c.name or c.callback.__name__ for c in app.registered_commands}


@pytest.mark.parametrize("command", sorted(SAMPLES))
def test_options_before_or_after_positionals_and_with_equals_parse_the_same(command):
    positionals, options = SAMPLES[command]
    after = parsed([command, *positionals, *options])
    assert parsed([command, *options, *positionals]) == after
    assert parsed([command, *with_equals(options), *positionals]) == after
    assert parsed([command, *positionals, *with_equals(options)]) == after


def test_several_values_after_one_option():
    assert parsed(["certify", "--eps", "0.01", "CKPT"])["eps"] == [0.01]
    assert str(parsed(["certify", "--eps", "0.01", "CKPT"])["checkpoint"]) == "CKPT"
    params = parsed(["audit", "--eps=0.1", "0.2", "CKPT", "--points", "5"])
    assert params["eps"] == [0.1, 0.2] and str(params["checkpoint"]) == "CKPT"
    assert parsed(["attack", "CKPT", "--eps", "0.1", "--eps", "0.3"])["eps"] == [0.1, 0.3]
    # a negative number is a value (and then refused as a budget, see below)
    assert parsed(["attack", "CKPT", "--eps", "0.1", "-0.2"])["eps"] == [0.1, -0.2]
    with pytest.raises(UsageError, match="--points takes one value and was given more than"):
        normalize(["milp", "CKPT", "--points", "3", "--points", "4"])


USAGE_ERRORS = [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["milp", "CKPT", "--colour", "red"], "No such option: --colour"),
    (["attack", "CKPT", "--eps", "abc"], "Invalid value for '--eps'"),
    (["milp", "CKPT", "--eps", "0.01", "0.02"], "unexpected extra argument(s) (0.02)"),
    (["milp", "CKPT", "--eps", "0.01", "--eps", "0.02"], "--eps takes one value and was "
                                                         "given more than once"),
    (["attack", "CKPT", "--eps", "0.1", "-0.2"], "--eps -0.2 is not a budget"),
    (["eval"], "give the model once: a checkpoint, --model package.module:factory or --onnx "
               "FILE (none given)"),
    (["train"], "Missing argument 'model'"),
    (["milp", "CKPT", "--points", "many"], "Invalid value for '--points'"),
    (["milp", "--help-me"], "No such option: --help-me"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_usage_errors_are_one_paragraph_and_exit_2(monkeypatch, capsys, tmp_path, args,
                                                   message):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not a checkpoint")
    args = [str(ckpt) if a == "CKPT" else a for a in args]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (args, out, err)
    assert_one_paragraph(err, message)


def assert_one_paragraph(err: str, message: str) -> None:
    text = err.strip()
    assert text.startswith("error:"), err
    assert "\n\n" not in text and "Traceback" not in text, err
    assert message in " ".join(text.split()), err


def test_certify_with_the_budget_before_the_checkpoint(monkeypatch, capsys, fake_mnist,
                                                       tmp_path):
    pytest.importorskip("ortools")
    ckpt = tmp_path / "fc.pt"
    assert run(monkeypatch, capsys, "train", "fc-bnn", "--param", "width=8", "--epochs", "1",
               "--out", str(ckpt))[0] == 0
    code, out, err = run(monkeypatch, capsys, "certify", "--eps", "0.01", str(ckpt),
                         "--points", "2", "--time-limit", "10")
    assert code == 0, err
    assert "certify ε=0.01 (2 pixel steps): certified accuracy" in " ".join(out.split())
    assert "of 2 points" in out


#: per command: bad values (each must be refused before any work, in one paragraph)
BAD_VALUES = {
    "summary": [(["resnet"], "unknown model 'resnet'")],
    "train": [(["fc-bnn", "--param", "width"], "--param expects key=value"),
              (["fc-bnn", "--dataset", "svhn"], "unknown dataset 'svhn'"),
              (["fc-bnn", "--lr", "nan"], "lr"),
              (["fc-bnn", "--lr", "inf"], "lr must be a finite number > 0"),
              (["fc-bnn", "--out", "DIR"], "is a folder; give a file path"),
              (["fc-bnn", "--json", "FILE/x.json"], "is a file, not a folder")],
    "eval": [(["MISSING"], "does not exist"), (["DIR"], "is a folder; give the .pt file"),
             (["TEXT"], "checkpoint"), (["CKPT", "--dataset", "svhn"], "unknown dataset")],
    "attack": [(["CKPT", "--eps", "0"], "--eps 0 is not a budget"),
               (["CKPT", "--eps", "1.5"], "--eps 1.5 is not a budget"),
               (["CKPT", "--eps", "nan"], "--eps nan is not a budget"),
               (["CKPT", "--attack", "deepfool"], "--attack 'deepfool' is unknown"),
               (["CKPT", "--target", "nearest"], "--target must be one of second"),
               (["CKPT", "--json", "DIR"], "is a folder; give a file path"),
               (["MISSING"], "does not exist")],
    "blackbox": [(["CKPT", "--eps", "0"], "--eps 0 is not a budget"),
                 (["CKPT", "--eps", "2"], "--eps 2 is not a budget"),
                 (["CKPT", "--attack", "cw"], "--attack 'cw' cannot be crafted on the substitute"),
                 (["CKPT", "--rounds", "0"], "rounds must be an integer >= 1"),
                 (["DIR"], "is a folder")],
    "milp": [(["CKPT", "--eps", "0"], "eps must be a finite number > 0"),
             (["CKPT", "--eps", "1.5"], "eps must be at most 1"),
             (["CKPT", "--eps", "nan"], "eps must be a finite number > 0"),
             (["CKPT", "--backend", "gurobi"], "unknown backend 'gurobi'"),
             (["CKPT", "--json", "DIR"], "is a folder; give a file path"),
             (["MISSING"], "does not exist")],
    "iprop": [(["CKPT", "--eps", "-1"], "eps must be a finite number > 0"),
              (["CKPT", "--step", "fast"], "--step must be 'adaptive' or a whole number"),
              (["CKPT", "--warm-start", "pgd"], "unknown warm_start 'pgd'"),
              (["TEXT"], "checkpoint")],
    "certify": [(["CKPT", "--eps", "0"], "--eps 0 is not a budget"),
                (["CKPT", "--eps", "1.2"], "--eps 1.2 is not a budget"),
                (["CKPT", "--eps", "nan"], "--eps nan is not a budget"),
                (["CKPT", "--time-limit", "0"], "time_limit must be a finite number > 0"),
                (["DIR"], "is a folder")],
    "reproduce": [(["galloway2018/tabel1"], "no spec 'galloway2018/tabel1'"),
                  (["galloway2018/table1", "--profile", "fast"], "--profile must be one of"),
                  (["galloway2018/table1", "--store", "DIR"], "is a folder; give a file path"),
                  (["galloway2018/table1", "--report", "FILE"], "is a file; give a folder"),
                  (["galloway2018/table1", "--executor", "spark"], "unknown executor 'spark'")],
    "report": [(["--out", "FILE"], "is a file; give a folder"),
               (["--store", "DIR"], "is a folder; give a file path"),
               (["nosuch/spec"], "no spec 'nosuch/spec'")],
    "audit": [(["CKPT", "--eps", "0"], "--eps 0 is not a budget"),
              (["CKPT", "--eps", "1.5"], "--eps 1.5 is not a budget"),
              (["CKPT", "--out", "FILE"], "is a file; give a folder"),
              (["CKPT", "--cw-steps", "0", "--points", "5"], "cw_steps must be an integer >= 1"),
              (["CKPT", "--exact-points", "-1", "--points", "5"],
               "exact_points must be an integer >= 0"),
              (["CKPT", "--eot", "0", "--points", "5"], "eot_samples must be an integer >= 1"),
              (["CKPT", "--exact-time", "0", "--points", "5"],
               "exact_time_limit must be a finite number > 0"),
              (["MISSING"], "does not exist"),
              (["CKPT", "--suite", "aa"], "--suite must be one of both, autoattack, bnnrobust"),
              (["CKPT", "--records", "FILE"], "must end in .jsonl (JSON lines) or .csv"),
              (["CKPT", "--normalize", "0.5,0.5"],
               "--normalize fit --model/--onnx to bnnrobust's contract")],
    "leaderboard": [(["MISSING"], "does not exist"), (["FILE"], "is not a JSON model card"),
                    (["DIR", "--out", "FILE"], "is a file; give a folder")],
}


def test_every_command_with_arguments_has_bad_values():
    assert set(BAD_VALUES) == set(SAMPLES) - {"datasets", "models"}


@pytest.mark.parametrize(("command", "args", "message"),
                         [(c, a, m) for c, cases in sorted(BAD_VALUES.items()) for a, m in cases])
def test_bad_values_are_one_paragraph_and_exit_2(monkeypatch, capsys, fake_mnist, tmp_path,
                                                 command, args, message, fc_checkpoint):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    names = {"CKPT": str(fc_checkpoint), "DIR": str(tmp_path / "dir"),
             "FILE": str(tmp_path / "file"), "FILE/x.json": str(tmp_path / "file" / "x.json"),
             "MISSING": str(tmp_path / "none.pt"), "TEXT": str(tmp_path / "text.pt")}
    code, out, err = run(monkeypatch, capsys, command, *[names.get(a, a) for a in args])
    assert code == 2, (command, args, out, err)
    assert_one_paragraph(err, message)


@pytest.fixture(scope="module")
def fc_checkpoint(tmp_path_factory):
    """A tiny fully connected BNN trained for one epoch on generated MNIST-shaped data."""
    import torch

    from bnnrobust.models import build
    from bnnrobust.train import fit, save

    torch.manual_seed(0)
    model = build("fc-bnn", width=8)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    fit(model, (x, y), epochs=1, batch_size=32, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "fc.pt"
    save(model, path, train_config={"dataset": "mnist"})
    return path
