"""The results store: one SQLite row per finished unit of work, so that runs resume and reports
read what was measured.

A *unit* is the smallest piece a run stores: one (spec, profile, model, seed, attack,
parameters, sample chunk). Its key is a hash of those fields in canonical JSON, so the same
unit always has the same key whatever order its parameters were written in. A row holds the
unit, its value (plain JSON), the seconds it took, the code version and the device.

Safety: the database is in WAL mode with a busy timeout, every write is one transaction, and a
unit is inserted only if its key is absent (``INSERT OR IGNORE``), so several processes may
write at once (a killed process leaves at most an uncommitted transaction, which SQLite rolls
back) and a unit stored twice keeps its first value. Default path:
``~/.cache/bnnrobust/results.sqlite`` (``$BNNROBUST_CACHE/results.sqlite``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bnnrobust.errors import BnnRobustError
from bnnrobust.files import cache_root

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    spec TEXT NOT NULL, profile TEXT NOT NULL, model TEXT NOT NULL, seed INTEGER NOT NULL,
    attack TEXT NOT NULL, params TEXT NOT NULL, chunk INTEGER NOT NULL,
    value TEXT NOT NULL, seconds REAL NOT NULL, code_version TEXT NOT NULL,
    device TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS units_by_spec ON units (spec, profile);
"""


class StoreError(BnnRobustError):
    """A results store that cannot be opened or a value that cannot be stored."""


@dataclass(frozen=True)
class Unit:
    """One stored piece of work. ``params``: the attack's (or measurement's) parameters as
    plain JSON data; ``chunk``: which slice of the test points (0 when not chunked)."""

    spec: str
    profile: str
    model: str
    seed: int
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    chunk: int = 0

    @property
    def key(self) -> str:
        """A hash of every field in canonical JSON (sorted keys)."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"),
                          default=_plain)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StoredRow:
    """A stored unit with its value and provenance."""

    unit: Unit
    value: Any
    seconds: float
    code_version: str
    device: str
    created: float


def default_path() -> Path:
    """``$BNNROBUST_CACHE/results.sqlite``, or ``~/.cache/bnnrobust/results.sqlite``."""
    return cache_root() / "results.sqlite"


class ResultStore:
    """A SQLite results store at ``path`` (created with its folder if missing)."""

    def __init__(self, path: Path | str | None = None, *, timeout: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"results store {self.path} is a folder; give a file path "
                             "(e.g. results.sqlite).")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                                 (str(SCHEMA_VERSION),))
            found = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open results store {self.path}: {exc}. Is it a SQLite "
                             "file written by bnnrobust? Give another --store path.") from None
        if found[0] != str(SCHEMA_VERSION):
            raise StoreError(f"results store {self.path} has schema {found[0]}; this version "
                             f"reads schema {SCHEMA_VERSION}. Use another --store path.")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def exclusive(self, *, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the store's run lock for the block (an advisory file lock beside it): one run
        at a time plans and computes units into this store. A second run waits (``waiting`` is
        called first), then finds the first one's units stored and reuses them, so no unit is
        computed, and no model trained, twice."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115
        except OSError as exc:
            raise StoreError(f"cannot create the store's lock file {lock_path} ({exc}).") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self):
        return _Transaction(self._db)

    def put(self, unit: Unit, value: Any, *, seconds: float, device: str,
            code_version: str) -> bool:
        """Store one finished unit; returns False when it was already stored (kept as it was)."""
        try:
            text = json.dumps(value, allow_nan=False, default=_plain)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"the value of unit {unit} is not plain JSON data: {exc}.") from None
        try:
            with self._transaction():
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO units VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (unit.key, unit.spec, unit.profile, unit.model, int(unit.seed), unit.attack,
                     json.dumps(unit.params, sort_keys=True, default=_plain), int(unit.chunk),
                     text, float(seconds), code_version, device, time.time()))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot write to the results store {self.path} ({exc}; is its disk "
                             "full or read-only?). Every unit stored before this one is kept; "
                             "free space (or give another --store) and run again to compute "
                             "the rest.") from None
        return cursor.rowcount == 1

    def done(self, units: Iterable[Unit]) -> set[str]:
        """The keys of ``units`` that are already stored."""
        return set(self.fetch(units))

    def superseded(self, units: Iterable[Unit]) -> int:
        """How many of ``units`` (not stored) have a row with the same spec, profile, model,
        seed, attack and chunk but another key: rows from other code or another version of
        the spec, which the new units replace."""
        count = 0
        for unit in units:
            found = self._db.execute(
                "SELECT 1 FROM units WHERE spec=? AND profile=? AND model=? AND seed=? AND "
                "attack=? AND chunk=? AND key<>? LIMIT 1",
                (unit.spec, unit.profile, unit.model, int(unit.seed), unit.attack,
                 int(unit.chunk), unit.key)).fetchone()
            count += found is not None
        return count

    def fetch(self, units: Iterable[Unit]) -> dict[str, StoredRow]:
        """The stored rows of ``units`` (those not stored are absent), by unit key."""
        keys = [u.key for u in units]
        found: dict[str, StoredRow] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            marks = ",".join("?" * len(batch))
            cursor = self._db.execute(f"SELECT * FROM units WHERE key IN ({marks})", batch)
            found.update((row.unit.key, row) for row in self._read(cursor))
        return found

    def rows(self, *, spec: str | None = None, profile: str | None = None) -> list[StoredRow]:
        """Stored rows, optionally of one spec and profile, in a stable order."""
        query, args = "SELECT * FROM units", []
        where = [(name, value) for name, value in (("spec", spec), ("profile", profile))
                 if value is not None]
        if where:
            query += " WHERE " + " AND ".join(f"{name} = ?" for name, _ in where)
            args = [value for _, value in where]
        query += " ORDER BY spec, profile, model, seed, attack, params, chunk"
        return list(self._read(self._db.execute(query, args)))

    def _read(self, cursor: sqlite3.Cursor) -> Iterator[StoredRow]:
        for (_key, spec, profile, model, seed, attack, params, chunk, value, seconds, version,
             device, created) in cursor:
            yield StoredRow(Unit(spec, profile, model, seed, attack, json.loads(params), chunk),
                      json.loads(value), seconds, version, device, created)

    def count(self) -> int:
        """Number of stored units."""
        return self._db.execute("SELECT COUNT(*) FROM units").fetchone()[0]

    def check(self) -> None:
        """Raise :class:`StoreError` unless SQLite's integrity check passes."""
        result = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise StoreError(f"results store {self.path} is damaged: {result}.")


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit
    connection: the write lock is taken at the start, so concurrent writers queue on the busy
    timeout instead of failing half-way."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *exc: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _plain(value: Any) -> Any:
    """JSON for NumPy scalars and arrays; anything else is an error."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not finite")
    raise TypeError(f"{type(value).__name__} is not plain data")
