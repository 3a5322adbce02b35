"""The SQLite results store: keys, resume, concurrent writers, bad files."""

from __future__ import annotations

import multiprocessing
import sqlite3

import numpy as np
import pytest

from bnnrobust.experiments.store import ResultStore, StoreError, Unit


def unit(chunk: int = 0, **params) -> Unit:
    return Unit("galloway2018/table1", "quick", "A-64", 0, "fgsm", params or {"eps": 0.3}, chunk)


def put(store: ResultStore, u: Unit, value) -> bool:
    return store.put(u, value, seconds=1.5, device="cpu", code_version="test")


def test_key_ignores_parameter_order_and_tells_units_apart():
    a = Unit("s", "quick", "m", 0, "pgd", {"eps": 0.1, "steps": 40})
    b = Unit("s", "quick", "m", 0, "pgd", {"steps": 40, "eps": 0.1})
    assert a.key == b.key
    assert len({a.key, unit(1).key, unit(0, eps=0.2).key, Unit("s", "paper", "m", 0, "pgd",
                                                                {"eps": 0.1, "steps": 40}).key}) == 4


def test_put_done_and_rows_round_trip(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        units = [unit(c) for c in range(3)]
        assert store.done(units) == set()
        assert put(store, units[0], {"correct": 7, "n": 10, "x": np.float32(0.5)})
        assert not put(store, units[0], {"correct": 0, "n": 10})  # stored once, first value kept
        assert store.done(units) == {units[0].key}
        (row,) = store.rows(spec="galloway2018/table1", profile="quick")
        assert row.unit == units[0] and row.value == {"correct": 7, "n": 10, "x": 0.5}
        assert (row.seconds, row.device, row.code_version) == (1.5, "cpu", "test")
        assert store.rows(profile="paper") == [] and store.count() == 1
    with ResultStore(tmp_path / "r.sqlite") as again:  # reopened: still there
        assert again.done(units) == {units[0].key}


def test_values_must_be_plain_finite_data(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(StoreError, match="not plain JSON data"):
            put(store, unit(), {"model": object()})
        with pytest.raises(StoreError, match="not plain JSON data"):
            put(store, unit(), {"accuracy": float("nan")})
        assert store.count() == 0


def _write(path: str, start: int, count: int) -> None:
    with ResultStore(path) as store:
        for c in range(start, start + count):
            put(store, unit(c), {"chunk": c})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ResultStore(path).close()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write, args=(path, start, 150)) for start in (0, 100)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    with ResultStore(path) as store:
        store.check()
        assert store.count() == 250
        assert sorted(r.value["chunk"] for r in store.rows()) == list(range(250))


def test_bad_store_paths_get_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        ResultStore(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open results store .*junk.sqlite"):
        ResultStore(junk)
    old = tmp_path / "old.sqlite"
    ResultStore(old).close()
    db = sqlite3.connect(old)
    db.execute("UPDATE meta SET value = '0' WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="has schema 0"):
        ResultStore(old)


def test_a_full_disk_under_the_store_is_a_clear_error_that_keeps_what_was_stored(tmp_path):
    class FullDisk:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

    with ResultStore(tmp_path / "s.sqlite") as store:
        first = Unit("s", "quick", "m", 0, "clean", {"a": 1}, 0)
        store.put(first, {"n": 1}, seconds=0.1, device="cpu", code_version="v")
        real = store._db
        store._db = FullDisk(real)
        with pytest.raises(StoreError, match="disk full or read-only.*Every unit stored before"):
            store.put(Unit("s", "quick", "m", 0, "clean", {"a": 1}, 1), {"n": 1}, seconds=0.1,
                      device="cpu", code_version="v")
        store._db = real
        assert store.count() == 1


RUN = """
import json, sys
from bnnrobust.experiments import LocalExecutor
from bnnrobust.experiments.parse import load
from bnnrobust.experiments.runner import reproduce
from bnnrobust.experiments.store import ResultStore
with ResultStore(sys.argv[2]) as store:
    s = reproduce(load(sys.argv[1]), profile="quick", store=store, executor=LocalExecutor(),
                  progress=False)
print(json.dumps({"planned": s.planned, "before": s.stored_before, "computed": s.computed,
                  "models": s.models_trained}))
"""


def test_two_runs_on_one_store_compute_each_unit_once_and_count_truly(tmp_path, data_root):
    """Two ``reproduce`` processes started together on one store: the second waits for the
    first's run lock, then reuses its units; together they compute (and train) everything
    exactly once, and the counts say so."""
    import json
    import os
    import subprocess
    import sys

    from tests.test_experiments import write_spec

    spec = write_spec(tmp_path)
    store = tmp_path / "shared.sqlite"
    env = {**os.environ, "BNNROBUST_DATA": str(data_root),
           "BNNROBUST_CACHE": str(tmp_path / "cache")}
    import time

    with ResultStore(store) as held, held.exclusive():  # both start while the lock is held
        procs = [subprocess.Popen([sys.executable, "-c", RUN, str(spec), str(store)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        time.sleep(8)
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    runs = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    planned = runs[0]["planned"]
    assert sorted(r["computed"] for r in runs) == [0, planned]
    assert sorted(r["before"] for r in runs) == [0, planned]
    assert sum(r["models"] for r in runs) == 2  # TINY's quick profile: one model, two seeds
    assert any("waiting for it" in " ".join(e.split()) for _, e in outs)
    with ResultStore(store) as check:
        assert check.count() == planned
