"""Progress of long work: a live bar on a terminal, and plain lines through Python's logging
(the ``bnnrobust`` logger, level INFO) so that a piped command, a CI log or ``--log-file``
still shows how far it got.

The library only emits records; whoever runs it decides where they go. The command line
(:func:`configure`) prints them on stderr when it is not a terminal and writes them to
``--log-file`` when given; a Python user can attach any handler to :data:`LOGGER`.

Example::

    with tracked("audit", total=3) as progress:
        for e in eps:
            ...
            progress.advance(f"ε={e}: robust accuracy 71.5 %")
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnnrobust.errors import BnnRobustError

LOGGER = logging.getLogger("bnnrobust")
#: the handlers :func:`configure` attached (replaced on the next call)
_ATTACHED: list[logging.Handler] = []


class Tracker:
    """One task's progress: :meth:`advance` moves the bar (on a terminal) and logs a line at
    most every ``every`` seconds, and always for the last step or when given a message."""

    def __init__(self, description: str, total: int, bar: Progress | None, every: float, *,
                 quiet: bool = False):
        self.description, self.total, self.every = description, total, every
        self.bar, self.done, self.quiet = bar, 0, quiet
        self.start = self.last = time.monotonic()
        self.task = bar.add_task(description, total=total) if bar is not None else None

    def advance(self, message: str | None = None, *, steps: int = 1) -> None:
        """``steps`` more done; ``message``: what the step found (always logged)."""
        self.done += steps
        if self.bar is not None:
            self.bar.advance(self.task, steps)
        now = time.monotonic()
        if self.quiet:
            return
        if message is not None or self.done >= self.total or now - self.last >= self.every:
            self.last = now
            LOGGER.info("%s: %d/%d done, %.0f s%s", self.description, self.done, self.total,
                        now - self.start, "" if message is None else f"; {message}")

    def note(self, message: str) -> None:
        """A line about the task that is not a step (logged at once)."""
        if not self.quiet:
            LOGGER.info("%s: %s", self.description, message)


@contextmanager
def tracked(description: str, total: int, *, enabled: bool = True, every: float = 30.0,
            console: Console | None = None) -> Iterator[Tracker]:
    """A :class:`Tracker` for ``total`` steps; the bar shows on a terminal when ``enabled``
    (lines are logged regardless: a handler decides whether they are seen)."""
    console = console or Console(stderr=True)
    show = enabled and console.is_terminal
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    if enabled:
        LOGGER.info("%s: started, %d to do", description, total)
    with Progress(*columns, console=console, disable=not show, transient=True) as bar:
        yield Tracker(description, total, bar if show else None, every, quiet=not enabled)


def configure(*, log_file: Path | None = None, stream=None) -> None:
    """Where the command line's progress lines go: ``stream`` (default stderr) when it is not
    a terminal, and ``log_file`` (appended) when given. Replaces an earlier configuration."""
    reset()
    stream = stream or sys.stderr
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if not (hasattr(stream, "isatty") and stream.isatty()):
        _ATTACHED.append(logging.StreamHandler(stream))
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            _ATTACHED.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise BnnRobustError(f"--log-file {log_file} cannot be written ({exc.strerror}); "
                                 "give a path in a writable folder.") from None
    for handler in _ATTACHED:
        handler.setFormatter(formatter)
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO if _ATTACHED else logging.WARNING)


def reset() -> None:
    """Detach the handlers :func:`configure` attached (the library emits to no one again)."""
    for handler in _ATTACHED:
        LOGGER.removeHandler(handler)
        handler.close()
    _ATTACHED.clear()
    LOGGER.setLevel(logging.NOTSET)
