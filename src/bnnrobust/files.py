"""Files the project writes: atomically, and under one cache root.

Every file bnnrobust writes (checkpoints, reports, figures, JSON, cached arrays) goes through
:func:`atomic_write` or :func:`atomic_path`: the data is written to a uniquely named temporary
file in the destination's folder, flushed and fsync'ed, then renamed over the destination, so
a reader never sees a half-written file and a kill at any moment leaves the old file intact.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """The folder for caches (checkpoints, arrays, the results store): ``$BNNROBUST_CACHE`` or
    ``~/.cache/bnnrobust``."""
    env = os.environ.get("BNNROBUST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bnnrobust"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is fsync'ed and renamed to
    ``path`` (folders created), on error removed.

    Example::

        with atomic_path("model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: a temporary file of an atomic write untouched for this long was left by a killed writer
STALE_PART_SECONDS = 3600.0


def _remove_stale_parts(path: Path) -> None:
    """Delete the temporary files of earlier writes to ``path`` that a kill left behind (those
    not modified for :data:`STALE_PART_SECONDS`; a live writer's file is younger)."""
    now = time.time()
    for part in path.parent.glob(f".{path.name}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass  # gone already, or not ours to delete


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)
