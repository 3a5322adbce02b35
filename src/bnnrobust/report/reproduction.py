"""Reports: per spec a Markdown file with the paper's table and ours side by side, PNG figures,
and one static ``index.html`` with every table and figure, the run metadata and the flags.

A cell reads ``ours ± std / paper ± pm (difference)``: ours is the mean over seeds (std when
there are two or more), the paper's value is as printed. A ⚠ marks ours outside the paper's
printed ±; an adaptive column (PGD on the logits, EOT, BPDA — an attack that keeps a defense
honest) is marked †. Flags: an adaptive column more than :data:`FLAG_POINTS` points below
the paper's attack at the same ε for the same model means the paper's attack overstates the
model's robustness (masked gradients, or a single step that a stronger attack beats). The
report reads only the units the current spec plans, so a
changed spec never shows stale numbers; an incomplete cell says so.
"""

from __future__ import annotations

import html
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from bnnrobust.experiments.measures import Table, measure_named
from bnnrobust.experiments.results import committed
from bnnrobust.experiments.runner import missing_data, plan
from bnnrobust.experiments.spec import Column, Spec
from bnnrobust.experiments.store import ResultStore
from bnnrobust.files import atomic_write
from bnnrobust.report.figures import FIGURES
from bnnrobust.report.plots import Figure
from bnnrobust.train import library_versions

FLAG_POINTS = 5.0


@dataclass
class SpecReport:
    """Everything the report shows for one spec and profile."""

    spec: Spec
    profile: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    planned: int = 0
    stored: int = 0
    seconds: float = 0.0
    devices: list[str] = field(default_factory=list)
    code_versions: list[str] = field(default_factory=list)
    missing: str | None = None
    flags: list[Flag] = field(default_factory=list)
    markdown: Path | None = None
    #: the paper profile's results shown beside this (quick) one, when any are stored or
    #: committed
    companion: SpecReport | None = None
    #: per model row: "run" (every unit stored), "partly run" or "not run"
    rows: dict[str, str] = field(default_factory=dict)
    #: units read from the committed results (see :mod:`bnnrobust.experiments.results`),
    #: how many of them are stale, and the file
    committed: int = 0
    stale: int = 0
    committed_path: Path | None = None

    def row_label(self, model: str) -> str:
        """The model's label as a table shows it: marked when the row was not (fully) run."""
        state = self.rows.get(model, "run")
        return model if state == "run" else f"{model} ({state})"


def collect(spec: Spec, *, profile: str, store: ResultStore, out: Path,
            data_root: str | None = None, results: Path | None = None) -> SpecReport:
    """Read the stored units of ``spec`` — and, for those the store lacks, the committed rows
    in ``results`` — and build its tables and figures (under ``out``)."""
    rep = SpecReport(spec, profile)
    rep.missing = missing_data(spec, data_root=data_root)
    units = [t.unit for t in plan(spec, profile)]
    rows = store.fetch(units)
    if results is not None:
        found = committed(results, spec.name, profile)
        extra, rep.stale = found.matching([u for u in units if u.key not in rows])
        rows.update(extra)
        rep.committed, rep.committed_path = len(extra), found.path
    rep.planned, rep.stored = len(units), len(rows)
    stored: dict[str, list[bool]] = {}
    for unit in units:
        stored.setdefault(unit.model, []).append(unit.key in rows)
    rep.rows = {m: "run" if all(v) else "partly run" if any(v) else "not run"
                for m, v in stored.items()}
    rep.seconds = sum(r.seconds for r in rows.values())
    rep.devices = sorted({r.device for r in rows.values()})
    rep.code_versions = sorted({r.code_version for r in rows.values()})
    if rows:
        measure = measure_named(spec.measure)
        prof = spec.profile(profile)
        rep.tables = measure.tables(spec, prof, rows)
        rep.figures = FIGURES[spec.measure](measure, spec, prof, rows, out)
        rep.flags = [f for t in rep.tables for f in adaptive_flags(spec, t, profile)]
    return rep


@dataclass(frozen=True)
class Flag:
    """An adaptive column that beats the paper's attack on one model: ``column`` gives
    ``ours`` % where the paper's ``other`` gives ``theirs`` %."""

    spec: str
    model: str
    column: str
    other: str
    ours: float
    theirs: float

    @property
    def text(self) -> str:
        """The flag as one sentence."""
        return (f"{self.spec} {self.model}: {self.column} gives {self.ours:.1f} % where "
                f"{self.other} gives {self.theirs:.1f} % — the paper's attack overstates "
                "robustness (masked gradients or a weak single step; report the adaptive "
                "number).")


def adaptive_flags(spec: Spec, table: Table, profile: str) -> list[Flag]:
    """Adaptive columns that beat the paper's attack (same ε, or same attack when no ε) by
    more than :data:`FLAG_POINTS` points of accuracy on the same model."""
    if table.unit != "%":
        return []
    columns = {c.label: c for c in spec.columns_for(profile)}
    flags = []
    for model, cells in table.rows.items():
        for label in [c for c in table.columns if c in table.adaptive]:  # in column order
            ada = cells.get(label)
            if ada is None or ada.mean is None or columns[label].metric != "accuracy":
                continue
            eps = given(columns[label], "eps")
            for other in table.columns:
                col, cell = columns[other], cells.get(other)
                if other in table.adaptive or cell is None or cell.mean is None \
                        or col.metric != "accuracy":
                    continue
                same = given(col, "eps") == eps if eps is not None \
                    else col.attack == columns[label].attack
                if same and cell.mean - ada.mean > FLAG_POINTS:
                    flags.append(Flag(spec.name, model, label, other, ada.mean, cell.mean))
    return flags


@dataclass(frozen=True)
class Agreement:
    """How a report's numbers compare with the paper's: ``compared`` cells with ours, the
    paper's value and its ±; ``within`` of them inside the ±; the largest gap (model,
    column, ours − paper) over every cell with both values, and its reason (the spec's note
    on that cell, else an open discrepancy). Rows that are variants of a paper row
    (``compare``) are shown beside its values but not counted."""

    compared: int = 0
    within: int = 0
    gap: tuple[str, str, float] | None = None
    reason: str = ""


def agreement(rep: SpecReport) -> Agreement:
    """See :class:`Agreement`."""
    compared = within = 0
    gap: tuple[str, str, float] | None = None
    for table in rep.tables:
        for model, cells in table.rows.items():
            if rep.spec.paper_row(model) != model:
                continue  # a variant of a paper row: shown beside it, not counted as it
            for column, cell in cells.items():
                if cell.diff is None:
                    continue
                if cell.pm is not None:
                    compared += 1
                    within += not cell.outside
                if gap is None or abs(cell.diff) > abs(gap[2]):
                    gap = (model, column, cell.diff)
    reason = ""
    if gap is not None and rep.profile != "paper":
        reason = (f"the {rep.profile} profile is CPU-sized (fewer epochs, a training subset): "
                  "its numbers show the method, not the paper's scale")
    elif gap is not None:
        notes = [r.note for r in rep.spec.reference
                 if (r.model, r.attack) == gap[:2] and r.note]
        reason = notes[0] if notes else "open: no known reason (see the spec's notes)"
    return Agreement(compared, within, gap, reason)


def given(column: Column, name: str):
    """The value of parameter ``name`` when the spec set it for ``column``, else None."""
    return getattr(column.params, name) if name in column.given else None


def cell_text(cell, *, unit: str) -> tuple[str, bool]:
    """``ours ± std / paper ± pm (diff)`` and whether ours lies outside the paper's ±."""
    if cell is None:
        return "—", False
    form = ".1f" if unit == "%" else ".3g"
    ours = "—" if cell.mean is None else f"{cell.mean:{form}}" + (
        f" ± {cell.std:{form}}" if cell.std is not None else "")
    if not cell.complete:
        ours += " (incomplete)"
    if cell.paper is None:
        return ours, False
    paper = f"{cell.paper:g}" + (f" ± {cell.pm:g}" if cell.pm is not None else "")
    diff = f" ({cell.diff:+{form}})" if cell.diff is not None else ""
    return f"{ours} / {paper}{diff}", cell.outside


def _header(rep: SpecReport, *, bold: str = "**") -> str:
    """The profile's settings and what is stored (``bold``: the Markdown around the profile's
    name; empty for HTML)."""
    prof = rep.spec.profile(rep.profile)
    text = (f"profile {bold}{rep.profile}{bold}: {prof.epochs} epoch(s), "
            f"{'all' if prof.train_limit is None else prof.train_limit} training examples, "
            f"{prof.test_points} test points, seeds {', '.join(map(str, prof.seeds))}; "
            f"{rep.stored}/{rep.planned} units stored, {rep.seconds:.0f} s of compute")
    if rep.committed:
        text += (f"; {rep.committed} of them from the committed results "
                 f"({rep.committed_path.name if rep.committed_path else ''}")
        text += (f", {rep.stale} stale: computed by other code or another version of the "
                 "spec, rerun to refresh)" if rep.stale else ", computed by this code)")
    if rep.stored and any(state != "run" for state in rep.rows.values()):
        for state in ("run", "partly run", "not run"):
            labels = [m for m, s in rep.rows.items() if s == state]
            if labels:
                text += f"; rows {state}: {', '.join(labels)}"
    return text


def write_markdown(rep: SpecReport, out: Path) -> Path:
    """``out/<paper>/<name>.md`` (atomically)."""
    lines = [f"# {rep.spec.title}", "", f"Spec `{rep.spec.name}` ({rep.spec.path.name}); "
             + _header(rep) + ".", ""]
    if rep.missing:
        lines += [f"**Not run:** {rep.missing}", ""]
    if rep.spec.notes:
        lines += [rep.spec.notes.strip(), ""]
    for table in rep.tables:
        lines += [f"## {table.title}", "",
                  f"Cells: ours (mean ± std over seeds) / the paper's value ± as printed "
                  f"(difference){', in ' + table.unit if table.unit else ''}. ⚠: ours outside "
                  "the paper's ±. †: adaptive attack (not in the paper).", ""]
        head = ["Model"] + [c + (" †" if c in table.adaptive else "") for c in table.columns]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for model, cells in table.rows.items():
            texts = []
            for column in table.columns:
                text, outside = cell_text(cells.get(column), unit=table.unit)
                texts.append(text + (" ⚠" if outside else ""))
            lines.append("| " + " | ".join([rep.row_label(model), *texts]) + " |")
        lines += [""] + [f"- {n}" for n in table.notes] + ([""] if table.notes else [])
    if rep.flags:
        lines += ["## Flags", ""] + [f"- {f.text}" for f in rep.flags] + [""]
    for fig in rep.figures:
        rel = fig.path.relative_to(out / rep.spec.name.split("/")[0])
        lines += [f"![{fig.caption}]({rel.as_posix()})", "", f"*{fig.caption}*", ""]
    if rep.companion is not None and rep.companion.markdown is not None:
        rel = Path(os.path.relpath(rep.companion.markdown, out / rep.spec.name.split("/")[0]))
        lines += [f"The paper profile's results: [{rel.as_posix()}]({rel.as_posix()}).", ""]
    return atomic_write(out / f"{rep.spec.name}.md", "\n".join(lines))


CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
td.outside{background:#fff0e0} th.adaptive{background:#eef4ff}
#summary td.reason{text-align:left;max-width:32em} table.flags td.flag{color:#a00}
img{max-width:100%;border:1px solid #eee} .flag{color:#a00} .missing{color:#777}
nav a{margin-right:1em} code{background:#f4f4f4;padding:0 3px}
"""


def write_index(reports: list[SpecReport], out: Path, *, profile: str, store: Path) -> Path:
    """One static ``out/index.html``: a summary first (per spec and profile: units, cells
    within the paper's ±, the largest gap and its reason, flags), the run metadata, then per
    spec its tables, a compact table of its flags and its figures — the paper profile's
    committed results beside the profile run."""
    esc = html.escape
    shown = [r for rep in reports for r in (rep, rep.companion) if r is not None]
    versions = sorted({v for r in shown for v in r.code_versions})
    devices = sorted({d for r in shown for d in r.devices})
    total = sum(r.seconds for r in shown)
    libs = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>bnnrobust report ({esc(profile)})</title><style>{CSS}</style></head><body>",
             f"<h1>bnnrobust reproduction report — profile {esc(profile)}</h1>",
             _summary_table(shown),
             "<details id='run'><summary>Run metadata</summary><table id='metadata'><tbody>",
             f"<tr><th>code version</th><td>{esc(', '.join(versions) or '—')}</td></tr>",
             f"<tr><th>libraries</th><td>{esc(libs)}</td></tr>",
             f"<tr><th>device</th><td>{esc(', '.join(devices) or '—')}</td></tr>",
             f"<tr><th>profile</th><td>{esc(profile)}</td></tr>",
             f"<tr><th>compute time (sum over units)</th><td>{total:.0f} s</td></tr>",
             f"<tr><th>results store</th><td><code>{esc(str(store))}</code></td></tr>",
             f"<tr><th>written</th><td>{time.strftime('%Y-%m-%d %H:%M:%S')} on "
             f"{esc(platform.node())}</td></tr>",
             "</tbody></table></details>",
             "<nav>" + " ".join(f"<a href='#{esc(r.spec.name)}'>{esc(r.spec.name)}</a>"
                               for r in reports) + "</nav>"]
    for rep in reports:
        parts.append(f"<section id='{esc(rep.spec.name)}'><h2>{esc(rep.spec.title)}</h2>")
        if rep.spec.notes:
            parts.append("<details class='notes'><summary>What this spec computes, "
                         "and where it departs from the paper</summary>"
                         f"<p>{esc(' '.join(rep.spec.notes.split()))}</p></details>")
        for part in (rep.companion, rep):
            if part is not None:
                parts.append(_profile_section(part, out))
        parts.append("</section>")
    parts.append("</body></html>")
    return atomic_write(out / "index.html", "\n".join(parts))


def _summary_table(reports: list[SpecReport]) -> str:
    """The report's first table: one row per spec and profile."""
    esc = html.escape
    rows = []
    for rep in reports:
        agree = agreement(rep)
        within = f"{agree.within}/{agree.compared}" if agree.compared else "—"
        gap = (f"{agree.gap[0]}, {agree.gap[1]}: {agree.gap[2]:+.1f}" if agree.gap else "—")
        css = "outside" if agree.compared and agree.within < agree.compared else ""
        flags = str(len(rep.flags)) if rep.flags else "—"
        units = f"{rep.stored}/{rep.planned}" + (f" ({rep.stale} stale)" if rep.stale else "")
        rows.append(f"<tr><td><a href='#{esc(rep.spec.name)}'>{esc(rep.spec.name)}</a></td>"
                    f"<td>{esc(rep.profile)}</td><td>{esc(units)}</td>"
                    f"<td class='{css}'>{esc(within)}</td><td>{esc(gap)}</td>"
                    f"<td class='reason'>{esc(agree.reason)}</td>"
                    f"<td class='{'flag' if rep.flags else ''}'>{esc(flags)}</td></tr>")
    return ("<table id='summary'><caption>At a glance: cells within the paper's printed ±, the "
            "largest difference from the paper (ours − paper, in the table's unit) and its "
            "reason, and the flags (an adaptive attack beating the paper's by more than "
            f"{FLAG_POINTS:g} points)</caption><thead><tr><th>spec</th><th>profile</th>"
            "<th>units</th><th>within ±</th><th>largest gap</th><th>reason</th><th>flags</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _profile_section(rep: SpecReport, out: Path) -> str:
    """One profile's results of a spec: header, tables, flags, figures."""
    esc = html.escape
    title = "paper profile — committed results" if rep.committed else f"profile {rep.profile}"
    md = os.path.relpath(rep.markdown, out) if rep.markdown is not None else ""
    parts = [f"<h3>{esc(title)}</h3>",
             f"<p>Spec <code>{esc(rep.spec.name)}</code>; {esc(_header(rep, bold=''))}. "
             f"<a href='{esc(Path(md).as_posix())}'>Markdown</a></p>"]
    if rep.missing and not rep.stored:
        parts.append(f"<p class='missing'>Not run: {esc(rep.missing)}</p>")
    parts += [_html_table(table, rep) for table in rep.tables]
    if rep.flags:
        parts.append(_flag_table(rep.flags))
    for fig in rep.figures:
        rel = fig.path.relative_to(out).as_posix()
        parts.append(f"<figure><img src='{esc(rel)}' alt='{esc(fig.caption)}'>"
                     f"<figcaption>{esc(fig.caption)}</figcaption></figure>")
    return "\n".join(parts)


def _flag_table(flags: list[Flag]) -> str:
    """Flags as one model × adaptive-column table: each cell the accuracy the adaptive attack
    takes off the paper's attack, the sentence on hover and in the list below."""
    esc = html.escape
    models = list(dict.fromkeys(f.model for f in flags))
    columns = list(dict.fromkeys(f.column for f in flags))
    cells = {}
    for f in flags:
        cells.setdefault((f.model, f.column), []).append(f)
    body = []
    for model in models:
        tds = []
        for column in columns:
            found = cells.get((model, column), [])
            text = "; ".join(f"−{f.theirs - f.ours:.1f} vs {f.other}" for f in found)
            title = " ".join(f.text for f in found)
            tds.append(f"<td class='flag' title='{esc(title)}'>{esc(text)}</td>" if found
                       else "<td></td>")
        body.append(f"<tr><td>{esc(model)}</td>{''.join(tds)}</tr>")
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    items = "".join(f"<li>{esc(f.text)}</li>" for f in flags)
    return ("<table class='flags'><caption>Flags: points of accuracy an adaptive attack takes "
            "off the paper's attack at the same ε (hover for the evidence)</caption>"
            f"<thead><tr><th>Model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"</table><details class='flag-list'><summary>The flags in words</summary><ul>"
            f"{items}</ul></details>")


def _html_table(table: Table, rep: SpecReport) -> str:
    """The table as the page shows it: the rows run (fully or partly) in the table, the rows
    not run (only the paper's values) folded below it, so that a slice of a large table
    reads at a glance."""
    esc = html.escape
    head = "".join(f"<th class='{'adaptive' if c in table.adaptive else ''}'>{esc(c)}"
                   f"{' †' if c in table.adaptive else ''}</th>" for c in table.columns)
    idle = [m for m in table.rows if rep.rows.get(m) == "not run"]
    ran = [m for m in table.rows if m not in idle]
    shown, folded = (ran, idle) if ran else (idle, [])
    thead = f"<thead><tr><th>Model</th>{head}</tr></thead>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in table.notes)
    page = (f"<table class='results'><caption>{esc(table.title)} — ours / paper (difference)"
            f"{', ' + esc(table.unit) if table.unit else ''}; ⚠ outside the paper's ±; "
            f"† adaptive attack</caption>{thead}<tbody>{_html_rows(table, rep, shown)}"
            "</tbody></table>")
    if folded:
        page += (f"<details class='not-run'><summary>{len(folded)} row(s) not run: the paper's "
                 f"values</summary><table class='results'>{thead}<tbody>"
                 f"{_html_rows(table, rep, folded)}</tbody></table></details>")
    return page + (f"<ul class='table-notes'>{notes}</ul>" if notes else "")


def _html_rows(table: Table, rep: SpecReport, models: list[str]) -> str:
    esc = html.escape
    body = []
    for model in models:
        tds = []
        for column in table.columns:
            text, outside = cell_text(table.rows[model].get(column), unit=table.unit)
            tds.append(f"<td class='{'outside' if outside else ''}'>{esc(text)}"
                       f"{' ⚠' if outside else ''}</td>")
        body.append(f"<tr><td>{esc(rep.row_label(model))}</td>{''.join(tds)}</tr>")
    return "".join(body)


def report(specs: list[Spec], *, profile: str, store: ResultStore, out: Path,
           data_root: str | None = None, results: Path | None = None
           ) -> tuple[Path, list[SpecReport]]:
    """Write every spec's Markdown and figures and the index; returns the index path.
    ``results``: the committed results folder, read for units the store lacks."""
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for spec in specs:
        rep = collect(spec, profile=profile, store=store, out=out, data_root=data_root,
                      results=results)
        if profile != "paper":
            paper = collect(spec, profile="paper", store=store, out=out / "paper",
                            data_root=data_root, results=results)
            if paper.stored:
                paper.markdown = write_markdown(paper, out / "paper")
                rep.companion = paper
        rep.markdown = write_markdown(rep, out)
        reports.append(rep)
    index = write_index(reports, out, profile=profile, store=store.path)
    atomic_write(out / "report.json", json.dumps(
        {r.spec.name: {**_as_json(r), "paper": _as_json(r.companion) if r.companion else None}
         for r in reports}, indent=1))
    return index, reports


def _as_json(rep: SpecReport) -> dict:
    agree = agreement(rep)
    return {"profile": rep.profile, "planned": rep.planned, "stored": rep.stored,
            "committed": rep.committed, "stale": rep.stale, "seconds": rep.seconds,
            "missing": rep.missing, "flags": [f.text for f in rep.flags],
            "within": agree.within, "compared": agree.compared,
            "largest_gap": list(agree.gap) if agree.gap else None, "reason": agree.reason,
            "tables": [t.as_dict() for t in rep.tables]}
