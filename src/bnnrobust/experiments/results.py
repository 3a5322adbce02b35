"""Committed results: the paper-profile rows of the results store as plain, diffable files.

A paper-profile run takes hours, so its results travel with the code: after each
``reproduce --profile paper`` (finished or interrupted) the runner writes, for every spec it
ran, ``<results>/<paper>/<name>.paper.jsonl`` — one JSON object per stored unit of the spec's
plan, in planning order: the unit (model row, seed, column, chunk, parameters), its key, its
value, the seconds it took, the device and the code version that computed it — and
``<name>.paper.json``, the run's metadata (library versions, code versions, devices, units
planned and stored, compute seconds summed over units, and the training time and final test
accuracy of every model from its checkpoint). Both are written atomically and only by the
runner; nobody edits them. ``<results>`` is the checkout's ``results/`` folder
(``$BNNROBUST_RESULTS`` overrides).

They are read back two ways: a run imports the rows whose key it plans (the same unit computed
by the same code: never computed twice, in a later session or on a fresh clone), and the report
shows, for every unit the store lacks, the committed row of the same spec, profile, model row,
seed, column and chunk — with its provenance, and counted as *stale* when the code or the spec
has changed since (its key differs), so the committed tables are what a reader of a fresh
clone sees.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bnnrobust.errors import BnnRobustError
from bnnrobust.experiments.store import ResultStore, StoredRow, Unit
from bnnrobust.files import atomic_write
from bnnrobust.train import library_versions

#: version of the files' layout
RESULTS_FORMAT = "bnnrobust.results/1"


class ResultsError(BnnRobustError):
    """A committed results file that cannot be read."""


def default_results_root(specs_root: Path) -> Path:
    """``$BNNROBUST_RESULTS``, else the ``results/`` folder beside the specs folder."""
    env = os.environ.get("BNNROBUST_RESULTS")
    return Path(env) if env else specs_root.parent / "results"


def rows_path(root: Path, spec: str, profile: str) -> Path:
    """``<root>/<paper>/<name>.<profile>.jsonl``."""
    return root / f"{spec}.{profile}.jsonl"


def meta_path(root: Path, spec: str, profile: str) -> Path:
    """``<root>/<paper>/<name>.<profile>.json``."""
    return root / f"{spec}.{profile}.json"


def _identity(unit: Unit) -> tuple[str, str, str, int, str, int]:
    return unit.spec, unit.profile, unit.model, unit.seed, unit.attack, unit.chunk


def export(units: Sequence[Unit], store: ResultStore, root: Path, *, spec: str, profile: str,
           title: str, models: dict[str, dict[str, Any]] | None = None) -> Path | None:
    """Write the rows of ``units`` (one spec and profile, in planning order) under ``root``:
    each unit's stored row, else the row already committed for it (kept, stale or not, until
    a run computes it anew); and the metadata (``models``: per model row and seed, its
    training; entries of the committed metadata are kept for the others). Returns the rows'
    path (None, writing nothing, when there is no row)."""
    rows = store.fetch(units)
    before = committed(root, spec, profile)
    kept, _ = before.matching([u for u in units if u.key not in rows])
    ordered = [rows.get(u.key) or kept[u.key] for u in units if u.key in rows or u.key in kept]
    if not ordered:
        return None
    models = {**before.meta.get("models", {}), **(models or {})}
    lines = [json.dumps({"key": r.unit.key, "unit": asdict(r.unit), "value": r.value,
                         "seconds": round(r.seconds, 3), "device": r.device,
                         "code_version": r.code_version}, sort_keys=True,
                        ensure_ascii=False, separators=(",", ":"))
             for r in ordered]
    meta = {"format": RESULTS_FORMAT, "spec": spec, "profile": profile, "title": title,
            "units_planned": len(units), "units_stored": len(ordered),
            "compute_seconds": round(sum(r.seconds for r in ordered), 1),
            "code_versions": sorted({r.code_version for r in ordered}),
            "devices": sorted({r.device for r in ordered}),
            "libraries": library_versions(), "models": models,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = rows_path(root, spec, profile)
    atomic_write(path, "\n".join(lines) + "\n")
    atomic_write(meta_path(root, spec, profile),
                 json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


@dataclass(frozen=True)
class Committed:
    """The committed rows of one spec and profile (by key) and their metadata."""

    rows: dict[str, StoredRow] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def matching(self, units: Sequence[Unit]) -> tuple[dict[str, StoredRow], int]:
        """For the ``units`` of the current plan: the committed row of each (same spec,
        profile, model row, seed, column and chunk), keyed by the current unit's key, and how
        many of them are stale (computed for another key: other code or another spec)."""
        by_identity = {_identity(r.unit): r for r in self.rows.values()}
        found, stale = {}, 0
        for unit in units:
            row = by_identity.get(_identity(unit))
            if row is not None:
                found[unit.key] = row
                stale += row.unit.key != unit.key
        return found, stale


def committed(root: Path, spec: str, profile: str) -> Committed:
    """The committed rows and metadata of ``spec`` and ``profile`` under ``root`` (empty when
    there are none); a damaged file is a :class:`ResultsError` naming it."""
    path = rows_path(root, spec, profile)
    if not path.exists():
        return Committed()
    rows: dict[str, StoredRow] = {}
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            data = json.loads(line)
            unit = Unit(**data["unit"])
            if unit.key != data["key"]:
                raise ValueError(f"line {number}: the key does not match the unit")
            rows[unit.key] = StoredRow(unit, data["value"], float(data["seconds"]),
                                       data["code_version"], data["device"], 0.0)
        meta_file = meta_path(root, spec, profile)
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"{path}: not a results file written by bnnrobust ({exc}); restore "
                           "it with git (git checkout -- results/) — it is never edited by "
                           "hand.") from None
    return Committed(rows, meta, path)


def import_rows(store: ResultStore, rows: dict[str, StoredRow], units: Sequence[Unit]) -> int:
    """Put into ``store`` the committed rows whose key is one of ``units``' (the same unit,
    computed by the same code), keeping their provenance; returns how many were new."""
    wanted = {u.key for u in units}
    added = 0
    for key, row in rows.items():
        if key in wanted:
            added += store.put(row.unit, row.value, seconds=row.seconds, device=row.device,
                               code_version=row.code_version)
    return added
