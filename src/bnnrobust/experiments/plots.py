"""Report figures (matplotlib, Agg backend, PNG): ours beside the paper's values.

- :func:`bars`: one group per attack column, one bar per model (mean over seeds, std as an
  error bar), the paper's value as a black tick on the bar.
- :func:`lines_by_parameter`: a table's values against a column parameter (e.g. ``eps``),
  one line per model, one panel per attack, the paper's values as open markers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bnnrobust.experiments.measures.base import Figure, Table  # noqa: E402


def figure_path(out: Path, spec_name: str, suffix: str = "") -> Path:
    """``out/<paper>/<name><suffix>.png`` (folders created)."""
    path = out / f"{spec_name}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically and close it."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    tmp.replace(path)


def bars(table: Table, path: Path, *, ylabel: str | None = None) -> Figure:
    """Grouped bars of ``table`` (see the module docstring)."""
    models = list(table.rows)
    columns = table.columns
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) * max(1, len(models)) * 0.35),
                                    3.6))
    for i, model in enumerate(models):
        xs, ys, errs, px, py = [], [], [], [], []
        for j, column in enumerate(columns):
            cell = table.rows[model].get(column)
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


def lines_by_parameter(spec, table: Table, out: Path) -> Figure:
    """Values against the column parameter ``spec.figure['x']`` (see the module docstring)."""
    x_name = spec.figure.get("x", "eps")
    by_attack: dict[str, list] = {}
    for column in spec.columns:
        if x_name in column.params:
            by_attack.setdefault(column.attack, []).append(column)
    fig, axes = plt.subplots(1, max(1, len(by_attack)), figsize=(5 * max(1, len(by_attack)), 3.6),
                             squeeze=False)
    for ax, (attack, columns) in zip(axes[0], sorted(by_attack.items()), strict=False):
        columns = sorted(columns, key=lambda c: c.params[x_name])
        for model, cells in table.rows.items():
            points = [(c.params[x_name], cells.get(c.label)) for c in columns]
            ours = [(x, cell.mean) for x, cell in points if cell and cell.mean is not None]
            paper = [(x, cell.paper) for x, cell in points if cell and cell.paper is not None]
            line = None
            if ours:
                (line,) = ax.plot(*zip(*ours, strict=True), marker="o", label=model)
            if paper:
                ax.plot(*zip(*paper, strict=True), marker="o", linestyle="--", fillstyle="none",
                        color=line.get_color() if line else None, label=f"{model} (paper)")
        ax.set_xlabel(spec.figure.get("xlabel", x_name))
        ax.set_ylabel(spec.figure.get("ylabel", table.unit))
        if spec.figure.get("log_x"):
            ax.set_xscale("log")
        ax.set_title(attack, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(table.title, fontsize=9)
    path = figure_path(out, spec.name)
    save(fig, path)
    return Figure(path, f"{table.title}: ours (solid) and the paper's values (dashed, open).")
