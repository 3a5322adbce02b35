"""The audit of one model: ``audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bnnrobust.cli.options import (
    DeviceOpt,
    EpsListOpt,
    RecordsOpt,
    RootOpt,
    SaveAdvOpt,
    check_eps,
    check_keep_options,
    check_output_dir,
    out,
)
from bnnrobust.cli.source import Source, load_model, takes_model
from bnnrobust.data import load
from bnnrobust.device import resolve_device
from bnnrobust.errors import BnnRobustError
from bnnrobust.evaluate.audit import SUITES, default_eps
from bnnrobust.evaluate.audit import audit as run_audit
from bnnrobust.evaluate.records import (
    adversarial_inputs,
    audit_records,
    save_adversarial,
    write_records,
)
from bnnrobust.report import write_audit
from bnnrobust.report.leaderboard import Leaderboard
from bnnrobust.train import predict_logits


@takes_model
def audit(
    source: Source,
    eps: EpsListOpt = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Test set to audit on (default: the checkpoint's training "
                          "dataset, else mnist).")] = None,
    points: Annotated[int, typer.Option(
        help="Test points audited (taken after the substitute's seed inputs).")] = 500,
    suite: Annotated[str, typer.Option(
        help="Attacks: autoattack (AutoAttack's standard ensemble: APGD-CE, APGD-T, FAB-T, "
             "Square), bnnrobust (FGSM, PGD, the adaptive attacks, transfer, CW-L2, exact) "
             "or both (AutoAttack's first, so its own robust accuracy is reported).")] = "both",
    per_attack: Annotated[bool, typer.Option(
        "--per-attack", help="Run every attack on every point and report each one's accuracy "
                             "alone (default: a cascade, each attack on the points the "
                             "earlier ones failed on; the same worst case, cheaper).")] = False,
    aa_steps: Annotated[int, typer.Option(
        "--aa-steps", help="Iterations of APGD and FAB-T (AutoAttack's 100).")] = 100,
    aa_queries: Annotated[int, typer.Option(
        "--aa-queries", help="Queries of Square (AutoAttack's 5000).")] = 5000,
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
    device: DeviceOpt = "auto",
    root: RootOpt = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for audit.md, audit.html, audit.json (the model card) and "
                      "audit.png (default: audit-<model name>).")] = None,
    records: RecordsOpt = None,
    save_adv: SaveAdvOpt = None,
) -> None:
    """Audit one model: AutoAttack's standard ensemble, then FGSM, PGD with restarts, the
    adaptive attacks its defenses call for (PGD on the logits; EOT when it is random; BPDA when
    its input layer is non-differentiable), the transfer attack, CW-L2, and the exact attack
    when it is a fully connected BNN or Galloway's B model, as a cascade. Reports per-ε
    worst-case robust accuracy, AutoAttack's own beside it, and the gradient-masking flags, as
    Markdown and HTML."""
    source.check()
    stem = (source.checkpoint or source.onnx).stem if not source.factory else \
        source.factory.replace(":", "-").replace(".", "-")
    folder = check_output_dir("--out", out_dir or Path(f"audit-{stem}"))
    budgets = check_eps(eps) if eps else None
    check_keep_options(records, save_adv)
    if suite not in SUITES:
        raise BnnRobustError(f"--suite must be one of {', '.join(SUITES)}, got {suite!r}.")
    options = {"seed": seed, "pgd_steps": steps, "restarts": restarts, "eot_samples": eot,
               "cw_steps": cw_steps, "transfer": transfer, "exact_points": exact_points,
               "exact_time_limit": exact_time, "suite_name": suite, "per_attack": per_attack,
               "aa_steps": aa_steps, "aa_queries": aa_queries}
    dev = resolve_device(device)
    loaded = None if source.external else load_model(source, device=dev)
    name = dataset or (loaded and loaded.trained_on) or "mnist"
    x, y = load(name, "test", root=root, limit=holdout + points)
    loaded = loaded or load_model(source, device=dev, sample=x)
    budgets = budgets or list(default_eps(x.shape[1:]))
    result = run_audit(loaded.model, x, y, eps=budgets, points=points, holdout=holdout,
                       **options)
    files = write_audit(result, folder, source={
        "checkpoint": str(source.checkpoint or source.onnx or source.factory),
        "dataset": name})
    table = Table("attack (robust accuracy after it, −points it broke)",
                  *(f"ε={e:.4g}" for e in result.eps))
    for line in result.lines:
        table.add_row(line.label + (" †" if line.kind == "adaptive" else ""),
                      *(f"{100 * line.after[e]:.1f} (−{line.broken[e]})" for e in result.eps))
    if result.autoattack is not None:
        table.add_row("AutoAttack (standard)",
                      *(f"{100 * result.autoattack[e]:.1f}" for e in result.eps))
    table.add_row("worst case", *(f"{100 * result.worst[e]:.1f}" for e in result.eps))
    out.print(f"{loaded.name} on {name}: {result.points} points, clean "
              f"{100 * result.clean_accuracy:.1f} %")
    out.print(table)
    for flag in result.flags:
        out.print(f"{'FLAG' if flag.raised else 'ok  '} {flag.name}: {flag.evidence}",
                  highlight=False)
    out.print(f"audit: {files['html'].resolve()}", highlight=False)
    x_eval, y_eval = x[holdout:holdout + points], y[holdout:holdout + points]
    if records is not None:
        pred = predict_logits(loaded.model, x_eval, device=dev).argmax(1)
        write_records(audit_records(result, y=y_eval, clean_prediction=pred,
                                    first_index=holdout), records)
        out.print(f"records: {records.resolve()}", highlight=False)
    if save_adv is not None:
        save_adversarial(adversarial_inputs(result, x_eval), save_adv)
        out.print(f"adversarial inputs: {save_adv.resolve()}", highlight=False)


def leaderboard(
    cards: Annotated[list[Path], typer.Argument(
        help="Model cards: the audit.json files 'bnnrobust audit' wrote, or their folders.",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder for leaderboard.md and leaderboard.html.")] = Path("leaderboard"),
) -> None:
    """Table several audited models side by side, RobustBench-style: clean accuracy,
    AutoAttack's robust accuracy and the worst case per ε, certified counts, flags raised;
    ranked by the worst case at the largest ε all cards share."""
    folder = check_output_dir("--out", out_dir)
    board = Leaderboard.of(cards)
    files = board.write(folder)
    table = Table("rank", "model", "clean %", *(f"worst % ε={e}" for e in board.eps))
    for rank, card in enumerate(board.cards, 1):
        worst = card["robust_accuracy"]["worst_case"]
        table.add_row(str(rank), str(card["model"]["source"]),
                      f"{100 * card['clean_accuracy']:.1f}",
                      *("—" if e not in worst else f"{100 * worst[e]:.1f}" for e in board.eps))
    out.print(table)
    out.print(f"leaderboard: {files['html'].resolve()}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command()(audit)
    app.command()(leaderboard)
