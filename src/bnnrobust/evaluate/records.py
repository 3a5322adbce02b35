"""Per-sample records other tools can read: one flat row per (ε, point, attack), as JSON lines
or CSV, and the adversarial inputs as a NumPy ``.npz``.

Each row (:data:`FIELDS`): ``eps`` (None for attacks without a budget), ``index`` (the test
set's index of the point), ``label``, ``clean_prediction``, ``attack`` (its label), ``ran``
(False where a cascade skipped the point: broken by an earlier attack or at a smaller ε, or
beyond the exact attack's points), ``success`` (the attack's own verdict), ``robust_after``
(the point's robustness after this attack and every earlier one: 1 or 0, a fraction of passes
for a random model; audits only), ``l0``, ``l2``, ``linf`` (of ``x_adv − x``), ``queries``
(score-based and transfer attacks), ``seconds`` (the point's own time where the attack
measures it, else its batch's time divided by the batch's points) and ``status`` (exact
attacks: optimal, robust, attacked, ...).

Example::

    rows = audit_records(result, y=y_eval, clean_prediction=pred, first_index=150)
    write_records(rows, Path("audit.jsonl"))      # or audit.csv
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnnrobust.attacks import AttackResult
from bnnrobust.errors import BnnRobustError
from bnnrobust.evaluate.audit import AuditResult
from bnnrobust.files import atomic_write

FIELDS = ("eps", "index", "label", "clean_prediction", "attack", "ran", "success",
          "robust_after", "l0", "l2", "linf", "queries", "seconds", "status")
FORMATS = (".jsonl", ".csv")


def result_records(result: AttackResult, *, attack: str, eps: float | None,
                   indices: Sequence[int], labels: torch.Tensor,
                   clean_prediction: torch.Tensor,
                   robust_after: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """One row per sample of ``result`` (its samples are the points ``indices``, with their
    ``labels`` and clean predictions)."""
    n = len(result.success)
    per_point = result.point_seconds
    rows = []
    for k in range(n):
        rows.append({
            "eps": eps, "index": int(indices[k]), "label": int(labels[k]),
            "clean_prediction": int(clean_prediction[k]), "attack": attack, "ran": True,
            "success": bool(result.success[k]),
            "robust_after": None if robust_after is None else float(robust_after[k]),
            "l0": int(result.l0[k]), "l2": float(result.l2[k]), "linf": float(result.linf[k]),
            "queries": None if result.queries is None else int(result.queries[k]),
            "seconds": float(per_point[k]) if per_point is not None else result.seconds / n,
            "status": None if result.status is None else result.status[k]})
    return rows


def audit_records(result: AuditResult, *, y: torch.Tensor, clean_prediction: torch.Tensor,
                  first_index: int = 0) -> list[dict[str, Any]]:
    """Every attack's row for every point and ε of an audit (``y``: the audited points'
    labels; ``first_index``: the test index of the first audited point)."""
    rows = []
    for e, case in result.cases.items():
        for label, after in case.after.items():
            where = case.attacked[label].tolist()
            out = case.results.get(label)
            ran = {}
            if out is not None:
                ran = {i: row for i, row in zip(where, result_records(
                    out, attack=label, eps=e, indices=[first_index + i for i in where],
                    labels=y[where], clean_prediction=clean_prediction[where],
                    robust_after=after[where]), strict=True)}
            for i in range(len(y)):
                rows.append(ran.get(i) or {
                    **dict.fromkeys(FIELDS), "eps": e, "index": first_index + i,
                    "label": int(y[i]), "clean_prediction": int(clean_prediction[i]),
                    "attack": label, "ran": False, "robust_after": float(after[i])})
    return rows


def adversarial_inputs(result: AuditResult, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per ε, each audited point's adversarial input from the first attack that broke it
    (at a smaller ε if one did: it lies within this ε too; the point itself where none did),
    and which points were broken: arrays ``x_adv_eps=<ε>`` and ``broken_eps=<ε>``."""
    arrays = {}
    x_adv = x.detach().cpu().clone()
    broken = torch.zeros(len(x), dtype=torch.bool)
    for e in sorted(result.cases):
        case = result.cases[e]
        x_adv, broken = x_adv.clone(), broken.clone()
        before = torch.where(broken, torch.zeros_like(case.clean), case.clean)
        for label, after in case.after.items():
            out = case.results.get(label)
            if out is not None:
                where = case.attacked[label]
                newly = (after[where] < before[where]) & ~broken[where]
                x_adv[where[newly]] = out.x_adv.cpu()[newly]
                broken[where[newly]] = True
            before = after
        arrays[f"x_adv_eps={e:g}"] = x_adv.numpy()
        arrays[f"broken_eps={e:g}"] = broken.numpy()
    return arrays


def write_records(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` to ``path`` atomically, as JSON lines or CSV by its suffix."""
    if path.suffix not in FORMATS:
        raise BnnRobustError(f"records file {path} must end in .jsonl (JSON lines) or .csv.")
    if path.suffix == ".jsonl":
        text = "".join(json.dumps({k: row.get(k) for k in FIELDS}) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in FIELDS}
                         for row in rows)
        text = buffer.getvalue()
    atomic_write(path, text)
    return path


def save_adversarial(arrays: dict[str, np.ndarray], path: Path) -> Path:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically (compressed)."""
    if path.suffix != ".npz":
        raise BnnRobustError(f"--save-adv {path} must end in .npz.")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, buffer.getvalue())
    return path
