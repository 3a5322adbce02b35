"""An append-only JSON-lines journal of finished benchmark tasks, so that a run of hours that is
killed resumes where it stopped: every finished task is one line, flushed and fsynced; a torn
last line (the process killed while writing) is ignored; a journal written with other settings
is refused rather than mixed in. Beside it, what the long benchmarks share about their runs:
the ``--checkpoints`` option (the committed networks) and the code summary of records.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

try:
    from bnnrobust.experiments.measures.base import request_and_hook
except ImportError:  # the package of an earlier commit (continue.sh's worktrees) named it so
    from bnnrobust.experiments.measures.base import _request_and_hook as request_and_hook
from bnnrobust.models import resolve_params
from bnnrobust.train import load as load_checkpoint
from bnnrobust.train.cache import CachedModel, train_cached

#: the committed benchmark networks (``benchmarks/checkpoints``, README there)
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def add_checkpoints_option(parser: argparse.ArgumentParser) -> None:
    """The ``--checkpoints DIR`` option of the exact-attack benchmarks (default
    :data:`CHECKPOINTS`, so every session attacks the same weights)."""
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINTS,
                        help="checkpoint folder: the committed benchmark networks, so every "
                             "session attacks the same weights (benchmarks/checkpoints)")


def benchmark_network(request: dict[str, Any], checkpoints: Path) -> CachedModel:
    """The committed network of a training ``request`` (plain data, as
    :func:`~bnnrobust.experiments.measures.base.train_request` makes it): under its cache key
    when the training code has not changed since it was trained; else the committed
    checkpoint trained from the same request by earlier training code — the weights the
    journals were measured on (a retrain need not give the same weights); trained and
    written only when no committed checkpoint has this request."""
    train, hook = request_and_hook(request)
    wanted = _without_code(train.as_dict())
    exact = checkpoints / f"{train.model}-{train.key()}.pt"
    if not exact.exists():
        for path in sorted(checkpoints.glob(f"{train.model}-*.pt")):
            stored = load_checkpoint(path)
            # a parameter the family gained since takes its default, the old behaviour
            config = {**stored.train_config,
                      "params": resolve_params(train.model, stored.train_config["params"])}
            if _without_code(config) == wanted:
                print(f"{path.name}: the committed network of this request, trained by "
                      f"training code {stored.train_config.get('training_code')} (now "
                      f"{train.as_dict()['training_code']})", flush=True)
                return CachedModel(stored.model.eval(), path, True, stored.metrics,
                                   stored.train_config)
    return train_cached(train, batch_hook=hook, device="cpu", cache_dir=checkpoints,
                        progress=True)


def _without_code(config: dict[str, Any]) -> dict[str, Any]:
    """A training configuration without the training code's fingerprint, as JSON data."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k != "training_code"}))


def codes(records: list[dict[str, Any]]) -> str:
    """The code versions that produced ``records`` (their ``code`` field; ``unrecorded`` where
    a record has none), sorted and comma-separated."""
    return ", ".join(sorted({r.get("code", "unrecorded") for r in records}))


class Journal:
    """Finished tasks of one benchmark run, keyed by a string, under fixed ``settings``.

    ``path=None`` keeps nothing (every task runs)."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, json.loads(json.dumps(settings))
        self.records: dict[str, Any] = {}
        if path is None or not path.exists():
            return
        text = path.read_text()
        if text and not text.endswith("\n"):
            with path.open("a") as f:  # end a torn line so the next record starts afresh
                f.write("\n")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if entry.get("settings") != self.settings:
                raise SystemExit(f"journal {path} line {number} was written with other settings "
                                 f"({entry.get('settings')}); use another --journal path or the "
                                 "same options.")
            self.records[entry["key"]] = entry["record"]

    @classmethod
    def merged(cls, paths: list[Path], settings: dict[str, Any]) -> Journal:
        """The journal of ``paths`` (none: keeps nothing; one: that journal). Several are read
        as one, in memory (a report over runs that wrote one journal each); a key two of them
        hold with different records is refused."""
        if len(paths) <= 1:
            return cls(paths[0] if paths else None, settings)
        merged = cls(None, settings)
        for path in paths:
            for key, record in cls(path, settings).records.items():
                if merged.records.get(key, record) != record:
                    raise SystemExit(f"{path} holds point {key!r} with another result than an "
                                     "earlier journal: report them one by one.")
                merged.records[key] = record
        return merged

    def add(self, key: str, record: Any) -> None:
        """Store one finished task durably."""
        self.records[key] = record
        if self.path is None:
            return
        line = json.dumps({"settings": self.settings, "key": key, "record": record})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
