"""A leaderboard of model cards (``bnnrobust leaderboard``), RobustBench-style: one row per
audited model — clean accuracy, AutoAttack's robust accuracy and our worst case at every ε,
certified counts where the exact attack ran, the flags raised — ranked by the worst case at
the largest budget all cards share. Written as ``leaderboard.md`` and ``leaderboard.html``.

Example::

    board = Leaderboard.of([Path("a64/audit.json"), Path("b64/audit.json")])
    board.write(Path("board"))
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnrobust.errors import BnnRobustError
from bnnrobust.files import atomic_write
from bnnrobust.report.audit import CARD_SCHEMA
from bnnrobust.report.reproduction import CSS


def read_card(path: Path) -> dict[str, Any]:
    """The model card at ``path`` (an ``audit.json``, or the folder holding one)."""
    if path.is_dir():
        path = path / "audit.json"
    if not path.is_file():
        raise BnnRobustError(f"{path} does not exist; give the audit.json files (or their "
                             "folders) that 'bnnrobust audit' wrote.")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BnnRobustError(f"{path} is not a JSON model card ({exc}).") from None
    if not isinstance(card, dict) or card.get("schema") != CARD_SCHEMA:
        found = card.get("schema") if isinstance(card, dict) else None
        raise BnnRobustError(f"{path} is not a model card of schema {CARD_SCHEMA} (found "
                             f"{found!r}); run 'bnnrobust audit' again to write one.")
    return card


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


@dataclass
class Leaderboard:
    """The rows of several model cards; ``eps``: every budget any card has, ascending."""

    cards: list[dict[str, Any]]
    sources: list[Path]
    eps: list[str]

    @classmethod
    def of(cls, paths: list[Path]) -> Leaderboard:
        """The leaderboard of the cards at ``paths`` (at least one), ranked (see the module
        doc)."""
        if not paths:
            raise BnnRobustError("give at least one audit.json (or its folder).")
        cards = [read_card(p) for p in paths]
        eps = sorted({e for c in cards for e in c["robust_accuracy"]["worst_case"]}, key=float)
        shared = [e for e in eps if all(e in c["robust_accuracy"]["worst_case"] for c in cards)]
        key = shared[-1] if shared else None
        order = sorted(range(len(cards)), key=lambda i: -(
            cards[i]["robust_accuracy"]["worst_case"].get(key, -1) if key else 0))
        return cls([cards[i] for i in order], [paths[i] for i in order], eps)

    def heading(self) -> list[str]:
        """The table's columns."""
        return (["model", "dataset", "points", "clean %"]
                + [f"AutoAttack % ε={e}" for e in self.eps]
                + [f"worst case % ε={e}" for e in self.eps]
                + ["certified (robust/attacked/unknown)", "flags raised", "time (s)"])

    def rows(self) -> list[list[str]]:
        """One row of cells per card, in rank order."""
        rows = []
        for card in self.cards:
            robust = card["robust_accuracy"]
            aa = robust.get("autoattack") or {}
            certified = card.get("certified")
            exact = "—" if not certified else "; ".join(
                f"ε={e}: {c['robust']}/{c['attacked']}/{c['unknown']}"
                for e, c in certified["counts"].items())
            raised = [f["name"] for f in card["flags"] if f["raised"]]
            rows.append([
                f"{card['model']['name']} ({card['model']['source']})",
                str(card["data"]["dataset"]), str(card["data"]["points"]),
                _pct(card["clean_accuracy"]),
                *(_pct(aa.get(e)) for e in self.eps),
                *(_pct(robust["worst_case"].get(e)) for e in self.eps),
                exact, ", ".join(raised) or "none", f"{card['seconds']:.0f}"])
        return rows

    def write(self, out: Path) -> dict[str, Path]:
        """``leaderboard.md`` and ``leaderboard.html`` under ``out``."""
        heading, rows = self.heading(), self.rows()
        note = ("Robust accuracy under L∞ attacks on [0, 1] inputs, per point the worst case "
                "over every attack of each card's suite (AutoAttack's own beside it), ranked by "
                "the worst case at the largest ε all cards share. Cards: "
                + ", ".join(str(p) for p in self.sources) + ".")
        md = ["# Robustness leaderboard", "", note, "",
              "| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
        md += ["| " + " | ".join(row) + " |" for row in rows]
        esc = html.escape
        page = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>bnnrobust "
                f"leaderboard</title><style>{CSS}</style></head><body>"
                "<h1>Robustness leaderboard</h1>", f"<p>{esc(note)}</p>",
                "<table class='results'><thead><tr>"
                + "".join(f"<th>{esc(h)}</th>" for h in heading) + "</tr></thead><tbody>"]
        page += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        page += ["</tbody></table></body></html>"]
        return {"markdown": atomic_write(out / "leaderboard.md", "\n".join(md) + "\n"),
                "html": atomic_write(out / "leaderboard.html", "\n".join(page))}
