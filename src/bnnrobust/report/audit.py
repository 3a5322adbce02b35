"""The audit report of ``bnnrobust audit``: ``audit.md``, ``audit.html`` (self-contained page
with the figure), ``audit.json`` and ``audit.png`` (accuracy against ε per attack, the
worst case in bold) in one folder. See :mod:`bnnrobust.evaluate.audit` for what is measured.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from bnnrobust.evaluate.audit import AuditResult
from bnnrobust.experiments.runner import code_version
from bnnrobust.files import atomic_write
from bnnrobust.report.plots import plt, save
from bnnrobust.report.reproduction import CSS
from bnnrobust.train import library_versions

CASCADE_NOTE = ("Each attack runs on the points every earlier attack failed on (a point "
                "broken at a smaller ε counts as broken at the larger ones); a cell is the robust "
                "accuracy after that attack and every earlier one, with (−k) the points it alone "
                "broke. A point is robust only if the model classifies it correctly and every "
                "attack (and the exact attack, where it ran) failed. † adaptive attack.")
KIND_NOTES = {"autoattack": "", "score": " (scores only)", "standard": "", "adaptive": " †",
              "transfer": " (black box)", "cw": "", "exact": ""}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _rows(result: AuditResult) -> list[tuple[str, list[str]]]:
    """(label, cells per ε): every attack's robust accuracy after it and every earlier one,
    with the points it alone broke; then AutoAttack's, the exact counts and the worst case."""
    rows = [(line.label + KIND_NOTES[line.kind],
             [f"{_pct(line.after.get(e))} (−{line.broken.get(e, 0)})" for e in result.eps])
            for line in result.lines]
    if result.autoattack is not None:
        rows.append(("AutoAttack (standard) robust accuracy",
                     [_pct(result.autoattack[e]) for e in result.eps]))
    if result.exact is not None:
        rows.append(("exact (CP-SAT): attacked / unknown / skipped (broken before) of "
                     f"{result.settings['exact_points']} points",
                     [f"{c['attacked']} / {c['unknown']} / {c['skipped']}" for c in
                      (result.exact[e] for e in result.eps)]))
    rows.append(("worst case (robust accuracy)", [_pct(result.worst[e]) for e in result.eps]))
    return rows


def _alone(result: AuditResult) -> list[tuple[str, list[str]]]:
    """(label, cells per ε): each attack's accuracy alone (per-attack audits only)."""
    if not result.settings.get("per_attack"):
        return []
    return [(line.label + KIND_NOTES[line.kind], [_pct(line.accuracy.get(e)) for e in result.eps])
            for line in result.lines]


def _summary(result: AuditResult, source: dict[str, Any]) -> list[tuple[str, str]]:
    model = result.model
    return [("checkpoint", str(source.get("checkpoint", "—"))),
            ("model", f"{model.get('name', '?')} {json.dumps(model.get('params', {}))}"),
            ("dataset", f"{source.get('dataset', '—')}: {result.points} test points "
                        f"(after the {result.settings['holdout']} seed inputs of the substitute)"),
            ("clean accuracy", f"{100 * result.clean_accuracy:.1f} %"),
            ("random at test time", "yes (EOT used)" if result.settings["random_at_test_time"]
             else "no"),
            ("non-differentiable input layer", "yes (BPDA used)"
             if result.settings["non_differentiable_input"] else "no"),
            ("suite", f"{result.settings['suite']}, "
                      + ("every attack on every point (--per-attack)"
                         if result.settings["per_attack"] else "cascade")),
            ("CW-L2 mean L2 of successful examples",
             "—" if result.cw_mean_l2 is None else f"{result.cw_mean_l2:.3f}"),
            ("exact attack", result.exact_note),
            ("device, time", f"{result.device}, {result.seconds:.0f} s"),
            ("written", time.strftime("%Y-%m-%d %H:%M:%S"))]


def write(result: AuditResult, out: Path, *, source: dict[str, Any]) -> dict[str, Path]:
    """Write the four files under ``out`` (created); returns them by kind."""
    out.mkdir(parents=True, exist_ok=True)
    png = _figure(result, out / "audit.png")
    heading = ["attack"] + [f"ε={e:.4g}" for e in result.eps]
    raised = [f for f in result.flags if f.raised]
    md = ["# Robustness audit", ""]
    md += [f"- **{k}**: {v}" for k, v in _summary(result, source)] + [""]
    md += ["## Robust accuracy (%), attack after attack", "", CASCADE_NOTE, "",
           "| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
    md += ["| " + " | ".join([label, *cells]) + " |" for label, cells in _rows(result)]
    if _alone(result):
        md += ["", "## Accuracy under each attack alone (%)", "",
               "| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
        md += ["| " + " | ".join([label, *cells]) + " |" for label, cells in _alone(result)]
    md += ["", "## Gradient-masking flags", ""]
    md += [f"- **{'FLAG' if f.raised else 'ok'}** `{f.name}`: {f.evidence}"
           + (f" — {f.explanation}" if f.raised else "") for f in result.flags]
    md += ["", f"![accuracy against ε]({png.name})", ""]
    atomic_write(out / "audit.md", "\n".join(md))

    esc = html.escape
    page = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>bnnrobust "
            f"audit</title><style>{CSS}</style></head><body><h1>Robustness audit</h1>",
            "<table id='metadata'><tbody>"]
    page += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _summary(result, source)]
    page += ["</tbody></table>", "<h2>Robust accuracy (%), attack after attack</h2>",
             f"<p>{esc(CASCADE_NOTE)}</p>"]
    page += _html_table(heading, _rows(result))
    if _alone(result):
        page += ["<h2>Accuracy under each attack alone (%)</h2>"]
        page += _html_table(heading, _alone(result))
    page += ["<h2>Gradient-masking flags</h2><ul id='flags'>"]
    page += [f"<li class='{'flag' if f.raised else ''}'><b>{'FLAG' if f.raised else 'ok'}</b> "
             f"<code>{esc(f.name)}</code>: {esc(f.evidence)}"
             + (f" — {esc(f.explanation)}" if f.raised else "") + "</li>" for f in result.flags]
    page += ["</ul>", f"<p>{len(raised)} flag(s) raised.</p>",
             f"<figure><img src='{esc(png.name)}' alt='accuracy against ε'><figcaption>Accuracy "
             "against ε per attack; the worst case in bold.</figcaption></figure>",
             "</body></html>"]
    atomic_write(out / "audit.html", "\n".join(page))
    atomic_write(out / "audit.json", json.dumps(model_card(result, source), indent=1))
    return {"markdown": out / "audit.md", "html": out / "audit.html",
            "json": out / "audit.json", "png": png}


def _html_table(heading: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    esc = html.escape
    return (["<table class='results'><thead><tr>"
             + "".join(f"<th>{esc(h)}</th>" for h in heading) + "</tr></thead><tbody>"]
            + ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in [label, *cells]) + "</tr>"
               for label, cells in rows] + ["</tbody></table>"])


def _figure(result: AuditResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for line in result.lines:  # each attack alone where measured, else after it in the cascade
        values = line.accuracy if result.settings.get("per_attack") else line.after
        points = [(e, 100 * v) for e, v in values.items() if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", linewidth=1,
                    linestyle="--" if line.kind == "adaptive" else "-",
                    label=line.label + KIND_NOTES[line.kind])
    if result.autoattack is not None:
        ax.plot(result.eps, [100 * result.autoattack[e] for e in result.eps], color="grey",
                linewidth=2, marker="^", label="AutoAttack (standard)")
    ax.plot(result.eps, [100 * result.worst[e] for e in result.eps], color="black",
            linewidth=3, marker="s", label="worst case")
    ax.set_xlabel("ε (L∞)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7)
    ax.set_title(f"audit: {result.model.get('name', '')}", fontsize=9)
    save(fig, path)
    return path


#: the model card's schema name and version (README, "The model card")
CARD_SCHEMA = "bnnrobust.audit/1"


def model_card(result: AuditResult, source: dict[str, Any]) -> dict[str, Any]:
    """The audit as a model card (``audit.json``; schema :data:`CARD_SCHEMA`, documented in
    the README): the model, the data, the threat model, clean and robust accuracy (worst case,
    AutoAttack's, after each attack, each attack alone where measured), certified counts where
    the exact attack ran, the flags, the settings, the code and library versions, the time."""
    def by_eps(values: dict[float, Any]) -> dict[str, Any]:
        return {f"{e:g}": v for e, v in values.items()}

    settings = result.settings
    return {
        "schema": CARD_SCHEMA,
        "model": {"source": source.get("checkpoint"), "name": result.model.get("name"),
                  "params": result.model.get("params", {})},
        "data": {"dataset": source.get("dataset"), "split": "test", "points": result.points,
                 "first_index": settings["holdout"]},
        "threat_model": {"norm": "Linf", "eps": result.eps, "input_range": [0.0, 1.0],
                         "suite": settings["suite"], "cascade": not settings["per_attack"],
                         "random_at_test_time": settings["random_at_test_time"],
                         "eot_samples": settings["eot_samples"], "bpda": settings["bpda"]},
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": {
            "worst_case": by_eps(result.worst),
            "autoattack": None if result.autoattack is None else by_eps(result.autoattack),
            "after_each_attack": {line.label: by_eps(line.after) for line in result.lines},
            "broken_by_each_attack": {line.label: by_eps(line.broken) for line in result.lines},
            "per_attack": {line.label: by_eps(line.accuracy) for line in result.lines}
            if settings["per_attack"] else None},
        "certified": None if result.exact is None else
        {"note": result.exact_note, "counts": by_eps(result.exact)},
        "exact_note": result.exact_note,
        "cw_mean_l2": result.cw_mean_l2,
        "flags": [f.as_dict() for f in result.flags],
        "settings": settings,
        "versions": {"code": code_version(), **library_versions()},
        "device": result.device, "seconds": result.seconds,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
