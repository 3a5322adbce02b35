"""Executors: the same results in-process, in worker processes and on Ray; clean interruption."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bnnrobust.experiments import ExecutorError, LocalExecutor, make_executor, run
from bnnrobust.progress import configure, reset


def square_plus(offset: int, value: int) -> int:
    return value * value + offset


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def stop_at_three(value: int) -> int:
    if value == 3:
        raise KeyboardInterrupt
    return value


def test_in_process_and_worker_processes_agree():
    fn = functools.partial(square_plus, 1)
    one = run(LocalExecutor(workers=1), fn, list(range(8)), progress=False)
    two = run(LocalExecutor(workers=2), fn, list(range(8)), progress=False)
    assert one.ordered() == two.ordered() == [v * v + 1 for v in range(8)]
    assert not one.interrupted and not two.interrupted


def test_exact_attacks_agree_across_executors():
    pytest.importorskip("ortools")
    from test_exact import random_bnn

    from bnnrobust.attacks.combinatorial import cpsat_attack

    rng = np.random.default_rng(0)
    ib = random_bnn(rng)
    points = [rng.integers(100, 156, size=6) for _ in range(6)]
    fn = functools.partial(cpsat_attack, ib, eps=2 / 255, time_limit=20)

    def results(kind: str, workers: int) -> list:
        outcome = run(make_executor(kind, workers=workers), fn, points, progress=False)
        return [{k: v for k, v in r.as_dict().items() if k not in ("seconds", "trace")}
                for r in outcome.ordered()]

    local = results("local", 1)
    assert results("local", 2) == local and all(r["status"] == "optimal" for r in local)
    ray = pytest.importorskip("ray")
    try:
        assert results("ray", 2) == local
    finally:
        ray.shutdown()


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(capfd, tmp_path):
    configure(stream=sys.stderr, log_file=tmp_path / "run.log")  # as the command line does
    try:
        run(LocalExecutor(), functools.partial(square_plus, 0), list(range(5)),
            description="squares", progress=True)
        err = capfd.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 2 and lines[0].endswith("squares: started, 5 to do")
        assert "squares: 5/5 done, " in lines[1]
        assert "\x1b" not in err  # no terminal control sequences
        assert (tmp_path / "run.log").read_text().splitlines()[1].endswith(lines[1][20:])
        run(LocalExecutor(), functools.partial(square_plus, 0), [1], progress=False)
        assert capfd.readouterr().err == ""
    finally:
        reset()
    run(LocalExecutor(), functools.partial(square_plus, 0), [1], description="quiet")
    assert capfd.readouterr().err == ""  # a library user sees lines only with a handler


def test_interrupt_keeps_finished_results():
    seen = []
    outcome = run(LocalExecutor(), stop_at_three, list(range(6)), progress=False,
                  on_result=lambda i, r: seen.append(i))
    assert outcome.interrupted and outcome.ordered() == [0, 1, 2] and seen == [0, 1, 2]


def test_a_stop_ends_running_worker_tasks_at_once():
    """Stopped while two workers are each an hour into a task, the pool does not wait for
    them: their processes end, the finished result is kept."""
    executor = LocalExecutor(workers=2)

    def stop(index: int, result: float) -> None:
        raise KeyboardInterrupt

    start = time.perf_counter()
    outcome = run(executor, sleep_for, [0.0, 3600.0, 3600.0], progress=False, on_result=stop)
    assert outcome.interrupted and outcome.results == {0: 0.0}
    assert time.perf_counter() - start < 60


def test_executor_errors():
    with pytest.raises(ExecutorError, match="workers must be an integer >= 1"):
        make_executor("local", workers=0)
    with pytest.raises(ExecutorError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ExecutorError, match="--address applies to the ray executor only"):
        make_executor("local", address="auto")


KILLED_PARENT = """
import functools, os, sys, time
from bnnrobust.experiments import LocalExecutor, run
from test_executors import report_pid_and_wait
run(LocalExecutor(workers=2), functools.partial(report_pid_and_wait, sys.argv[1]), [0, 1],
    progress=False)
"""


def report_pid_and_wait(folder: str, value: int) -> int:
    open(f"{folder}/{os.getpid()}", "w").close()
    time.sleep(60)
    return value


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(tmp_path)],
                              cwd=Path(__file__).parent)
    deadline = time.time() + 60
    while len(list(tmp_path.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.2)
    workers = [int(f.name) for f in tmp_path.iterdir()]
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
