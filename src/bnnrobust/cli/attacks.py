"""Commands that attack a model with gradient and transfer attacks: ``attack``, ``blackbox``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from bnnrobust.attacks import TARGET_RULES, AttackResult, blackbox_attack
from bnnrobust.attacks.blackbox import CRAFTING
from bnnrobust.attacks.catalogue import entry, names
from bnnrobust.cli.options import (
    DatasetOpt,
    DeviceOpt,
    EpsListOpt,
    JsonOpt,
    ParamOpt,
    RecordsOpt,
    RootOpt,
    SaveAdvOpt,
    SeedOpt,
    check_count,
    check_eps,
    check_keep_options,
    check_output_file,
    out,
    parse_params,
    print_flags,
)
from bnnrobust.cli.source import Source, load_model, takes_model
from bnnrobust.data import load
from bnnrobust.device import resolve_device
from bnnrobust.errors import BnnRobustError
from bnnrobust.evaluate import accuracy_under_attack, diagnose, transfer_vs_white_box
from bnnrobust.evaluate.records import (
    result_records,
    save_adversarial,
    write_records,
)
from bnnrobust.files import atomic_write
from bnnrobust.train import predict_logits

GRADIENT = names("gradient", "score")


@takes_model
def attack(
    source: Source,
    dataset: DatasetOpt = "mnist",
    attack_name: Annotated[str, typer.Option(
        "--attack", help=f"Attack: {', '.join(GRADIENT)}.")] = "fgsm",
    eps: EpsListOpt = None,
    steps: Annotated[int | None, typer.Option(
        help="Iterations (bim/pgd: 40; cw: 100, the Galloway preset).")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="Step size of bim/pgd (0.01) or random step of rfgsm (eps/2).")] = None,
    restarts: Annotated[int | None, typer.Option(help="PGD random restarts (1).")] = None,
    target: Annotated[str | None, typer.Option(
        help=f"Targeted attack: {', '.join(TARGET_RULES)} or all (every other class, the "
             "Galloway CW evaluation). Default: untargeted (jsma: random).")] = None,
    eot: Annotated[int, typer.Option(
        "--eot", help="EOT: average each gradient over N forward passes (stochastic models).")] = 1,
    bpda: Annotated[bool, typer.Option(
        help="BPDA: differentiate through non-differentiable input layers with their "
             "surrogate.")] = False,
    limit: Annotated[int | None, typer.Option(
        help="Attack the first N test images only (default: all).")] = None,
    passes: Annotated[int, typer.Option(
        help="Forward passes averaged when measuring a stochastic model's accuracy.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Inputs per attack batch.")] = 256,
    seed: SeedOpt = 0,
    diagnostics: Annotated[bool, typer.Option(
        help="Run the gradient-masking checks (on up to 256 inputs).")] = True,
    device: DeviceOpt = "auto",
    root: RootOpt = None,
    json_path: JsonOpt = None,
    records: RecordsOpt = None,
    save_adv: SaveAdvOpt = None,
) -> None:
    """Accuracy under a white-box attack for each ε, and the gradient-masking flags."""
    source.check()
    check_output_file("--json", json_path)
    check_keep_options(records, save_adv)
    if attack_name not in GRADIENT:
        raise BnnRobustError(f"--attack {attack_name!r} is unknown; valid attacks: "
                             f"{', '.join(GRADIENT)} (exact attacks: 'bnnrobust milp', "
                             "'iprop', 'certify').")
    if target is not None and target not in (*TARGET_RULES, "all"):
        raise BnnRobustError(f"--target must be one of {', '.join(TARGET_RULES)} or all, got "
                             f"{target!r}.")
    chosen = entry(attack_name)
    eps_list = check_eps(eps, [0.3]) if chosen.budget is not None else [None]
    check_count("--passes", passes)
    check_count("--batch-size", batch_size)
    given = {"steps": steps, "alpha": alpha, "restarts": restarts,
             "target": target if target not in (None, "all") else None}
    params = {**chosen.papers_settings(), "eot_samples": eot, "bpda": bpda, "seed": seed,
              **{k: v for k, v in given.items() if v is not None}}
    chosen.check({**params, **({chosen.budget: eps_list[0]} if chosen.budget else {})})
    dev = resolve_device(device)
    x, y = load(dataset, "test", root=root, limit=limit)
    loaded = load_model(source, device=dev, sample=x)
    results: dict[float | None, AttackResult] = {}
    rows = accuracy_under_attack(loaded.model, x, y, attack=attack_name, eps=eps_list,
                                 batch_size=batch_size, passes=passes, progress=True,
                                 all_targets=target == "all",
                                 on_result=lambda e, r: results.__setitem__(e, r), **params)
    table = Table("attack", "ε", "accuracy", "success rate", "mean L2 (successful)", "n",
                  "time (s)")
    for r in rows:
        table.add_row(r.attack, "-" if r.eps is None else f"{r.eps:g}", f"{r.accuracy:.2%}",
                      f"{r.success_rate:.2%}", "-" if r.mean_l2 is None else f"{r.mean_l2:.3f}",
                      str(r.n), f"{r.seconds:.1f}")
    out.print(f"{loaded.name} on {dataset}")
    out.print(table)
    flags = []
    if diagnostics:
        budgets = [e for e in eps_list if e is not None] or [0.3]
        flags = diagnose(loaded.model, x.to(dev), y.to(dev), rows=rows, eps=max(budgets),
                         eot_samples=eot, bpda=bpda)
        print_flags(flags)
    _keep(results, loaded.model, x, y, attack_name, records=records, save_adv=save_adv,
          device=dev)
    if json_path is not None:
        atomic_write(json_path, json.dumps({"model": loaded.name, "dataset": dataset,
                                            "rows": [r.as_dict() for r in rows],
                                            "flags": [f.as_dict() for f in flags]}, indent=2))


def _keep(results: dict[float | None, AttackResult], model, x: torch.Tensor, y: torch.Tensor,
          attack_name: str, *, records: Path | None, save_adv: Path | None,
          device) -> None:
    """Write the per-sample records and the adversarial inputs the options ask for (with
    every other class as target, each input appears once per target)."""
    if records is not None:
        rows = []
        for e, result in results.items():
            n = len(result.success)
            k = n // len(x)  # targets per input (1 unless --target all)
            index = torch.arange(len(x)).repeat_interleave(k)
            pred = predict_logits(model, x, device=device).argmax(1).repeat_interleave(k)
            rows += result_records(result, attack=attack_name, eps=e, indices=index.tolist(),
                                   labels=y.repeat_interleave(k), clean_prediction=pred)
        write_records(rows, records)
        out.print(f"records: {records.resolve()}", highlight=False)
    if save_adv is not None:
        save_adversarial({f"x_adv_eps={e}": r.x_adv.cpu().numpy() for e, r in results.items()},
                         save_adv)
        out.print(f"adversarial inputs: {save_adv.resolve()}", highlight=False)


@takes_model
def blackbox(
    source: Source,
    dataset: DatasetOpt = "mnist",
    attack_name: Annotated[str, typer.Option(
        "--attack", help=f"White-box attack crafted on the substitute: {', '.join(CRAFTING)}.")]
    = "fgsm",
    eps: Annotated[float, typer.Option(help="L∞ budget of the transferred attack (0.3).")] = 0.3,
    substitute: Annotated[str, typer.Option(
        help="Substitute zoo model (mlp = Papernot's 784-200-200-10).")] = "mlp",
    param: ParamOpt = None,
    rounds: Annotated[int, typer.Option(help="Substitute training rounds (6).")] = 6,
    lmbda: Annotated[float, typer.Option(
        "--lambda", help="Jacobian augmentation step λ (0.1).")] = 0.1,
    epochs: Annotated[int, typer.Option(help="Substitute epochs per round (10).")] = 10,
    holdout: Annotated[int, typer.Option(
        help="First N test images seed the substitute; the rest are the evaluation set (150).")] = 150,
    tau: Annotated[int | None, typer.Option(
        help="Flip the sign of λ every tau rounds (Papernot; default off).")] = None,
    reservoir: Annotated[int | None, typer.Option(
        help="Augment at most this many points per round (reservoir sampling; default off).")] = None,
    white_box: Annotated[bool, typer.Option(
        help="Also run the same attack white-box on the oracle and flag a stronger transfer.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the substitute and the attack.")] = 0,
    limit: Annotated[int | None, typer.Option(
        help="Use the first N test images only (seed set included).")] = None,
    device: DeviceOpt = "auto",
    root: RootOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Papernot's black-box substitute attack against a model (the oracle) that only answers
    labels."""
    source.check()
    check_output_file("--json", json_path)
    check_eps([eps])
    if attack_name not in CRAFTING:
        raise BnnRobustError(f"--attack {attack_name!r} cannot be crafted on the substitute; "
                             f"valid attacks: {', '.join(CRAFTING)}.")
    params = {"eps": eps, "craft": attack_name, "holdout": holdout, "substitute": substitute,
              "substitute_params": parse_params(param) or None, "rounds": rounds,
              "lmbda": lmbda, "epochs": epochs, "tau": tau, "reservoir": reservoir,
              "seed": seed}
    entry("substitute").check(params)
    dev = resolve_device(device)
    x, y = load(dataset, "test", root=root, limit=limit)
    loaded = load_model(source, device=dev, sample=x)
    result = blackbox_attack(loaded.model, x, y, progress=True, **params)
    table = Table("", "clean accuracy", f"accuracy under {attack_name} (transferred)")
    table.add_row("oracle", f"{result.oracle_clean_accuracy:.2%}",
                  f"{result.oracle_adversarial_accuracy:.2%}")
    table.add_row("substitute", f"{result.substitute_clean_accuracy:.2%}",
                  f"{result.substitute_adversarial_accuracy:.2%} (white-box on itself)")
    out.print(f"oracle {loaded.name}, {result.n_eval} evaluation images")
    out.print(table)
    out.print(f"oracle queries: {result.training_queries} for substitute training, "
              f"{result.evaluation_queries} for evaluation")
    flags = []
    if white_box:
        row = accuracy_under_attack(loaded.model, x[holdout:], y[holdout:], attack=attack_name,
                                    eps=[eps], seed=seed)[0]
        flags.append(transfer_vs_white_box(white_box_accuracy=row.accuracy,
                                           transfer_accuracy=result.oracle_adversarial_accuracy,
                                           eps=eps))
        print_flags(flags)
    if json_path is not None:
        atomic_write(json_path, json.dumps({"model": loaded.name, "dataset": dataset,
                                            **result.as_dict(),
                                            "flags": [f.as_dict() for f in flags]}, indent=2))


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command()(attack)
    app.command()(blackbox)
