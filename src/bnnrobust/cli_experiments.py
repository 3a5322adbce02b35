"""The reproduction and audit commands of the ``bnnrobust`` CLI: ``reproduce``, ``report``
and ``audit``."""

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


def audit(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by 'bnnrobust train' "
                                                    "(or found in the checkpoint cache).")],
    eps: Annotated[list[float] | None, typer.Option(
        help="L∞ budgets, e.g. --eps 0.1 0.2 0.3 (default: 0.1 0.2 0.3 for 28×28 data, "
             "2/255 4/255 8/255 for CIFAR).")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Test set to audit on (default: the checkpoint's training "
                          "dataset, else mnist).")] = None,
    points: Annotated[int, typer.Option(
        help="Test points audited (taken after the substitute's seed inputs).")] = 500,
    restarts: Annotated[int, typer.Option(help="PGD random restarts.")] = 5,
    steps: Annotated[int, typer.Option(help="PGD steps (step size 2.5·ε/steps).")] = 40,
    eot: Annotated[int, typer.Option(
        "--eot", help="EOT passes per gradient when the model is random at test time.")] = 10,
    cw_steps: Annotated[int, typer.Option(
        "--cw-steps", help="CW-L2 iterations (Galloway's settings otherwise).")] = 100,
    transfer: Annotated[bool, typer.Option(
        help="Run the black-box transfer attack (Papernot substitute, FGSM).")] = True,
    holdout: Annotated[int, typer.Option(
        help="Test inputs that seed the substitute (the audited points come after them).")] = 150,
    exact_points: Annotated[int, typer.Option(
        "--exact-points", help="Points given to the exact attack (fully connected BNNs "
                               "only; 0 = skip).")] = 10,
    exact_time: Annotated[float, typer.Option(
        "--exact-time", help="Seconds per point and ε for the exact attack.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of every attack and the substitute.")] = 0,
    device: Annotated[str, typer.Option(
        "--device", help="auto (CUDA if present, else CPU), cpu or cuda.")] = "auto",
    root: Annotated[Path | None, typer.Option(
        "--root", help="Datasets folder (overrides $BNNROBUST_DATA).")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for audit.md, audit.html, audit.json and audit.png (default: "
                      "audit-<checkpoint name>).")] = None,
) -> None:
    """Audit one model: FGSM, PGD with restarts, the adaptive attacks its defenses call for
    (PGD on the logits; EOT when it is random; BPDA when its input layer is
    non-differentiable), the transfer attack, CW-L2, and the exact attack when it is a fully
    connected BNN. Reports per-ε worst-case robust accuracy and the gradient-masking flags,
    as Markdown and HTML."""
    from bnnrobust.data import load
    from bnnrobust.device import resolve_device
    from bnnrobust.evaluate.audit import audit as run_audit
    from bnnrobust.evaluate.audit import default_eps
    from bnnrobust.experiments.audit_report import write
    from bnnrobust.train import load as load_checkpoint

    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    name = dataset or ckpt.train_config.get("dataset") or "mnist"
    x, y = load(name, "test", root=root, limit=holdout + points)
    budgets = eps or list(default_eps(x.shape[1:]))
    result = run_audit(ckpt.model, x, y, eps=budgets, points=points, holdout=holdout,
                       seed=seed, pgd_steps=steps, restarts=restarts, eot_samples=eot,
                       cw_steps=cw_steps, transfer=transfer, exact_points=exact_points,
                       exact_time_limit=exact_time)
    folder = out_dir or Path(f"audit-{checkpoint.stem}")
    files = write(result, folder, source={"checkpoint": str(checkpoint), "dataset": name})
    table = Table("attack", *(f"ε={e:.4g}" for e in result.eps))
    for line in result.lines:
        table.add_row(line.label + (" †" if line.kind == "adaptive" else ""),
                      *(f"{100 * line.accuracy[e]:.1f}" for e in result.eps))
    table.add_row("worst case", *(f"{100 * result.worst[e]:.1f}" for e in result.eps))
    out.print(f"{ckpt.model.config['name']} {ckpt.model.config['params']} on {name}: "
              f"{result.points} points, clean {100 * result.clean_accuracy:.1f} %")
    out.print(table)
    for flag in result.flags:
        out.print(f"{'FLAG' if flag.raised else 'ok  '} {flag.name}: {flag.evidence}",
                  highlight=False)
    out.print(f"audit: {files['html'].resolve()}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("reproduce")(reproduce)
    app.command("report")(report_command)
    app.command("audit")(audit)
