"""An append-only JSON-lines journal of finished benchmark tasks, so that a run of hours that is
killed resumes where it stopped: every finished task is one line, flushed and fsynced; a torn
last line (the process killed while writing) is ignored; a journal written with other settings
is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
