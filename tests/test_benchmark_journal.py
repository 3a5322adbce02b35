"""The benchmark journals (``benchmarks/journal.py``): resuming, torn lines, refused settings,
several journals read as one; and the exact-attack benchmarks' refusals of bad ``--report`` /
``--journal`` combinations (they exit before loading any network)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("bench_journal", BENCHMARKS / "journal.py")
journal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(journal)

SETTINGS = {"spec": "khalil2019/figure2_mnist", "time_limit": "180.0"}


def test_records_survive_a_reload_and_keep_their_settings(tmp_path):
    path = tmp_path / "j.jsonl"
    first = journal.Journal(path, SETTINGS)
    first.add("2x100 cpsat ε=0.01 0", {"status": "optimal", "seconds": 0.5})
    first.add("2x100 cpsat ε=0.01 1", {"status": "timeout", "seconds": 180.0})
    again = journal.Journal(path, SETTINGS)
    assert again.records == first.records
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["settings"] for line in lines] == [SETTINGS, SETTINGS]


def test_a_torn_last_line_is_ignored_and_the_next_record_starts_afresh(tmp_path):
    path = tmp_path / "j.jsonl"
    journal.Journal(path, SETTINGS).add("a", {"n": 1})
    with path.open("a") as f:
        f.write('{"settings": {"spec": "khal')  # killed while writing
    torn = journal.Journal(path, SETTINGS)
    assert torn.records == {"a": {"n": 1}}
    torn.add("b", {"n": 2})
    assert journal.Journal(path, SETTINGS).records == {"a": {"n": 1}, "b": {"n": 2}}


def test_a_journal_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    journal.Journal(path, SETTINGS).add("a", {"n": 1})
    with pytest.raises(SystemExit, match="line 1 was written with other settings"):
        journal.Journal(path, {**SETTINGS, "time_limit": "30.0"})


def test_no_path_keeps_nothing(tmp_path):
    kept = journal.Journal(None, SETTINGS)
    kept.add("a", {"n": 1})
    assert kept.records == {"a": {"n": 1}} and not list(tmp_path.iterdir())


def test_several_journals_read_as_one_and_a_conflict_is_refused(tmp_path):
    a, b, c = (tmp_path / f"{n}.jsonl" for n in "abc")
    journal.Journal(a, SETTINGS).add("p 0", {"n": 1})
    journal.Journal(b, SETTINGS).add("p 1", {"n": 2})
    journal.Journal(b, SETTINGS).add("p 0", {"n": 1})  # the same result twice is fine
    assert journal.Journal.merged([a, b], SETTINGS).records == {"p 0": {"n": 1}, "p 1": {"n": 2}}
    assert journal.Journal.merged([a], SETTINGS).path == a
    assert journal.Journal.merged([], SETTINGS).path is None
    journal.Journal(c, SETTINGS).add("p 0", {"n": 3})
    with pytest.raises(SystemExit, match="holds point 'p 0' with another result"):
        journal.Journal.merged([a, c], SETTINGS)


def test_codes_name_every_version_and_the_unrecorded():
    records = [{"code": "0.1.0+gb"}, {"code": "0.1.0+ga"}, {}, {"code": "0.1.0+gb"}]
    assert journal.codes(records) == "0.1.0+ga, 0.1.0+gb, unrecorded"


def _bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["--report"], "give --journal PATH... of existing ones (got none)"),
    (["--report", "--journal", "missing.jsonl"], "of existing ones (got missing.jsonl)"),
    (["--journal", "a.jsonl", "b.jsonl"], "a run writes one journal"),
    (["--points", "20", "--start", "20"], "--start must name one of the first --points 20"),
    (["--start", "-1"], "(0 to 99), got -1"),
])
def test_milp_speed_refuses_bad_journal_options(args, message):
    done = _bench("milp_speed.py", *args)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_galloway_exact_report_needs_a_journal():
    done = _bench("galloway_exact.py", "--report")
    assert done.returncode != 0 and "--report reads a journal" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_papers_mean_stands_only_beside_a_like_run():
    """Gurobi's 27 s / 777 s are means over the first 100 points of the continuous problem at
    ε = 0.01 with an 1800 s limit: beside a shorter limit only when nothing timed out."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from milp_speed import paper_mean
    finally:
        sys.path.remove(str(BENCHMARKS))
    proven = [{"status": "optimal"}] * 100
    cut = [{"status": "optimal"}] * 99 + [{"status": "timeout"}]
    assert paper_mean("2x100", backend="cpsat-lp", eps=0.01, results=proven, time_limit=180) == 27
    assert paper_mean("2x200", backend="highs", eps=0.01, results=cut, time_limit=1800) == 777
    assert paper_mean("2x200", backend="cpsat-lp", eps=0.01, results=cut, time_limit=30) is None
    assert paper_mean("2x100", backend="cpsat", eps=0.01, results=proven, time_limit=180) is None
    assert paper_mean("2x100", backend="highs", eps=0.005, results=proven,
                      time_limit=1800) is None
    assert paper_mean("2x100", backend="highs", eps=0.01, results=proven[:20],
                      time_limit=1800) is None
    assert paper_mean("3x100", backend="highs", eps=0.01, results=proven,
                      time_limit=1800) is None


def test_a_committed_network_of_earlier_training_code_is_kept_not_retrained(tmp_path,
                                                                            fake_mnist):
    import torch

    from bnnrobust.train import save
    from bnnrobust.train.cache import train_cached

    request = {"model": "fc-bnn", "params": {"depth": 1, "width": 4}, "dataset": "mnist",
               "epochs": 1, "seed": 0, "train_limit": 50}
    train, _ = journal.request_and_hook(request)
    fresh = train_cached(train, cache_dir=tmp_path / "fresh", progress=False)
    # the same request, as earlier training code (another fingerprint) stored it
    config = {**fresh.train_config, "training_code": "0123456789abcdef"}
    old = tmp_path / "committed" / "fc-bnn-0000000000000000.pt"
    save(fresh.model, old, train_config=config, metrics={"final_test_accuracy": 0.5})
    found = journal.benchmark_network(request, tmp_path / "committed")
    assert found.path == old and found.metrics["final_test_accuracy"] == 0.5
    for a, b in zip(found.model.state_dict().values(), fresh.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert sorted(p.name for p in (tmp_path / "committed").iterdir()) == [old.name]
    # another request finds nothing committed: trained and written under its key
    other = journal.benchmark_network({**request, "seed": 1}, tmp_path / "committed")
    assert other.path != old and other.path.exists()


def test_a_committed_network_is_found_when_its_family_gained_a_parameter_since(monkeypatch):
    """The committed Galloway B64 predates galloway-cnn's ``activations``: its default
    (``"sign"``, the old behaviour) fills it in, so the network is found, not retrained."""
    from bnnrobust.train.checkpoint import load as load_checkpoint

    committed = journal.CHECKPOINTS / "galloway-cnn-71fb7a786898b289.pt"
    stored = load_checkpoint(committed).train_config
    assert "activations" not in stored["params"]
    request = {"model": "galloway-cnn", "params": {"precision": "binary", "width": 64},
               "dataset": "mnist", "epochs": 15, "seed": 1234, "train_limit": None}
    monkeypatch.setattr(journal, "train_cached", lambda *a, **k: pytest.fail("retrained"))
    found = journal.benchmark_network(request, journal.CHECKPOINTS)
    assert found.path == committed and found.hit
