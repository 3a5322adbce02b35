"""The reproduction commands: ``reproduce`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bnnrobust.cli.options import (
    AddressOpt,
    DeviceOpt,
    ExecutorOpt,
    StoreOpt,
    WorkersOpt,
    check_output_dir,
    check_output_file,
    err,
    out,
    stop_on_sigterm,
)
from bnnrobust.device import resolve_device
from bnnrobust.errors import BnnRobustError
from bnnrobust.experiments import check_executor, make_executor
from bnnrobust.experiments.estimate import estimate, format_seconds
from bnnrobust.experiments.parse import load
from bnnrobust.experiments.results import default_results_root
from bnnrobust.experiments.runner import (
    default_specs_root,
    missing_data,
    plan,
    reproduce,
    resolve_specs,
    spec_files,
    summary_line,
)
from bnnrobust.experiments.spec import PROFILES, Spec
from bnnrobust.experiments.store import ResultStore
from bnnrobust.report import report

ProfileOpt = Annotated[str, typer.Option(
    "--profile", help="quick (CPU-sized: fewer epochs, a training subset, a test subset, one "
                      "seed, the smallest widths) or paper (the paper's settings).")]
ResultsOpt = Annotated[Path | None, typer.Option(
    "--results", help="The committed results folder (default: results/ of the checkout, or "
                      "$BNNROBUST_RESULTS). A paper-profile run imports the rows it plans from "
                      "there and exports the spec's rows there afterwards; the report reads "
                      "them for the units the store lacks.", show_default=False)]
SpecsArg = Annotated[list[str] | None, typer.Argument(
    help="Specs by name (galloway2018/table1), by paper folder (galloway2018 = all of its "
         "specs) or as .toml paths. Default for report: every spec.", show_default=False)]


def _specs(names: list[str] | None, *, default_all: bool) -> list[Spec]:
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
    if profile not in PROFILES:
        raise BnnRobustError(f"--profile must be one of {', '.join(PROFILES)}, got {profile!r}.")


def _print_estimates(specs: list[Spec], *, profile: str, store: ResultStore,
                     device: str, results: Path, checkpoints: Path | None) -> None:
    """One table per spec and the total (see :mod:`bnnrobust.experiments.estimate`)."""
    total, bound = 0.0, False
    for spec in specs:
        missing = missing_data(spec)
        est = estimate(spec, profile, store=store, device=device, results=results,
                       cache_dir=None if checkpoints is None else str(checkpoints))
        table = Table(title=f"{spec.name} [{profile}] on {device}: "
                            f"{'≤ ' if est.bound else ''}{format_seconds(est.seconds)}",
                      title_justify="left")
        for name in ("work", "row / column", "count", "expected", "basis"):
            table.add_column(name, no_wrap=name != "basis")
        for line in est.lines:
            table.add_row(line.kind, line.label, str(line.count),
                          ("≤ " if line.bound else "") + format_seconds(line.seconds),
                          line.basis)
        out.print(table)
        out.print(f"{spec.name}: {est.stored} unit(s) already stored or committed, "
                  f"{est.cached} model(s) "
                  f"in the checkpoint cache; calibration took {est.calibration_seconds:.0f} s"
                  + (f"; the data is not here ({missing}), so random inputs were timed"
                     if missing else ""), highlight=False)
        if est.busy:
            out.print(f"warning: the machine was busy when the calibration began (load "
                      f"{est.load:.1f} per CPU over the last minute): other work slows its "
                      "timings, small models far more than their share, so this estimate is "
                      "too high; run --estimate again when the machine is idle.",
                      highlight=False)
        total += est.seconds
        bound = bound or est.bound
    out.print(f"total: {'≤ ' if bound else ''}{format_seconds(total)} ({total:.0f} s) on "
              f"{device}", highlight=False)


def _grid(values: list[str]) -> dict[str, list[str]]:
    """``["K=64,128"]`` as ``{"K": ["64", "128"]}``; a malformed one is a clear error."""
    out: dict[str, list[str]] = {}
    for text in values:
        var, sep, rest = text.partition("=")
        items = [v.strip() for v in rest.split(",") if v.strip()]
        if not sep or not var.strip() or not items:
            raise BnnRobustError(f"--grid {text!r}: expected VAR=VALUE[,VALUE...], e.g. "
                                 "--grid K=64.")
        out.setdefault(var.strip(), []).extend(items)
    return out


def reproduce_command(
    specs: SpecsArg = None,
    profile: ProfileOpt = "quick",
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = 1,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    store: StoreOpt = None,
    list_specs: Annotated[bool, typer.Option(
        "--list", help="List the specs (name, dataset, measure, whether the data is here, "
                       "units per profile) and exit.")] = False,
    report_out: Annotated[Path | None, typer.Option(
        "--report", help="After the run, write the report of these specs to this folder.")] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only this model row of each spec (its label, e.g. B64); repeat "
                       "for several. The report marks the rows that were run.",
        show_default=False)] = None,
    column: Annotated[list[str] | None, typer.Option(
        "--column", help="Run only this attack column of each spec (its label as the "
                         "report prints it, e.g. 'FGSM ε=0.1'); repeat for several.",
        show_default=False)] = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="Run only these values of a sweep variable of the profile, as "
                       "VAR=V1,V2 (e.g. K=64); repeat for several variables.",
        show_default=False)] = None,
    results: ResultsOpt = None,
    checkpoints: Annotated[Path | None, typer.Option(
        "--checkpoints", help="Folder of the trained models and of the training states "
                              "saved between epochs, at most every 30 s (default: the "
                              "checkpoint cache, $BNNROBUST_CACHE/checkpoints). A killed run "
                              "resumes from its last saved epoch.",
        show_default=False)] = None,
    estimate_only: Annotated[bool, typer.Option(
        "--estimate", help="Compute nothing: print what the run would cost on this machine "
                           "(training per model row, attacks per column, the total), from "
                           "a calibration of a few batches and attack steps timed now. "
                           "Models in the checkpoint cache and units in the store cost "
                           "nothing.")] = False,
) -> None:
    """Reproduce tables and figures of the papers: train (or take from the checkpoint cache)
    the spec's models, run its attacks, store every unit in the results store. A rerun (also
    after a kill) computes only the units not stored yet, and recomputes those whose code
    changed. Ctrl-C or SIGTERM stops at once, keeping (and exporting) every finished unit."""
    _check_profile(profile)
    if list_specs:
        table = Table()
        table.add_column("spec", no_wrap=True)  # the name to type: never cut
        table.add_column("title", no_wrap=True, overflow="ellipsis", max_width=40)
        for name in ("dataset", "measure", "data", "units quick", "units paper"):
            table.add_column(name)
        for spec in _specs(specs, default_all=True):
            missing = missing_data(spec)
            table.add_row(spec.name, spec.title[:60], spec.dataset, spec.measure,
                          "missing" if missing else "here", str(len(plan(spec, "quick"))),
                          str(len(plan(spec, "paper"))))
        out.print(table)
        return
    check_output_file("--store", store)
    check_output_dir("--report", report_out)
    check_output_dir("--results", results)
    check_output_dir("--checkpoints", checkpoints)
    check_executor(executor, workers=workers, address=address)
    loaded = _specs(specs, default_all=False)
    chosen = _grid(grid or [])
    sliced = [s.sliced(profile, models=only or (), columns=column or (), grid=chosen)
              if only or column or chosen else s for s in loaded]
    dev = str(resolve_device(device))
    folder = results or default_results_root(default_specs_root())
    if estimate_only:
        with ResultStore(store) as store_:
            _print_estimates(sliced, profile=profile, store=store_, device=dev, results=folder,
                             checkpoints=checkpoints)
        return
    pool = make_executor(executor, workers=workers, address=address)
    interrupted = False
    with ResultStore(store) as store_, stop_on_sigterm():
        for spec in sliced:
            summary = reproduce(spec, profile=profile, store=store_, executor=pool,
                                device=dev, results=folder, console=err,
                                cache_dir=None if checkpoints is None else str(checkpoints))
            out.print(summary_line(summary), highlight=False)
            if summary.interrupted:
                interrupted = True
                break
        if report_out is not None:
            index, _ = report(loaded, profile=profile, store=store_, out=report_out,
                              results=folder)
            out.print(f"report: {index.resolve()}", highlight=False)
    if interrupted:
        raise typer.Exit(130)


def report_command(
    specs: SpecsArg = None,
    profile: ProfileOpt = "quick",
    store: StoreOpt = None,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Report folder: index.html, one Markdown file and PNGs per spec.")]
    = Path("report"),
    results: ResultsOpt = None,
) -> None:
    """Write the report of stored results: per spec a Markdown table of ours beside the
    paper's values (mean ± std over seeds, the difference, ⚠ where ours falls outside the
    paper's ±), PNG figures, and one index.html with all of it and the run metadata."""
    _check_profile(profile)
    check_output_file("--store", store)
    check_output_dir("--out", out_dir)
    check_output_dir("--results", results)
    loaded = _specs(specs, default_all=True)
    folder = results or default_results_root(default_specs_root())
    with ResultStore(store) as store_:
        index, reports = report(loaded, profile=profile, store=store_, out=out_dir,
                                results=folder)
    for rep in reports:
        state = "not run: " + rep.missing if rep.missing and not rep.stored else \
            f"{rep.stored}/{rep.planned} units"
        out.print(f"{rep.spec.name}: {state}", highlight=False)
    out.print(f"report: {index.resolve()}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("reproduce")(reproduce_command)
    app.command("report")(report_command)
