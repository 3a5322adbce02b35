"""Experiments: executors that fan independent tasks out over processes or Ray."""

from bnnrobust.experiments.executors import (
    EXECUTORS,
    Executor,
    ExecutorError,
    LocalExecutor,
    Outcome,
    RayExecutor,
    check_executor,
    make_executor,
    run,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "Outcome",
    "RayExecutor",
    "check_executor",
    "make_executor",
    "run",
]
