"""The reproduction commands of the ``bnnrobust`` CLI: ``reproduce`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bnnrobust.errors import BnnRobustError

out = Console()
err = Console(stderr=True)

ProfileOpt = Annotated[str, typer.Option(
    "--profile", help="quick (CPU-sized: fewer epochs, a training subset, a test subset, one "
                      "seed, the smallest widths) or paper (the paper's settings).")]
StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="Results store (SQLite); default $BNNROBUST_CACHE/results.sqlite or "
                    "~/.cache/bnnrobust/results.sqlite.")]
OutOpt = Annotated[Path, typer.Option(
    "--out", help="Report folder: index.html, one Markdown file and PNGs per spec.")]
SpecsArg = Annotated[list[str] | None, typer.Argument(
    help="Specs by name (galloway2018/table1), by paper folder (galloway2018 = all of its "
         "specs) or as .toml paths. Default for report: every spec.", show_default=False)]


def _specs(names: list[str] | None, *, default_all: bool):
    from bnnrobust.experiments.runner import default_specs_root, resolve_specs, spec_files
    from bnnrobust.experiments.spec import load

    root = default_specs_root()
    if not root.is_dir():
        raise BnnRobustError(f"the specs folder {root} does not exist; run from a checkout of "
                             "bnnrobust or set BNNROBUST_EXPERIMENTS to its experiments/ folder.")
    if not names:
        if not default_all:
            raise BnnRobustError("name at least one spec (see 'bnnrobust reproduce --list').")
        paths = spec_files(root)
    else:
        paths = resolve_specs(names, root)
    return [load(p) for p in paths]


def _check_profile(profile: str) -> None:
    from bnnrobust.experiments.spec import PROFILES

    if profile not in PROFILES:
        raise BnnRobustError(f"--profile must be one of {', '.join(PROFILES)}, got {profile!r}.")


def reproduce(
    specs: SpecsArg = None,
    profile: ProfileOpt = "quick",
    executor: Annotated[str, typer.Option(
        "--executor", help="local (processes on this machine) or ray.")] = "local",
    workers: Annotated[int, typer.Option(
        help="Units computed in parallel (local: worker processes; ray: CPUs of a local "
             "instance).")] = 1,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address; default: a local Ray instance.")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="auto (CUDA if present, else CPU), cpu or cuda.")] = "auto",
    store: StoreOpt = None,
    list_specs: Annotated[bool, typer.Option(
        "--list", help="List the specs (name, dataset, measure, whether the data is here, "
                       "units per profile) and exit.")] = False,
    report_out: Annotated[Path | None, typer.Option(
        "--report", help="After the run, write the report of these specs to this folder.")] = None,
) -> None:
    """Reproduce tables and figures of the papers: train (or take from the checkpoint cache)
    the spec's models, run its attacks, store every unit in the results store. A rerun (also
    after a kill) computes only the units not stored yet."""
    from bnnrobust.device import resolve_device
    from bnnrobust.experiments import make_executor
    from bnnrobust.experiments.report import report
    from bnnrobust.experiments.runner import missing_data, plan, reproduce, summary_line
    from bnnrobust.experiments.store import ResultStore

    _check_profile(profile)
    if list_specs:
        table = Table("spec", "title", "dataset", "measure", "data", "units quick",
                      "units paper")
        for spec in _specs(specs, default_all=True):
            missing = missing_data(spec)
            table.add_row(spec.name, spec.title[:60], spec.dataset, spec.measure,
                          "missing" if missing else "here", str(len(plan(spec, "quick"))),
                          str(len(plan(spec, "paper"))))
        out.print(table)
        return
    loaded = _specs(specs, default_all=False)
    dev = str(resolve_device(device))
    pool = make_executor(executor, workers=workers, address=address)
    interrupted = False
    with ResultStore(store) as results:
        for spec in loaded:
            summary = reproduce(spec, profile=profile, store=results, executor=pool, device=dev,
                                console=err)
            out.print(summary_line(summary), highlight=False)
            if summary.interrupted:
                interrupted = True
                break
        if report_out is not None:
            index, _ = report(loaded, profile=profile, store=results, out=report_out)
            out.print(f"report: {index.resolve()}", highlight=False)
    if interrupted:
        raise typer.Exit(130)


def report_command(
    specs: SpecsArg = None,
    profile: ProfileOpt = "quick",
    store: StoreOpt = None,
    out_dir: OutOpt = Path("report"),
) -> None:
    """Write the report of stored results: per spec a Markdown table of ours beside the
    paper's values (mean ± std over seeds, the difference, ⚠ where ours falls outside the
    paper's ±), PNG figures, and one index.html with all of it and the run metadata."""
    from bnnrobust.experiments.report import report
    from bnnrobust.experiments.store import ResultStore

    _check_profile(profile)
    loaded = _specs(specs, default_all=True)
    with ResultStore(store) as results:
        index, reports = report(loaded, profile=profile, store=results, out=out_dir)
    for rep in reports:
        state = "not run: " + rep.missing if rep.missing and not rep.stored else \
            f"{rep.stored}/{rep.planned} units"
        out.print(f"{rep.spec.name}: {state}", highlight=False)
    out.print(f"report: {index.resolve()}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("reproduce")(reproduce)
    app.command("report")(report_command)
