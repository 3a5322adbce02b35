"""Reproduction: spec validation errors, the runner's resume logic against the results store,
and reports (Markdown, PNG, index.html) generated from a tiny stored run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnnrobust.experiments import LocalExecutor
from bnnrobust.experiments.parse import load
from bnnrobust.experiments.runner import (
    plan,
    reproduce,
    resolve_specs,
    spec_files,
    summary_line,
)
from bnnrobust.experiments.spec import SpecError
from bnnrobust.experiments.store import ResultStore
from bnnrobust.report import report

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

TINY = """
title = "tiny"
paper = "galloway2018"
dataset = "mnist"
measure = "accuracy"

[profiles.paper]
epochs = 1
test_points = 40
seeds = [1, 2]
chunk = 20
grid = { W = [8, 16] }

[profiles.quick]
epochs = 1
train_limit = 200
test_points = 40
seeds = [1, 2]
chunk = 20
grid = { W = [8] }

[[models]]
label = "F{W}"
family = "fc-bnn"
params = { width = "{W}", depth = 1 }

[[attacks]]
label = "clean"
attack = "clean"

[[attacks]]
label = "FGSM ε=0.1"
attack = "fgsm"
params = { eps = 0.1 }

[[attacks]]
label = "PGD-logits ε=0.1"
attack = "pgd"
params = { eps = 0.1, steps = 5, loss = "margin" }
adaptive = true

[[reference]]
model = "F8"
attack = "FGSM ε=0.1"
value = 50
pm = 5
printed = "50±5%"
"""


def write_spec(folder: Path, text: str = TINY, name: str = "tiny") -> Path:
    path = folder / "galloway2018" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- spec validation
BAD_SPECS = [
    ('title = "tiny"', 'title = "tiny"\ncolour = "red"', r"unknown key colour; valid keys: title"),
    ('family = "fc-bnn"', 'family = "fc-bnm"',
     r"models\[0\]\.family = 'fc-bnm' is unknown; valid choices: .*fc-bnn"),
    ('params = { width = "{W}", depth = 1 }', 'params = { width = "{W}", dept = 1 }',
     r"models\[0\]\.params: model 'fc-bnn' has no parameter\(s\) 'dept'; valid parameters: "),
    ('attack = "fgsm"', 'attack = "fgsn"',
     r"attacks\[1\]\.attack = 'fgsn' is unknown \(an attack the 'accuracy' measure runs\); "
     r"valid choices: clean, drop, read, fgsm"),
    ('params = { eps = 0.1 }', 'params = { epsilon = 0.1 }',
     r"attacks\[1\] \('FGSM ε=0.1'\): fgsm has no parameter 'epsilon'; valid parameters: "
     r"bpda, eot_samples, eps"),
    ('params = { eps = 0.1 }', 'params = { eps = -0.1 }', r"attacks\[1\] .*eps must be"),
    ('params = { eps = 0.1 }', 'params = { eps = 0.1, passes = 3 }',
     r"fgsm has no parameter 'passes'"),
    ('params = { eps = 0.1 }', 'params = { eps = 0.1 }\noptions = { pases = 3 }',
     r"the accuracy measure has no option 'pases'; valid options: passes, all_targets"),
    ('params = { eps = 0.1 }', 'params = { eps = 0.1 }\noptions = { passes = 0 }',
     r"passes must be an integer >= 1"),
    ('params = { eps = 0.1 }', 'params = { eps = 0.1, loss = "hinge" }',
     r"unknown loss 'hinge'; expected one of ce, margin"),
    ('model = "F8"', 'model = "F9"',
     r"reference\[0\]\.model = 'F9' is not a model of the paper profile; valid models: F16, F8"),
    ('attack = "FGSM ε=0.1"\nvalue', 'attack = "FGSM ε=0.2"\nvalue',
     r"reference\[0\]\.attack = 'FGSM ε=0.2' is not an attack column"),
    ('measure = "accuracy"', 'measure = "acuracy"',
     r"measure = 'acuracy' is unknown; valid measures: accuracy"),
    ('paper = "galloway2018"', 'paper = "smith2020"', r"paper = 'smith2020' is unknown"),
    ('dataset = "mnist"', 'dataset = "svhn"', r"dataset = 'svhn' is unknown; valid choices: mnist"),
    ('[profiles.quick]', '[profiles.fast]', r"unknown profile 'fast' under \[profiles\]"),
    ('chunk = 20\ngrid = { W = [8, 16] }', 'chunk = 0\ngrid = { W = [8, 16] }',
     r"profiles\.paper\.chunk = 0 must be >= 1"),
    ('seeds = [1, 2]\nchunk = 20\ngrid = { W = [8, 16] }',
     'seeds = ["a"]\nchunk = 20\ngrid = { W = [8, 16] }', r"seeds must be a non-empty list"),
    ('label = "F{W}"', 'label = "F"', r"model label\(s\) F occur more than once"),
    ('label = "clean"\nattack = "clean"', 'label = "clean"\nattack = "clean"\nmetric = "auc"',
     r"attacks\[0\]\.metric = 'auc' is unknown; valid choices: accuracy, error"),
    ('epochs = 1\ntest_points', 'epochs = "one"\ntest_points', r"profiles\.paper\.epochs must be int"),
    ('title = "tiny"', 'title = "tiny', r"not valid TOML"),
    ('printed = "50±5%"', 'printed = "50±5%"\n\n[[reference]]\nmodel = "F8"\n'
     'attack = "FGSM ε=0.1"\nvalue = 40',
     r"reference\[1\] repeats reference\[0\] \(model 'F8', column 'FGSM ε=0.1'\)"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_SPECS)
def test_spec_errors_name_the_file_the_key_and_the_choices(tmp_path, old, new, message):
    assert old in TINY
    path = write_spec(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(SpecError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_missing_spec_file_and_unknown_spec_name(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load(tmp_path / "nope.toml")
    write_spec(tmp_path)
    with pytest.raises(SpecError, match=r"no spec 'galloway2018/tabel1'; valid specs: "
                                        r"galloway2018/tiny"):
        resolve_specs(["galloway2018/tabel1"], tmp_path)
    assert resolve_specs(["galloway2018"], tmp_path) == [tmp_path / "galloway2018" / "tiny.toml"]


def test_grid_substitution_and_adversarial_schedule_scaling(tmp_path):
    text = TINY.replace('params = { width = "{W}", depth = 1 }',
                        'params = { width = "{W}", depth = 1 }\n'
                        'adversarial = { kind = "fgsm", eps = 0.1, start_epoch = 10 }'
                        ).replace("epochs = 1\ntest_points = 40\nseeds = [1, 2]\nchunk = 20\ngrid",
                                  "epochs = 15\ntest_points = 40\nseeds = [1, 2]\nchunk = 20\ngrid")
    text = text.replace("[profiles.quick]\nepochs = 1", "[profiles.quick]\nepochs = 3")
    spec = load(write_spec(tmp_path, text))
    paper = spec.model_plans("paper")
    assert [(p.label, p.params["width"]) for p in paper] == [("F8", 8), ("F16", 16)]
    assert paper[0].adversarial["start_epoch"] == 10
    assert spec.model_plans("quick")[0].adversarial["start_epoch"] == 2  # 10 of 15 -> 2 of 3
    # a model's own epochs (Galloway Table 4's '+*': 40) scale like the profile's
    longer = load(write_spec(tmp_path, text.replace(
        "start_epoch = 10 }", "start_epoch = 30 }\ntraining = { epochs = 40 }"), name="longer"))
    assert longer.model_plans("paper")[0].training == {"epochs": 40}
    assert longer.model_plans("quick")[0].training == {"epochs": 8}  # 40 · 3 / 15
    assert longer.model_plans("quick")[0].adversarial["start_epoch"] == 6
    with pytest.raises(SpecError, match=r"start_epoch = 30 must be in 0\.\.14"):
        load(write_spec(tmp_path, text.replace("start_epoch = 10 }", "start_epoch = 30 }"),
                        name="late"))
    # every option's value is checked on load, not when training meets it
    with pytest.raises(SpecError, match=r"models\[0\]\.adversarial: running_stats = "
                       r"'mnist-attack' copies the TF graph of mnist_attack.py"):
        load(write_spec(tmp_path, text.replace(
            "start_epoch = 10 }", 'start_epoch = 10, running_stats = "mnist-attack" }'),
            name="graph"))
    with pytest.raises(SpecError, match=r"models\[0\]\.adversarial: pgd_start must be one of "
                       r"unclipped, clipped, got 'none'"):
        load(write_spec(tmp_path, text.replace(
            "start_epoch = 10 }", 'start_epoch = 10, pgd_start = "none" }'), name="start"))


def test_every_shipped_spec_loads_and_plans():
    paths = spec_files(EXPERIMENTS)
    assert paths, "no specs shipped"
    for path in paths:
        spec = load(path)
        for profile in ("quick", "paper"):
            tasks = plan(spec, profile)
            assert tasks, f"{spec.name} plans no units in {profile}"
            assert len({t.unit.key for t in tasks}) == len(tasks)


# ---------------------------------------------------------------- runner and store
class StopAfter(LocalExecutor):
    """An in-process executor that is 'killed' (KeyboardInterrupt) after ``n`` results."""

    def __init__(self, n: int) -> None:
        super().__init__(workers=1)
        self.n = n

    def submit_all(self, fn, items):
        for count, pair in enumerate(super().submit_all(fn, items)):
            if count == self.n:
                raise KeyboardInterrupt
            yield pair


def test_sigterm_stops_reproduce_like_ctrl_c_and_keeps_the_finished_units(
        monkeypatch, capsys, tmp_path, fake_mnist):
    """``kill PID`` (SIGTERM, also what a batch scheduler sends) stops ``reproduce`` as Ctrl-C
    does: exit 130, the finished units stored, a rerun computes only the rest; the previous
    SIGTERM handler is back afterwards."""
    import os
    import signal

    from conftest import run_cli as run

    write_spec(tmp_path / "specs")
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "specs"))
    store = str(tmp_path / "s.sqlite")
    put = ResultStore.put
    stored = []

    def put_then_terminate(self, *args, **kwargs):
        stored.append(put(self, *args, **kwargs))
        if len(stored) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return stored[-1]

    monkeypatch.setattr(ResultStore, "put", put_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--store", store)
    assert code == 130 and "interrupted" in " ".join((out + err).split()), (out, err)
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(ResultStore, "put", put)
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--store", store)
    assert code == 0 and "12 units, 5 already stored, 7 computed" in " ".join(out.split()), err


def table_values(index_dir: Path) -> dict:
    data = json.loads((index_dir / "report.json").read_text())
    return {name: [t["rows"] for t in spec["tables"]] for name, spec in data.items()}


def test_interrupted_run_resumes_without_recomputing_and_ends_with_the_same_tables(
        tmp_path, fake_mnist):
    spec = load(write_spec(tmp_path))
    planned = len(plan(spec, "quick"))
    assert planned == 1 * 2 * 3 * 2  # models x seeds x columns x chunks
    with ResultStore(tmp_path / "a.sqlite") as store:
        first = reproduce(spec, profile="quick", store=store, executor=StopAfter(5),
                          progress=False)
        assert first.interrupted and first.computed == 5 and store.count() == 5
        second = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                           progress=False)
        assert (second.stored_before, second.computed) == (5, planned - 5)
        third = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                          progress=False)
        assert (third.stored_before, third.computed, third.models_trained) == (planned, 0, 0)
        report([spec], profile="quick", store=store, out=tmp_path / "ra")
    with ResultStore(tmp_path / "b.sqlite") as store:
        whole = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                          progress=False)
        assert whole.computed == planned
        report([spec], profile="quick", store=store, out=tmp_path / "rb")
    assert table_values(tmp_path / "ra") == table_values(tmp_path / "rb")


def test_a_changed_spec_does_not_reuse_stored_units(tmp_path, fake_mnist):
    spec = load(write_spec(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        changed = load(write_spec(tmp_path, TINY.replace("eps = 0.1 }", "eps = 0.2 }", 1)))
        again = reproduce(changed, profile="quick", store=store, executor=LocalExecutor(),
                          progress=False)
    assert again.computed == 4  # the FGSM column's 2 seeds x 2 chunks; the rest reused


def test_a_changed_attack_recomputes_its_units_and_no_others(tmp_path, fake_mnist,
                                                              monkeypatch):
    """Editing fgsm.py (its source hash changes) makes the FGSM column's stored rows stale:
    they are recomputed and counted; the clean and PGD columns are reused, and so are the
    trained models (training code does not import the FGSM attack)."""
    from bnnrobust import code
    from bnnrobust.experiments.measures import base

    spec = load(write_spec(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        first = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                          progress=False)
        assert first.computed == 12 and first.stale == 0
        models = {t.unit.params["model"] for t in plan(spec, "quick")}
        source_hash = code._source_hash
        monkeypatch.setattr(code, "_source_hash", lambda name: "edited"
                            if name == "bnnrobust.attacks.fgsm" else source_hash(name))
        base.unit_code.cache_clear()
        again = reproduce(load(write_spec(tmp_path)), profile="quick", store=store,
                          executor=LocalExecutor(), progress=False)
        assert (again.stored_before, again.computed, again.stale) == (8, 4, 4)
        # the same checkpoint-cache key: the model is not retrained
        assert {t.unit.params["model"] for t in plan(spec, "quick")} == models
        monkeypatch.setattr(code, "_source_hash", lambda name: "edited"
                            if name == "bnnrobust.attacks.pgd" else source_hash(name))
        base.unit_code.cache_clear()
        third = reproduce(load(write_spec(tmp_path)), profile="quick", store=store,
                          executor=LocalExecutor(), progress=False)
        assert (third.computed, third.stale) == (4, 4)  # now the PGD column; FGSM's new rows
    base.unit_code.cache_clear()
    assert "4 of them replace stale rows" in summary_line(again)


def test_missing_data_is_one_line_naming_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("BNNROBUST_DATA", str(tmp_path / "empty"))
    spec = load(write_spec(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        summary = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                            progress=False)
    assert summary.computed == 0
    assert "needs mnist in" in summary.missing and "t10k-images-idx3-ubyte.gz" in summary.missing
    assert "\n" not in summary.missing


# ---------------------------------------------------------------- reports
def test_report_puts_ours_beside_the_papers_values(tmp_path, fake_mnist):
    spec = load(write_spec(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        index, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
        rows = {r.unit.key: r for r in store.rows(spec=spec.name)}
    table = rep.tables[0]
    assert list(table.rows) == ["F8"] and table.columns == ["clean", "FGSM ε=0.1",
                                                            "PGD-logits ε=0.1"]
    cell = table.rows["F8"]["FGSM ε=0.1"]
    assert (cell.paper, cell.pm) == (50, 5) and len(cell.values) == 2 and cell.complete
    # each seed's value is the exact total over its chunks
    for seed, value in zip((1, 2), cell.values, strict=True):
        got = [r.value for r in rows.values() if r.unit.seed == seed
               and r.unit.attack == "FGSM ε=0.1"]
        assert len(got) == 2
        assert value == pytest.approx(100 * sum(g["correct"] for g in got) / 40)
    assert table.adaptive == {"PGD-logits ε=0.1"}
    md = (tmp_path / "r" / "galloway2018" / "tiny.md").read_text()
    assert "| F8 |" in md and "/ 50 ± 5 (" in md and "PGD-logits ε=0.1 †" in md
    assert (tmp_path / "r" / "galloway2018" / "tiny.png").stat().st_size > 1000
    page = index.read_text()
    assert "<table class='results'>" in page and "galloway2018/tiny.png" in page
    assert "code version" in page and "torch" in page
    assert "<details class='notes' open>" not in page  # the tiny spec has no notes
    text = (TINY.replace('dataset = "mnist"', 'dataset = "mnist"\n'
                         'notes = "chosen: this; departs: that"')
            .replace('loss = "margin" }', 'loss = "margin" }\nnote = "a column note"')
            .replace('printed = "50±5%"', 'printed = "50±5%"\nnote = "a reference note"'))
    noted = load(write_spec(tmp_path, text, name="noted"))
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(noted, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        index, _ = report([noted], profile="quick", store=store, out=tmp_path / "r2")
    page = index.read_text()
    md = (tmp_path / "r2" / "galloway2018" / "noted.md").read_text()
    for shown in (page, md):
        assert "chosen: this; departs: that" in shown
        assert "PGD-logits ε=0.1: a column note" in shown
        assert "F8, FGSM ε=0.1 (paper: 50±5%): a reference note" in shown


def test_a_drop_column_is_the_difference_of_two_columns_per_seed(tmp_path, fake_mnist):
    text = TINY + """
[[attacks]]
label = "drop to FGSM"
attack = "drop"
options = { drop_from = "clean", drop_to = "FGSM ε=0.1" }
"""
    spec = load(write_spec(tmp_path, text, name="drop"))
    assert len(plan(spec, "quick")) == 12  # the drop column has no units of its own
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
    cells = rep.tables[0].rows["F8"]
    assert cells["drop to FGSM"].values == pytest.approx(
        [a - b for a, b in zip(cells["clean"].values, cells["FGSM ε=0.1"].values, strict=True)])
    bad = text.replace('drop_to = "FGSM ε=0.1"', 'drop_to = "FGSM ε=0.9"')
    with pytest.raises(SpecError, match="'FGSM ε=0.9' is not a column of profile"):
        load(write_spec(tmp_path, bad, name="baddrop"))
    with pytest.raises(SpecError, match="a drop column .* needs options drop_from and drop_to"):
        load(write_spec(tmp_path, text.replace('options = { drop_from = "clean", '
                                               'drop_to = "FGSM ε=0.1" }', ""), name="nodrop"))


def test_a_read_column_shows_another_columns_units_with_its_own_metric(tmp_path, fake_mnist):
    """A ``read`` column attacks nothing: its cells are the read column's runs under its own
    metric (as Galloway Table 3 prints CW-L2's accuracy and mean L2 from the same runs)."""
    text = TINY + """
[[attacks]]
label = "FGSM error"
attack = "read"
options = { read_from = "FGSM ε=0.1" }
metric = "error"
"""
    spec = load(write_spec(tmp_path, text, name="read"))
    assert len(plan(spec, "quick")) == 12  # no units of its own
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
    cells = rep.tables[0].rows["F8"]
    assert len(cells["FGSM error"].values) == 2 and cells["FGSM error"].complete
    assert cells["FGSM error"].values == pytest.approx(
        [100.0 - a for a in cells["FGSM ε=0.1"].values])
    for bad, message in [
        (text.replace('read_from = "FGSM ε=0.1"', 'read_from = "FGSM ε=0.9"'),
         "read_from 'FGSM ε=0.9' is not an attacked column of profile"),
        (text.replace('options = { read_from = "FGSM ε=0.1" }\n', ""),
         "a read column .* needs option read_from"),
        (TINY.replace('label = "clean"', 'label = "clean"\noptions = { read_from = "clean" }'),
         "a read column .* needs option read_from, .*; no other column takes it"),
    ]:
        with pytest.raises(SpecError, match=message):
            load(write_spec(tmp_path, bad, name="badread"))


def test_a_drop_column_with_drop_model_is_a_gap_between_models(tmp_path, fake_mnist):
    text = TINY.replace("grid = { W = [8] }", "grid = { W = [8, 16] }") + """
[[attacks]]
label = "FGSM gain over F8"
attack = "drop"
options = { drop_from = "FGSM ε=0.1", drop_to = "FGSM ε=0.1", drop_model = "F8" }
"""
    spec = load(write_spec(tmp_path, text, name="gain"))
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
    rows = rep.tables[0].rows
    assert rows["F16"]["FGSM gain over F8"].values == pytest.approx(
        [a - b for a, b in zip(rows["F16"]["FGSM ε=0.1"].values, rows["F8"]["FGSM ε=0.1"].values,
                               strict=True)])
    assert rows["F8"]["FGSM gain over F8"].values == [0.0, 0.0]
    with pytest.raises(SpecError, match="drop_model 'F32' is not a model of profile"):
        load(write_spec(tmp_path, text.replace('drop_model = "F8"', 'drop_model = "F32"'),
                        name="badgain"))


def test_report_of_an_unrun_spec_says_nothing_is_stored(tmp_path):
    spec = load(write_spec(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        _, (rep,) = report([spec], profile="quick", store=store, out=tmp_path / "r")
    assert (rep.stored, rep.planned, rep.tables) == (0, 12, [])
    assert "0/12 units stored" in (tmp_path / "r" / "galloway2018" / "tiny.md").read_text()



#: marks the body with how many images the page has and how many decoded
IMAGE_CHECK = ("<script>window.addEventListener('load',function(){var i=document.images,ok=0;"
               "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0){ok++;}}"
               "document.body.setAttribute('data-images',i.length);"
               "document.body.setAttribute('data-images-ok',ok);});</script>")


def chromium() -> str | None:
    import shutil

    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                        "google-chrome")) if p), None)


def test_index_html_renders_in_headless_chromium(tmp_path, fake_mnist):
    import re
    import subprocess

    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    spec = load(write_spec(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        index, _ = report([spec], profile="quick", store=store, out=tmp_path / "r")
    # the check below counts decoded images; it lives in the test, not in the shipped page
    page = index.read_text(encoding="utf-8")
    assert "<script" not in page
    checked = index.with_name("index-checked.html")
    checked.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", checked.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<table class=\"results\">" in dom and "<table id=\"metadata\">" in dom
    assert "F8" in dom and "FGSM ε=0.1" in dom
    images = re.search(r'data-images="(\d+)" data-images-ok="(\d+)"', dom)
    assert images is not None, "the page's load handler did not run"
    assert int(images.group(1)) >= 1 and images.group(1) == images.group(2)


# ---------------------------------------------------------------- the CLI
def test_reproduce_and_report_commands_resume_and_explain_bad_input(monkeypatch, capsys,
                                                                    tmp_path, fake_mnist):
    from conftest import run_cli as run

    write_spec(tmp_path / "specs")
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "specs"))
    store = str(tmp_path / "s.sqlite")
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--store", store)
    assert code == 0, err
    assert "12 units, 0 already stored, 12 computed" in " ".join(out.split())
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018", "--store", store,
                         "--report", str(tmp_path / "r"))
    text = " ".join(out.split())
    assert code == 0 and "12 units, 12 already stored, 0 computed" in text, err
    assert (tmp_path / "r" / "index.html").exists()
    code, out, _ = run(monkeypatch, capsys, "reproduce", "--list")
    assert code == 0 and "galloway2018/tiny" in out
    code, out, _ = run(monkeypatch, capsys, "report", "--store", store, "--out",
                       str(tmp_path / "r2"))
    assert code == 0 and "galloway2018/tiny: 12/12 units" in out
    for args, message in [
        (["reproduce", "galloway2018/tiny", "--profile", "fast"],
         "--profile must be one of paper, quick, got 'fast'"),
        (["report", "--profile", "full"], "--profile must be one of paper, quick"),
        (["reproduce", "galloway2018/tabel1"], "no spec 'galloway2018/tabel1'; valid specs: "
                                               "galloway2018/tiny"),
        (["reproduce"], "name at least one spec"),
        (["reproduce", "galloway2018/tiny", "--executor", "spark"], "unknown executor 'spark'"),
        (["reproduce", "galloway2018/tiny", "--workers", "0"], "workers must be an integer >= 1"),
    ]:
        code, _, err = run(monkeypatch, capsys, *args, "--store", store)
        assert code == 2 and message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "nowhere"))
    code, _, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny")
    assert code == 2 and "BNNROBUST_EXPERIMENTS" in " ".join(err.split())


def test_a_piped_reproduce_prints_progress_lines_and_fills_the_log_file(
        tmp_path, fake_mnist, monkeypatch, capsys):
    from conftest import run_cli

    write_spec(tmp_path)
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path))
    log = tmp_path / "logs" / "run.log"
    code, _, err = run_cli(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--store",
                           str(tmp_path / "s.sqlite"), "--workers", "1", "--log-file", str(log))
    assert code == 0, err
    lines = err.splitlines()  # stderr is not a terminal here: plain, timestamped lines
    assert any(line.endswith("galloway2018/tiny: units: started, 12 to do") for line in lines)
    assert any("galloway2018/tiny: units: 12/12 done" in line for line in lines)
    assert any("galloway2018/tiny: models: 2/2 done" in line for line in lines)
    assert "\x1b" not in err
    logged = log.read_text()
    assert "galloway2018/tiny: units: 12/12 done" in logged and "models: started" in logged
    code, _, err = run_cli(monkeypatch, capsys, "reproduce", "galloway2018/tiny",
                           "--log-file", str(tmp_path))
    assert code == 2 and "is a folder; give a file path" in err


def test_flags_follow_the_column_order_and_a_figure_plots_the_rows_run():
    """The flags of Table 1 come in the table's column order (ε ascending, whatever the hash
    seed), and a figure of a slice draws the rows with values of ours, not the rows that
    hold only the paper's (all rows when none has values)."""
    from bnnrobust.experiments.measures import Cell, Table
    from bnnrobust.report.plots import measured
    from bnnrobust.report.reproduction import adaptive_flags

    spec = load(EXPERIMENTS / "galloway2018" / "table1.toml")
    columns = [c.label for c in spec.columns_for("paper")]
    adaptive = {c for c in columns if c.startswith("PGD")}
    table = Table("t", columns, {
        "A64": {c: Cell([50.0 if c.startswith("FGSM") else 0.0]) for c in columns},
        "B64": {c: Cell(paper=75.0, complete=False) for c in columns}}, adaptive=adaptive)
    flags = adaptive_flags(spec, table, "paper")
    assert [(f.model, f.column, f.other) for f in flags] == [
        ("A64", f"PGD-logits ε={e}", f"FGSM ε={e}") for e in ("0.1", "0.2", "0.3")]
    assert list(measured(table)) == ["A64"]
    assert list(measured(Table("t", columns, {"B64": {}, "C64": {}}))) == ["B64", "C64"]


def test_a_slice_runs_its_rows_only_and_the_report_marks_the_rows_run(
        monkeypatch, capsys, tmp_path, fake_mnist):
    """``--grid W=8`` runs the paper profile's W = 8 row only (its units are the full run's:
    the rest of the profile then computes only the other row), and the report says which rows
    were run; a bad slice is a clear error."""
    from conftest import run_cli as run

    write_spec(tmp_path / "specs")
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "specs"))
    store = str(tmp_path / "s.sqlite")
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                         "paper", "--grid", "W=8", "--store", store, "--report",
                         str(tmp_path / "r"))
    assert code == 0 and "12 units, 0 already stored, 12 computed" in " ".join(out.split()), err
    page = (tmp_path / "r" / "galloway2018" / "tiny.md").read_text(encoding="utf-8")
    assert "12/24 units stored" in page and "rows run: F8; rows not run: F16" in page
    assert "| F16 (not run) |" in page and "| F8 |" in page
    index = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    shown, folded = index.split("<details class='not-run'>", 1)  # the page folds F16 away
    assert "<td>F8</td>" in shown and "F16" not in shown.split("<table class='results'>")[-1]
    assert "1 row(s) not run: the paper's values" in folded
    assert "<td>F16 (not run)</td>" in folded.split("</details>")[0]
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                         "paper", "--only", "F16", "--column", "clean", "--store", store)
    assert code == 0 and "4 units, 0 already stored, 4 computed" in " ".join(out.split()), err
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                         "paper", "--only", "F16", "--only", "F8", "--store", store)
    assert code == 0 and "24 units, 16 already stored, 8 computed" in " ".join(out.split())
    for args, message in [
        (["--grid", "W=9"], "W = 9 is not in profile 'paper'; its values: 8, 16"),
        (["--grid", "K=64"], "profile 'paper' has no sweep variable 'K'; its variables: W"),
        (["--grid", "W"], "--grid 'W': expected VAR=VALUE[,VALUE...]"),
        (["--only", "F32"], "no model row 'F32' in profile 'paper'; its rows: F8, F16"),
        (["--column", "CW"], "no attack column 'CW' in profile 'paper'; its columns: clean, "
                             "FGSM ε=0.1, PGD-logits ε=0.1"),
    ]:
        code, _, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                           "paper", *args, "--store", store)
        assert code == 2 and message in " ".join(err.split()), (args, err)


def test_the_estimate_of_a_quick_profile_is_within_a_factor_of_two_of_its_run(
        tmp_path, fake_mnist, monkeypatch, capsys):
    """``--estimate`` computes nothing, and what it expects is what the run then takes
    (within 2×); models in the cache and units in the store cost nothing afterwards."""
    import time

    from conftest import run_cli

    from bnnrobust.experiments.estimate import estimate

    text = TINY.replace("epochs = 1\ntrain_limit", "epochs = 6\ntrain_limit").replace(
        'family = "fc-bnn"\nparams = { width = "{W}", depth = 1 }',
        'family = "galloway-cnn"\nparams = { width = "{W}", precision = "binary" }').replace(
        "steps = 5", "steps = 20")
    spec = load(write_spec(tmp_path, text))
    monkeypatch.setenv("BNNROBUST_CACHE", str(tmp_path / "cache"))
    with ResultStore(tmp_path / "s.sqlite") as store:
        est = estimate(spec, "quick", store=store)
        assert store.done(t.unit for t in plan(spec, "quick")) == set()
        assert not (tmp_path / "cache" / "checkpoints").exists()
        assert [(line.kind, line.label, line.count) for line in est.lines] == [
            ("training", "F8", 2), ("attack", "clean", 4), ("attack", "FGSM ε=0.1", 4),
            ("attack", "PGD-logits ε=0.1", 4)]
        start = time.perf_counter()
        reproduce(spec, profile="quick", store=store, executor=LocalExecutor(), progress=False)
        measured = time.perf_counter() - start
        assert 0.5 <= est.seconds / measured <= 2.0, (est.seconds, measured, est.lines)
        again = estimate(spec, "quick", store=store)
        assert again.lines == [] and again.stored == 12 and again.seconds == 0
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path))
    code, out, err = run_cli(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                             "paper", "--estimate", "--store", str(tmp_path / "s.sqlite"))
    text = " ".join(out.split())
    assert code == 0, err
    assert "training │ F8 │ 2" in text and "training │ F16 │ 2" in text and "total:" in text


@pytest.mark.parametrize("load, warned", [(0.2, False), (7.0, True)])
def test_an_estimate_calibrated_on_a_busy_machine_says_it_is_too_high(
        tmp_path, fake_mnist, monkeypatch, capsys, load, warned):
    """Other work slows the calibration (small models far more than their share): the
    estimate keeps the load per CPU it began under and the command warns above BUSY."""
    import os

    from conftest import run_cli

    import bnnrobust.experiments.estimate as estimate_module

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setattr(estimate_module.os, "getloadavg", lambda: (load * cpus, 0.0, 0.0))
    assert estimate_module.machine_load() == pytest.approx(load)
    write_spec(tmp_path / "specs")
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "specs"))
    monkeypatch.setenv("BNNROBUST_CACHE", str(tmp_path / "cache"))
    code, out, err = run_cli(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--estimate",
                             "--store", str(tmp_path / "s.sqlite"))
    text = " ".join(out.split())
    assert code == 0, err
    assert ("warning: the machine was busy" in text) is warned
    assert (f"(load {load:.1f} per CPU" in text) is warned and "total:" in text


def test_the_estimate_times_the_last_epoch_of_a_copied_mnist_attack_graph_apart(
        fake_mnist, monkeypatch):
    """With running_stats = "mnist-attack", PGD training's last epoch also makes the
    evaluation PGD-40's passes (≈ 45 passes a batch against ≈ 5): the estimate calibrates
    that epoch on its own (per-epoch test evaluations left out here)."""
    import bnnrobust.experiments.estimate as estimate_module
    from bnnrobust.experiments.estimate import _training

    monkeypatch.setattr(estimate_module, "accuracy", lambda *args, **kwargs: 0.0)

    request = {"model": "galloway-cnn", "params": {"width": 4, "precision": "binary"},
               "dataset": "mnist", "epochs": 3, "seed": 0, "train_limit": 64,
               "adversarial": {"kind": "pgd", "eps": 0.3, "steps": 2, "alpha": 0.1,
                               "start_epoch": 1, "running_stats": "mnist-attack",
                               "epochs": 3}}
    seconds, _ = _training(request, "mnist", device="cpu", batches=2, data_root=None)
    clean, adversarial, last = (seconds(0) - seconds(1), seconds(1) - seconds(2), seconds(2))
    assert adversarial > clean and last > 2 * adversarial
    plain = dict(request, adversarial={**request["adversarial"], "running_stats": "loss"})
    seconds, _ = _training(plain, "mnist", device="cpu", batches=2, data_root=None)
    assert seconds(2) < 2 * (seconds(1) - seconds(2))


def test_paper_results_are_exported_and_a_fresh_clone_reports_and_resumes_from_them(
        monkeypatch, capsys, tmp_path, fake_mnist):
    """A paper-profile run writes the spec's rows and metadata to the results folder; with a
    new store and an empty cache (a fresh clone) the report shows exactly the same tables and
    a rerun computes nothing; a changed column's committed rows are shown as stale until a run
    computes them anew; a damaged file is a clear error."""
    from conftest import run_cli as run

    write_spec(tmp_path / "specs")
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "specs"))
    results = tmp_path / "results"
    monkeypatch.setenv("BNNROBUST_RESULTS", str(results))
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                         "paper", "--store", str(tmp_path / "a.sqlite"), "--report",
                         str(tmp_path / "ra"))
    assert code == 0, err
    assert f"resultsin{results / 'galloway2018' / 'tiny.paper.jsonl'}" in "".join(out.split())
    lines = (results / "galloway2018" / "tiny.paper.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["unit"]["model"] == "F8"
    meta = json.loads((results / "galloway2018" / "tiny.paper.json").read_text())
    assert meta["units_stored"] == 24 and meta["libraries"]["torch"]
    assert sorted(meta["models"]) == ["F16 seed 1", "F16 seed 2", "F8 seed 1", "F8 seed 2"]
    assert all(m["epochs"] == 1 and m["train_seconds"] > 0 for m in meta["models"].values())

    monkeypatch.setenv("BNNROBUST_CACHE", str(tmp_path / "fresh-cache"))  # a fresh clone
    code, out, err = run(monkeypatch, capsys, "report", "--profile", "paper", "--store",
                         str(tmp_path / "b.sqlite"), "--out", str(tmp_path / "rb"))
    assert code == 0, err
    assert table_values(tmp_path / "rb") == table_values(tmp_path / "ra")
    page = (tmp_path / "rb" / "galloway2018" / "tiny.md").read_text(encoding="utf-8")
    assert "24 of them from the committed results (tiny.paper.jsonl, computed by this code)" \
        in page
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                         "paper", "--store", str(tmp_path / "b.sqlite"))
    assert code == 0 and "24 units, 24 already stored, 24 taken from the committed results, " \
        "0 computed, 0 model(s) prepared" in " ".join(out.split()), err
    assert not (tmp_path / "fresh-cache" / "checkpoints").exists()  # nothing trained

    write_spec(tmp_path / "specs", TINY.replace("steps = 5", "steps = 6"))
    code, out, err = run(monkeypatch, capsys, "report", "--profile", "paper", "--store",
                         str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "rc"))
    page = (tmp_path / "rc" / "galloway2018" / "tiny.md").read_text(encoding="utf-8")
    assert "24 of them from the committed results (tiny.paper.jsonl, 8 stale" in page
    code, out, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", "--profile",
                         "paper", "--store", str(tmp_path / "c.sqlite"))
    assert code == 0 and "16 taken from the committed results, 8 computed" in \
        " ".join(out.split()), err
    rows = [json.loads(x) for x in
            (results / "galloway2018" / "tiny.paper.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(r["unit"]["params"]["params"]["steps"] == 6
                                   for r in rows if r["unit"]["attack"].startswith("PGD"))

    (results / "galloway2018" / "tiny.paper.jsonl").write_text("{not json\n")
    code, _, err = run(monkeypatch, capsys, "report", "--profile", "paper", "--store",
                       str(tmp_path / "d.sqlite"), "--out", str(tmp_path / "rd"))
    assert code == 2 and "not a results file written by bnnrobust" in " ".join(err.split())
    assert "git checkout -- results/" in " ".join(err.split()) and "Traceback" not in err


def test_the_gpu_script_stops_with_a_clear_error_where_there_is_no_cuda(tmp_path):
    """``benchmarks/paper_gpu.sh`` runs the paper profiles on CUDA; on a machine without it
    the first command says so and nothing is computed or written."""
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run for hours")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_gpu.sh"
    env = {**__import__("os").environ, "BIN": str(Path(sys.executable).parent),
           "STORE": str(tmp_path / "paper.sqlite"), "CHECKPOINTS": str(tmp_path / "ckpt")}
    done = subprocess.run(["bash", str(script), "galloway2018/table1"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PyTorch sees no CUDA device here; use --device cpu" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "paper.sqlite").exists() and not (tmp_path / "ckpt").exists()


def test_results_and_checkpoints_options_and_an_unsized_absent_dataset_are_clear_errors(
        monkeypatch, capsys, tmp_path, fake_mnist):
    from conftest import run_cli as run

    from bnnrobust.errors import BnnRobustError
    from bnnrobust.experiments.estimate import examples

    write_spec(tmp_path / "specs")
    monkeypatch.setenv("BNNROBUST_EXPERIMENTS", str(tmp_path / "specs"))
    (tmp_path / "afile").write_text("x")
    for option in ("--results", "--checkpoints"):
        code, _, err = run(monkeypatch, capsys, "reproduce", "galloway2018/tiny", option,
                           str(tmp_path / "afile"), "--store", str(tmp_path / "s.sqlite"))
        assert code == 2 and f"{option} {tmp_path / 'afile'} is a file; give a folder" in \
            " ".join(err.split()), err
    assert examples("mnist", "test") == 100  # counted from the files that are here
    monkeypatch.setenv("BNNROBUST_DATA", str(tmp_path / "nothing"))
    with pytest.raises(BnnRobustError, match="mnist is not here and its size is not registered"):
        examples("mnist", "test")  # the generated stand-in registers no sizes


def test_every_demo_spec_has_committed_paper_results_that_fit_its_plan():
    """``make demo`` shows each demo spec's committed paper-profile table beside the quick one:
    each has rows in ``results/``, every one of them a unit of the spec's current paper plan
    (same model row, seed, column and chunk; its code may since have changed, which the report
    then says)."""
    import re

    from bnnrobust.experiments.results import committed

    repo = Path(__file__).resolve().parents[1]
    demo = re.search(r"^DEMO_SPECS \?= (.+)$", (repo / "Makefile").read_text(), re.M)
    assert demo, "Makefile has no DEMO_SPECS line"
    for name in demo.group(1).split():
        rows = committed(repo / "results", name, "paper")
        assert rows.rows, f"{name}: no paper-profile results committed in results/"
        spec = load(repo / "experiments" / f"{name}.toml")
        found, _ = rows.matching([t.unit for t in plan(spec, "paper")])
        assert len(found) == len(rows.rows), f"{name}: committed rows outside its paper plan"


def test_a_variant_row_sits_beside_its_paper_rows_values_and_is_not_counted(tmp_path):
    from bnnrobust.experiments.measures.base import Cell, Table, attach_references
    from bnnrobust.report.reproduction import SpecReport, agreement

    variant = TINY.replace('[[attacks]]\nlabel = "clean"', '''[[models]]
label = "F{W}-wide"
family = "fc-bnn"
params = { width = "{W}", depth = 2 }
compare = "F{W}"
only = ["paper"]

[[attacks]]
label = "clean"''', 1)
    spec = load(write_spec(tmp_path, variant))
    assert [p.label for p in spec.model_plans("paper")] == ["F8", "F16", "F8-wide", "F16-wide"]
    assert [p.label for p in spec.model_plans("quick")] == ["F8"]
    assert (spec.paper_row("F8-wide"), spec.paper_row("F8")) == ("F8", "F8")
    table = attach_references(spec, Table("t", ["FGSM ε=0.1"], {
        "F8": {"FGSM ε=0.1": Cell([52.0])}, "F8-wide": {"FGSM ε=0.1": Cell([90.0])}}))
    assert [(c.paper, c.pm) for c in (table.rows["F8"]["FGSM ε=0.1"],
                                      table.rows["F8-wide"]["FGSM ε=0.1"])] == [(50, 5)] * 2
    # the agreement counts the paper's row only: 52 is within 50 ± 5, the variant's 90 is not
    counted = agreement(SpecReport(spec, "paper", tables=[table]))
    assert (counted.compared, counted.within, counted.gap) == (1, 1, ("F8", "FGSM ε=0.1", 2.0))


@pytest.mark.parametrize(("compare", "message"), [
    ("F{W}-wide", r"compare = 'F8-wide' must be another model row"),
    ("G{W}", r"compare = 'G8' must be another model row of profile 'paper' .*its rows: F8, "),
])
def test_a_variant_must_name_another_row(tmp_path, compare, message):
    variant = TINY.replace('[[attacks]]\nlabel = "clean"', f'''[[models]]
label = "F{{W}}-wide"
family = "fc-bnn"
params = {{ width = "{{W}}", depth = 2 }}
compare = "{compare}"

[[attacks]]
label = "clean"''', 1)
    with pytest.raises(SpecError, match=message):
        load(write_spec(tmp_path, variant))
