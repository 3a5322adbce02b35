"""The figures of each measure's report: what to draw from its tables and stored units.

One function per measure (:data:`FIGURES`); each returns the PNGs it wrote under ``out``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bnnrobust.experiments.measures import Measure
from bnnrobust.experiments.measures.exact import normalized_objective
from bnnrobust.experiments.spec import Profile, Spec
from bnnrobust.experiments.store import StoredRow
from bnnrobust.report.plots import (
    Figure,
    bars,
    boxes,
    curves,
    figure_path,
    heatmaps,
    lines_by_parameter,
    measured,
    panels_of_lines,
    traces,
)

Rows = dict[str, StoredRow]


def accuracy(measure: Measure, spec: Spec, profile: Profile, rows: Rows, out: Path) -> list[Figure]:
    """Grouped bars, or lines against a column parameter with ``[figure] kind = "lines"``."""
    (table,) = measure.tables(spec, profile, rows)
    if spec.figure.kind == "lines":
        return [lines_by_parameter(spec, table, out, spec.columns_for(profile.name))]
    return [bars(table, figure_path(out, spec.name))]


def activation_norm(measure: Measure, spec: Spec, profile: Profile, rows: Rows,
                    out: Path) -> list[Figure]:
    """One box plot per model of the first seed's per-input norms, each on its own scale (a
    BNN's ±1 weights give norms tens of times a full-precision network's; the figure compares
    each network's attacked range with its clean one)."""
    groups: dict[str, dict[str, list[float]]] = {}
    for row in measure.first_seed_rows(spec, profile, rows):
        groups.setdefault(row.unit.model, {}).setdefault(row.unit.attack, []).extend(
            row.value["norms"])
    if not groups:
        return []
    return [boxes(spec, groups, out, ylabel="mean |first-layer pre-activation|",
                  caption=f"First hidden layer: L1 norm / units per input, clean and "
                          f"attacked (seed {profile.seeds[0]}); whiskers at min and max; each "
                          f"panel on its own scale.", share_y=False)]


def blackbox(measure: Measure, spec: Spec, profile: Profile, rows: Rows, out: Path) -> list[Figure]:
    """Grouped bars of the transferred accuracies."""
    (table,) = measure.tables(spec, profile, rows)
    return [bars(table, figure_path(out, spec.name))]


def cw_curve(measure: Measure, spec: Spec, profile: Profile, rows: Rows, out: Path) -> list[Figure]:
    """Accuracy against CW-L2 iterations, one line per model (and column)."""
    (table,) = measure.tables(spec, profile, rows)
    series = {}
    columns = spec.columns_for(profile.name)
    for column in columns:
        for model, cells in measured(table).items():
            series[f"{model} ({column.label})" if len(columns) > 1 else model] = [
                (it, cells.get(f"{column.label} @{it}")) for it in column.options.iterations]
    return [curves(spec, table.title, series, out, xlabel="CW-L2 iterations",
                   ylabel="accuracy (%)", log_x=True)]


def exact(measure: Measure, spec: Spec, profile: Profile, rows: Rows, out: Path) -> list[Figure]:
    """Flip-rate bars, box plots of the normalized objective (Khalil Figure 3) and the mean
    normalized incumbent objective over time (Figure 4)."""
    flips = measure.tables(spec, profile, rows)[0]
    figures = [bars(flips, figure_path(out, spec.name))]
    series: dict[str, list] = {}
    groups: dict[str, dict[str, list[float]]] = {}
    for row in rows.values():
        for p in row.value["points"]:
            if "clean_objective" not in p:
                continue
            series.setdefault(f"{row.unit.model} {row.unit.attack}", []).append(
                [(t, normalized_objective(p, v)) for t, v in p["trace"]])
            groups.setdefault(row.unit.model, {}).setdefault(row.unit.attack, []).append(
                normalized_objective(p))
    if groups:
        figures.append(boxes(spec, groups, out, ylabel="normalized objective", suffix="-boxes",
                             caption="Normalized objective (f_t − f_p) / |f_t − f_p at x| per "
                                     "point, per model and attack (> 0: a flip); whiskers at "
                                     "min and max."))
    if series:
        figures.append(traces(spec, series, out, horizon=profile.time_limit))
    return figures


def logit_sweep(measure: Measure, spec: Spec, profile: Profile, rows: Rows,
                out: Path) -> list[Figure]:
    """The ten logits against ε, one panel per model and column (first seed)."""
    panels = {}
    for row in measure.first_seed_rows(spec, profile, rows):
        v = row.value
        logits = list(zip(*v["logits"], strict=True))
        panels[(row.unit.model, row.unit.attack)] = {
            f"class {k}": list(zip(v["eps"], logits[k], strict=True))
            for k in range(len(logits))}
    caption = (f"Logits of one test digit along the FGSM direction (seed {profile.seeds[0]}), "
               "per model and softmax temperature.")
    return [panels_of_lines(spec, panels, out, xlabel="FGSM ε", ylabel="logit",
                            caption=caption)] if panels else []


def toy_surface(measure: Measure, spec: Spec, profile: Profile, rows: Rows,
                out: Path) -> list[Figure]:
    """Heat maps of the output and its forward derivative, one row per model (first seed)."""
    panels = []
    for row in measure.first_seed_rows(spec, profile, rows):
        v = row.value
        name = row.unit.model if len(spec.columns_for(profile.name)) == 1 \
            else f"{row.unit.model} ({row.unit.attack})"
        panels.append((name, v["range"], [("F (decision surface)", v["surface"]),
                                          ("∂F/∂x2 (forward derivative)", v["derivative"])]))
    caption = (f"Output F and forward derivative ∂F/∂x2 per model (seed {profile.seeds[0]}), "
               "as heat maps; the paper draws them as 3-D surfaces.")
    return [heatmaps(spec, panels, out, xlabel="x1", ylabel="x2",
                     caption=caption)] if panels else []


def input_sweep(measure: Measure, spec: Spec, profile: Profile, rows: Rows,
                out: Path) -> list[Figure]:
    """The two outputs along the sweep, true BNN and approximate BNN, per model (first seed)."""
    panels = {}
    for row in measure.first_seed_rows(spec, profile, rows):
        v = row.value
        for network in ("bnn", "approximate"):
            panels[(row.unit.model, "BNN" if network == "bnn" else "approximate BNN")] = {
                f"class {c}": list(zip(v["values"], [o[k] for o in v[network]], strict=True))
                for k, c in enumerate(v["classes"])}
    caption = (f"Output-layer values of the two top classes as one input dimension of one test "
               f"image varies (seed {profile.seeds[0]}): the BNN (left) and its approximate BNN "
               "(right), which the FGSM baseline differentiates.")
    return [panels_of_lines(spec, panels, out, xlabel="input value", ylabel="output",
                            caption=caption)] if panels else []


#: measure name -> its figures
FIGURES: dict[str, Callable[[Measure, Spec, Profile, Rows, Path], list[Figure]]] = {
    "accuracy": accuracy, "activation_norm": activation_norm, "blackbox": blackbox,
    "cw_curve": cw_curve, "exact": exact, "logit_sweep": logit_sweep,
    "toy_surface": toy_surface, "input_sweep": input_sweep,
}
