"""Report figures (matplotlib, Agg backend, PNG): ours beside the paper's values.

- :func:`bars`: one group per attack column, one bar per model (mean over seeds, std as an
  error bar), the paper's value as a black tick on the bar.
- :func:`lines_by_parameter`: a table's values against a column parameter (e.g. ``eps``),
  one line per model, one panel per attack, the paper's values as open markers.
- :func:`heatmaps`: a grid of heat maps, one row per model (Galloway's toy surfaces).
- :func:`panels_of_lines`: a grid of line panels, one per (row, column) key (logits against
  ε per model and temperature).
- :func:`boxes`: box plots of per-input values per group (Panda's activation norms).
- :func:`traces`: mean incumbent objective over time (Khalil Figure 4).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bnnrobust.experiments.measures import Cell, Table  # noqa: E402
from bnnrobust.files import atomic_path  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """A PNG the report wrote, with its caption."""

    path: Path
    caption: str


def figure_path(out: Path, spec_name: str, suffix: str = "") -> Path:
    """``out/<paper>/<name><suffix>.png`` (folders created)."""
    path = out / f"{spec_name}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)


def measured(table: Table) -> dict[str, dict[str, Cell]]:
    """The rows of ``table`` holding at least one value of ours (all of them when none does):
    a slice of a large paper table plots the rows it ran, not the paper's alone."""
    ours = {m: cells for m, cells in table.rows.items()
            if any(c.mean is not None for c in cells.values())}
    return ours or table.rows


def bars(table: Table, path: Path, *, ylabel: str | None = None) -> Figure:
    """Grouped bars of the measured rows of ``table`` (see the module docstring)."""
    rows = measured(table)
    models = list(rows)
    columns = table.columns
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) * max(1, len(models)) * 0.35),
                                    3.6))
    for i, model in enumerate(models):
        xs, ys, errs, px, py = [], [], [], [], []
        for j, column in enumerate(columns):
            cell = rows[model].get(column)
            x = j - 0.4 + width * (i + 0.5)
            if cell is not None and cell.mean is not None:
                xs.append(x)
                ys.append(cell.mean)
                errs.append(cell.std or 0.0)
            if cell is not None and cell.paper is not None:
                px.append(x)
                py.append(cell.paper)
        ax.bar(xs, ys, width=width * 0.95, yerr=errs, label=model, capsize=2)
        if px:
            ax.scatter(px, py, marker="_", s=120, color="black", zorder=3,
                       label="paper" if i == 0 else None)
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel or table.unit)
    ax.set_title(table.title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(4, len(models) + 1))
    save(fig, path)
    return Figure(path, f"{table.title}: ours (bars, ± std over seeds) and the paper's values "
                        "(black ticks).")


def _plot_series(ax, series: dict[str, list]) -> None:
    """One solid line per series (ours, mean over seeds) and dashed open markers (paper)."""
    for name, points in series.items():
        ours = [(x, cell.mean) for x, cell in points if cell and cell.mean is not None]
        paper = [(x, cell.paper) for x, cell in points if cell and cell.paper is not None]
        line = None
        if ours:
            (line,) = ax.plot(*zip(*ours, strict=True), marker="o", label=name)
        if paper:
            ax.plot(*zip(*paper, strict=True), marker="o", linestyle="--", fillstyle="none",
                    color=line.get_color() if line else None, label=f"{name} (paper)")
    ax.legend(fontsize=7)


def curves(spec, title: str, series: dict[str, list], out: Path, *, xlabel: str, ylabel: str,
           log_x: bool = False, suffix: str = "") -> Figure:
    """One panel of ``series`` (name -> [(x, Cell)]): ours solid, the paper's dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    _plot_series(ax, series)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    path = figure_path(out, spec.name, suffix)
    save(fig, path)
    return Figure(path, f"{title}: ours (solid, mean over seeds) and the paper's values "
                        "(dashed, open markers).")


def lines_by_parameter(spec, table: Table, out: Path, columns) -> Figure:
    """Values of the measured rows against the column parameter ``spec.figure.x`` (see the
    module docstring)."""
    x_name = spec.figure.x
    by_attack: dict[str, list] = {}
    for column in columns:
        if x_name in column.given:
            by_attack.setdefault(column.attack, []).append(column)
    fig, axes = plt.subplots(1, max(1, len(by_attack)), figsize=(5 * max(1, len(by_attack)), 3.6),
                             squeeze=False)
    for ax, (attack, columns) in zip(axes[0], sorted(by_attack.items()), strict=False):
        columns = sorted(columns, key=lambda c: getattr(c.params, x_name))
        _plot_series(ax, {model: [(getattr(c.params, x_name), cells.get(c.label))
                                  for c in columns]
                          for model, cells in measured(table).items()})
        ax.set_xlabel(spec.figure.xlabel or x_name)
        ax.set_ylabel(spec.figure.ylabel or table.unit)
        if spec.figure.log_x:
            ax.set_xscale("log")
        ax.set_title(attack, fontsize=9)
    fig.suptitle(table.title, fontsize=9)
    path = figure_path(out, spec.name)
    save(fig, path)
    return Figure(path, f"{table.title}: ours (solid) and the paper's values (dashed, open).")


def traces(spec, series: dict[str, list], out: Path, *, horizon: float) -> Figure:
    """Mean incumbent objective over time (Khalil Figure 4): each series is a list of per-point
    traces ``[(seconds, objective), ...]`` (the caller normalizes them); a point counts from
    its first incumbent on."""
    import numpy as np

    grid = np.linspace(0, horizon, 200)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, point_traces in sorted(series.items()):
        curves = []
        for trace in point_traces:
            if not trace:
                continue
            t, v = np.array(trace, dtype=float).T
            idx = np.searchsorted(t, grid, side="right") - 1
            curves.append(np.where(idx >= 0, v[np.clip(idx, 0, None)], np.nan))
        if curves:
            with warnings.catch_warnings():  # before any point's first incumbent: all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                ax.plot(grid, np.nanmean(np.array(curves), axis=0), label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel("mean normalized incumbent objective")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    ax.set_title(f"{spec.title}: objective over time", fontsize=9)
    path = figure_path(out, spec.name, "-traces")
    save(fig, path)
    return Figure(path, "Mean normalized incumbent objective over time per model and attack "
                        "(the objective over the point's starting gap; > 0 flips the point).")


def heatmaps(spec, rows: list, out: Path, *, xlabel: str, ylabel: str, caption: str) -> Figure:
    """One row of heat maps per entry of ``rows``: ``(name, [low, high], [(title, 2-D values
    with rows along the y axis)])``."""
    ncols = max(len(panels) for _, _, panels in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4.2 * ncols, 3.4 * len(rows)),
                             squeeze=False)
    for ax_row, (name, (low, high), panels) in zip(axes, rows, strict=True):
        for ax, (title, values) in zip(ax_row, panels, strict=False):
            image = ax.imshow(values, origin="lower", extent=(low, high, low, high),
                              aspect="auto", cmap="viridis")
            fig.colorbar(image, ax=ax, fraction=0.046)
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    fig.suptitle(spec.title, fontsize=9)
    fig.tight_layout()
    path = figure_path(out, spec.name)
    save(fig, path)
    return Figure(path, caption)


def panels_of_lines(spec, panels: dict[tuple[str, str], dict[str, list]], out: Path, *,
                    xlabel: str, ylabel: str, caption: str) -> Figure:
    """A grid of panels keyed ``(row, column)``; each panel maps a line name to its
    ``[(x, y), ...]`` points."""
    row_keys = list(dict.fromkeys(r for r, _ in panels))
    col_keys = list(dict.fromkeys(c for _, c in panels))
    fig, axes = plt.subplots(len(row_keys), len(col_keys),
                             figsize=(3.6 * len(col_keys), 3.0 * len(row_keys)),
                             squeeze=False, sharex=True)
    for (r, c), lines in panels.items():
        ax = axes[row_keys.index(r)][col_keys.index(c)]
        for name, points in lines.items():
            ax.plot(*zip(*points, strict=True), label=name, linewidth=1)
        ax.set_title(f"{r}, {c}", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.suptitle(spec.title, fontsize=9)
    fig.tight_layout()
    path = figure_path(out, spec.name)
    save(fig, path)
    return Figure(path, caption)


def boxes(spec, groups: dict[str, dict[str, list[float]]], out: Path, *, ylabel: str,
          caption: str, suffix: str = "", share_y: bool = True) -> Figure:
    """One panel per group (e.g. model), one box per entry (e.g. ε) of per-input values;
    ``share_y=False`` gives each panel its own scale (groups of different magnitudes)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.4), squeeze=False,
                             sharey=share_y)
    for ax, (group, entries) in zip(axes[0], groups.items(), strict=True):
        ax.boxplot(list(entries.values()), whis=(0, 100))
        ax.set_xticks(range(1, len(entries) + 1), list(entries), fontsize=7, rotation=20)
        ax.set_title(group, fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(spec.title, fontsize=9)
    fig.tight_layout()
    path = figure_path(out, spec.name, suffix)
    save(fig, path)
    return Figure(path, caption)
