"""Executors: run independent tasks (e.g. one exact attack per test point) in parallel.

``LocalExecutor(workers=N)`` runs them in the current process (N = 1) or in N worker processes
(spawned, one PyTorch thread each); ``RayExecutor(address=...)`` sends them to a Ray cluster, or
to a local Ray instance when no address is given. Both take a picklable callable and a list of
items, show a progress bar, and return the results by item index. The result of an item does
not depend on the executor (each task is seeded by its own arguments), so the same seeds give
the same results whichever runs them. Ctrl-C stops cleanly: pending tasks are cancelled and
the finished results are returned with ``interrupted=True``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bnnrobust.errors import BnnRobustError
from bnnrobust.progress import tracked

EXECUTORS = ("local", "ray")


class ExecutorError(BnnRobustError):
    """An executor that cannot be set up (bad worker count, Ray missing or unreachable)."""


@dataclass
class Outcome:
    """Results by item index (only finished items) and whether the run was interrupted."""

    results: dict[int, Any] = field(default_factory=dict)
    interrupted: bool = False

    def ordered(self) -> list[Any]:
        """The finished results in item order."""
        return [self.results[i] for i in sorted(self.results)]


class Executor(Protocol):
    """Runs ``fn(item)`` for every item; yields ``(index, result)`` as tasks finish."""

    def submit_all(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ...  # pragma: no cover

    def cancel(self) -> None:
        ...  # pragma: no cover


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _init_pool_worker(parent: int) -> None:
    _init_worker()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (killed with SIGKILL it cannot stop its pool;
    the orphan would otherwise go on computing points nobody will store)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


class LocalExecutor:
    """In-process (``workers=1``) or a pool of ``workers`` spawned processes."""

    def __init__(self, *, workers: int = 1) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ExecutorError(f"workers must be an integer >= 1, got {workers!r}.")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def submit_all(self, fn, items):  # noqa: D102
        if self.workers == 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        context = multiprocessing.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                            initializer=_init_pool_worker,
                                            initargs=(os.getpid(),))
        try:
            futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:  # a stop (Ctrl-C, SIGTERM, the caller closing us) or an error
            self.cancel()
            raise
        self._pool.shutdown(wait=True)
        self._pool = None

    def cancel(self) -> None:
        """Stop at once: pending tasks are dropped and running ones end with their worker
        process (a training resumes from its last saved state, an attack unit is computed
        again), rather than waiting, maybe hours, for them to finish."""
        if self._pool is not None:
            workers = list((self._pool._processes or {}).values())  # public only from 3.14
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in workers:
                process.terminate()
            for process in workers:
                process.join()
            self._pool = None


class RayExecutor:
    """Tasks on Ray: an existing cluster at ``address`` or a local instance (``workers`` CPUs)."""

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install 'bnnrobust[ray]'.") from None
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ExecutorError(f"workers must be an integer >= 1, got {workers!r}.")
        self.ray = ray
        self.address, self.workers = address, workers
        self._pending: list = []

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if self.address is None:
            options["num_cpus"] = self.workers
        try:
            self.ray.init(address=self.address, **options)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            where = self.address or "a local instance"
            raise ExecutorError(f"could not start Ray on {where}: {exc}") from None

    def submit_all(self, fn, items):  # noqa: D102
        self._connect()
        task = self.ray.remote(num_cpus=1)(_ray_call)
        refs = {task.remote(fn, item): i for i, item in enumerate(items)}
        self._pending = list(refs)
        try:
            while self._pending:
                done, self._pending = self.ray.wait(self._pending, num_returns=1)
                for ref in done:
                    yield refs[ref], self.ray.get(ref)
        finally:
            self.cancel()

    def cancel(self) -> None:  # noqa: D102
        for ref in self._pending:
            self.ray.cancel(ref, force=True)
        self._pending = []


def _ray_call(fn: Callable[[Any], Any], item: Any) -> Any:
    _init_worker()
    return fn(item)


def check_executor(kind: str = "local", *, workers: int = 1, address: str | None = None) -> None:
    """Refuse bad executor settings without starting anything."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}.")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ExecutorError(f"workers must be an integer >= 1, got {workers!r}.")
    if kind == "local" and address is not None:
        raise ExecutorError("--address applies to the ray executor only.")


def make_executor(kind: str = "local", *, workers: int = 1, address: str | None = None) -> Executor:
    """``local`` (``workers`` processes) or ``ray`` (``address``, or a local instance)."""
    check_executor(kind, workers=workers, address=address)
    if kind == "local":
        return LocalExecutor(workers=workers)
    return RayExecutor(address=address, workers=workers)


def run(executor: Executor, fn: Callable[[Any], Any], items: Sequence[Any], *,
        description: str = "points", progress: bool = True,
        on_result: Callable[[int, Any], None] | None = None) -> Outcome:
    """Run ``fn`` over ``items`` with a progress bar; Ctrl-C keeps the finished results.

    ``on_result(index, result)`` is called as each task finishes (e.g. to save it at once).
    """
    outcome = Outcome()
    with tracked(description, len(items), enabled=progress) as tracker:
        try:
            for index, result in executor.submit_all(fn, items):
                outcome.results[index] = result
                if on_result is not None:
                    on_result(index, result)
                tracker.advance()
        except KeyboardInterrupt:
            executor.cancel()
            outcome.interrupted = True
            tracker.note(f"interrupted after {len(outcome.results)} of {len(items)}")
    return outcome
