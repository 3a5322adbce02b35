"""The ``bnnrobust`` command line. Every error on bad input is one clear line, exit status 2."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bnnrobust.attacks import (
    ADV_KINDS,
    ATTACKS,
    CWL2,
    EPS_FREE,
    TARGET_RULES,
    AdversarialTraining,
    Oracle,
    blackbox_attack,
)
from bnnrobust.data import REGISTRY, load, status
from bnnrobust.device import resolve_device
from bnnrobust.errors import BnnRobustError
from bnnrobust.evaluate import accuracy_under_attack, diagnose, transfer_vs_white_box
from bnnrobust.models import available, build
from bnnrobust.nn import summary as model_summary
from bnnrobust.train import TrainRequest, accuracy, train_cached
from bnnrobust.train import load as load_checkpoint

app = typer.Typer(
    help="How robust are binarized and low-precision neural networks? Train the papers' "
         "models, attack them, defend them, and reproduce the papers' tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DeviceOpt = Annotated[str, typer.Option(
    "--device", help="Where to compute: auto (CUDA if present, else CPU), cpu or cuda.")]
DatasetOpt = Annotated[str, typer.Option(
    "--dataset", help=f"Dataset: {', '.join(REGISTRY)}. Files are looked up under "
                      "$BNNROBUST_DATA/<name>/ (default ~/.cache/bnnrobust/data).")]
RootOpt = Annotated[Path | None, typer.Option(
    "--root", help="Datasets folder (overrides $BNNROBUST_DATA).")]


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BnnRobustError(f"--param expects key=value, got {pair!r} (e.g. --param width=64).")
        params[key.strip()] = value.strip()
    return params


@app.command()
def datasets(root: RootOpt = None,
             verify: Annotated[bool, typer.Option(
                 help="Check each file's md5 (slower the first time; remembered after).")] = True,
             ) -> None:
    """List each dataset: verified / present / missing / corrupt, and its folder."""
    table = Table("dataset", "state", "folder", "detail")
    for name in REGISTRY:
        st = status(name, root=root, verify=verify)
        color = {"verified": "green", "present": "cyan", "missing": "yellow"}.get(st.state, "red")
        table.add_row(name, f"[{color}]{st.state}", str(st.folder), st.detail)
    out.print(table)


@app.command()
def models() -> None:
    """List the model zoo with every parameter, its default and allowed values."""
    for name, entry in available().items():
        table = Table(title=f"{name}: {entry.description}", title_justify="left")
        for col in ("parameter", "default", "allowed", "meaning"):
            table.add_column(col)
        for pname, p in entry.params.items():
            allowed = ", ".join(map(str, p.choices)) if p.choices else (
                f"{p.kind.__name__} >= {p.minimum}" if p.kind is int and p.minimum is not None
                else p.kind.__name__)
            table.add_row(pname, str(p.default), allowed, p.help)
        out.print(table)


@app.command()
def summary(model: Annotated[str, typer.Argument(help="Zoo model name or a checkpoint path.")],
            param: Annotated[list[str], typer.Option(
                "--param", help="Model parameter key=value (repeatable).")] = None) -> None:
    """Count binary and float parameters and the memory in bits of a model."""
    net = (load_checkpoint(model).model if Path(model).is_file()
           else build(model, **_parse_params(param or [])))
    out.print(str(model_summary(net)))


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo model name (see 'bnnrobust models').")],
    dataset: DatasetOpt = "mnist",
    param: Annotated[list[str], typer.Option(
        "--param", help="Model parameter key=value, repeatable, e.g. --param precision=binary "
                        "--param width=64.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (Galloway et al.: 15).")] = 15,
    batch_size: Annotated[int, typer.Option(help="Batch size (papers: 128).")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (papers: 1e-3).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed for initialization, shuffling and sampling.")] = 0,
    limit: Annotated[int | None, typer.Option(
        help="Train on the first N training examples only (default: all).")] = None,
    clip_weights: Annotated[bool, typer.Option(
        help="Clamp latent weights of binary layers to [-1, 1] after each step.")] = False,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="Also copy the checkpoint here (it is always kept in the cache).")] = None,
    adv: Annotated[str | None, typer.Option(
        help=f"Adversarial training: {', '.join(ADV_KINDS)} (default: none). Each batch adds "
             "its adversarial version; loss = (clean + adversarial) / 2.")] = None,
    adv_eps: Annotated[float, typer.Option(
        help="Adversarial training ε (L∞; papers: 0.3 on MNIST). For fgsm-random, the "
             "largest ε of the truncated normal.")] = 0.3,
    adv_steps: Annotated[int, typer.Option(help="PGD training iterations (Galloway: 20 or 40).")] = 20,
    adv_alpha: Annotated[float, typer.Option(help="PGD training step size (0.01).")] = 0.01,
    adv_start: Annotated[int, typer.Option(
        help="First adversarial epoch, counting from 0 (papers: 10 of 15).")] = 0,
    adv_label: Annotated[str, typer.Option(
        help="Label of adversarial examples: predicted (the model's own, no label leaking) "
             "or true.")] = "predicted",
    device: DeviceOpt = "auto",
    root: RootOpt = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the metrics as JSON to this file.")] = None,
) -> None:
    """Train a zoo model (or fetch it from the checkpoint cache) and print its test accuracy."""
    resolve_device(device)
    hook = None
    if adv is not None:
        hook = AdversarialTraining(adv, eps=adv_eps, start_epoch=adv_start, steps=adv_steps,
                                   alpha=adv_alpha, label=adv_label, seed=seed)
    request = TrainRequest(model=model, params=_parse_params(param or []), dataset=dataset,
                           epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                           clip_weights=clip_weights, train_limit=limit,
                           hook=hook.config() if hook else None)
    result = train_cached(request, batch_hook=hook, device=device, data_root=root, console=err)
    path = result.path
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.path, out_path)
        path = out_path
    acc = result.metrics.get("final_test_accuracy")
    out.print(f"{'cached' if result.hit else 'trained'}: {model} {request.as_dict()['params']}")
    out.print(f"test accuracy: {acc:.2%}")
    out.print(f"checkpoint: {path}")
    if json_path is not None:
        json_path.write_text(json.dumps({"checkpoint": str(path), "cache_hit": result.hit,
                                         "request": request.as_dict(), **result.metrics},
                                        indent=2))


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by 'bnnrobust train'.")],
    dataset: DatasetOpt = "mnist",
    limit: Annotated[int | None, typer.Option(
        help="Evaluate on the first N test examples only.")] = None,
    passes: Annotated[int, typer.Option(
        help="Forward passes averaged for a stochastic model (fixed seeds).")] = 5,
    device: DeviceOpt = "auto",
    root: RootOpt = None,
) -> None:
    """Clean test accuracy of a checkpoint."""
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    x, y = load(dataset, "test", root=root, limit=limit)
    acc = accuracy(ckpt.model, x, y, device=dev, passes=passes)
    out.print(f"{ckpt.model.config['name']} {ckpt.model.config['params']}")
    out.print(f"clean accuracy on {dataset} test ({len(x)} images): {acc:.2%}")


def _print_flags(flags: list) -> None:
    for flag in flags:
        mark = "[red]FLAG[/red]" if flag.raised else "[green]ok[/green]  "
        out.print(f"{mark} {flag.name}: {flag.evidence}")
        if flag.raised:
            out.print(f"      {flag.explanation}")


@app.command()
def attack(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by 'bnnrobust train'.")],
    dataset: DatasetOpt = "mnist",
    attack_name: Annotated[str, typer.Option(
        "--attack", help=f"Attack: {', '.join(ATTACKS)}.")] = "fgsm",
    eps: Annotated[list[float] | None, typer.Option(
        help="L∞ budgets, e.g. --eps 0.1 0.2 0.3 (ignored by cw and jsma).")] = None,
    steps: Annotated[int | None, typer.Option(
        help="Iterations (bim/pgd: 40; cw: 100, the Galloway preset).")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="Step size of bim/pgd (0.01) or random step of rfgsm (eps/2).")] = None,
    restarts: Annotated[int, typer.Option(help="PGD random restarts.")] = 1,
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
    seed: Annotated[int, typer.Option(help="Seed of the attack's random numbers.")] = 0,
    diagnostics: Annotated[bool, typer.Option(
        help="Run the gradient-masking checks (on up to 256 inputs).")] = True,
    device: DeviceOpt = "auto",
    root: RootOpt = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the table and the flags as JSON to this file.")] = None,
) -> None:
    """Accuracy under a white-box attack for each ε, and the gradient-masking flags."""
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    x, y = load(dataset, "test", root=root, limit=limit)
    options: dict = {"eot_samples": eot, "bpda": bpda, "seed": seed}
    if attack_name == "cw":
        options.update(CWL2.GALLOWAY)
    if steps is not None:
        options["steps"] = steps
    if alpha is not None:
        options["alpha"] = alpha
    if attack_name == "pgd":
        options["restarts"] = restarts
    if target is not None and target != "all":
        options["target"] = target
    eps_list = eps or [0.3]
    rows = accuracy_under_attack(ckpt.model, x, y, attack=attack_name, eps=eps_list,
                                 batch_size=batch_size, passes=passes, progress=True,
                                 all_targets=target == "all", **options)
    table = Table("attack", "ε", "accuracy", "success rate", "mean L2 (successful)", "n", "time (s)")
    for r in rows:
        table.add_row(r.attack, "-" if r.eps is None else f"{r.eps:g}", f"{r.accuracy:.2%}",
                      f"{r.success_rate:.2%}", "-" if r.mean_l2 is None else f"{r.mean_l2:.3f}",
                      str(r.n), f"{r.seconds:.1f}")
    out.print(f"{ckpt.model.config['name']} {ckpt.model.config['params']} on {dataset}")
    out.print(table)
    flags = []
    if diagnostics:
        flags = diagnose(ckpt.model, x.to(dev), y.to(dev), rows=rows, eps=max(eps_list),
                         eot_samples=eot, bpda=bpda)
        _print_flags(flags)
    if json_path is not None:
        json_path.write_text(json.dumps({"checkpoint": str(checkpoint), "dataset": dataset,
                                         "rows": [r.as_dict() for r in rows],
                                         "flags": [f.as_dict() for f in flags]}, indent=2))


@app.command()
def blackbox(
    checkpoint: Annotated[Path, typer.Argument(help="The oracle: a checkpoint it answers labels for.")],
    dataset: DatasetOpt = "mnist",
    attack_name: Annotated[str, typer.Option(
        "--attack", help=f"White-box attack crafted on the substitute: {', '.join(ATTACKS)}.")] = "fgsm",
    eps: Annotated[float, typer.Option(help="L∞ budget of the transferred attack (0.3).")] = 0.3,
    substitute: Annotated[str, typer.Option(
        help="Substitute zoo model (mlp = Papernot's 784-200-200-10).")] = "mlp",
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Substitute parameter key=value (repeatable).")] = None,
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
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the results as JSON to this file.")] = None,
) -> None:
    """Papernot's black-box substitute attack against a checkpoint that only answers labels."""
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    x, y = load(dataset, "test", root=root, limit=limit)
    oracle = Oracle(ckpt.model, device=dev)
    options = {} if attack_name in EPS_FREE else {"eps": eps}
    result = blackbox_attack(oracle, x, y, holdout=holdout, substitute=substitute,
                             substitute_params=_parse_params(param or []) or None, rounds=rounds,
                             lmbda=lmbda, epochs=epochs, tau=tau, reservoir=reservoir,
                             attack=attack_name, attack_options=options, seed=seed, device=dev)
    table = Table("", "clean accuracy", f"accuracy under {attack_name} (transferred)")
    table.add_row("oracle", f"{result.oracle_clean_accuracy:.2%}",
                  f"{result.oracle_adversarial_accuracy:.2%}")
    table.add_row("substitute", f"{result.substitute_clean_accuracy:.2%}",
                  f"{result.substitute_adversarial_accuracy:.2%} (white-box on itself)")
    out.print(f"oracle {ckpt.model.config['name']} {ckpt.model.config['params']}, "
              f"{result.n_eval} evaluation images")
    out.print(table)
    out.print(f"oracle queries: {result.training_queries} for substitute training, "
              f"{result.evaluation_queries} for evaluation")
    flags = []
    if white_box and attack_name not in EPS_FREE:
        eval_x, eval_y = x[holdout:], y[holdout:]
        row = accuracy_under_attack(ckpt.model, eval_x, eval_y, attack=attack_name, eps=[eps],
                                    seed=seed)[0]
        flags.append(transfer_vs_white_box(white_box_accuracy=row.accuracy,
                                           transfer_accuracy=result.oracle_adversarial_accuracy,
                                           eps=eps))
        _print_flags(flags)
    if json_path is not None:
        json_path.write_text(json.dumps({"checkpoint": str(checkpoint), "dataset": dataset,
                                         **result.as_dict(),
                                         "flags": [f.as_dict() for f in flags]}, indent=2))


MULTI_VALUE_OPTIONS = ("--eps",)


def _expand_multi_value(argv: list[str]) -> list[str]:
    """Let ``--eps 0.1 0.2 0.3`` mean ``--eps 0.1 --eps 0.2 --eps 0.3`` (click needs the latter)."""
    out: list[str] = []
    current = None
    for arg in argv:
        if arg in MULTI_VALUE_OPTIONS:
            current = arg
            out.append(arg)
            continue
        if current is not None and not arg.startswith("-"):
            if out[-1] != current:
                out.append(current)
            out.append(arg)
            continue
        current = None
        out.append(arg)
    return out


def main() -> None:
    """Entry point: run the app, turning bnnrobust errors into one clear message."""
    try:
        app(args=_expand_multi_value(sys.argv[1:]), standalone_mode=False)
    except BnnRobustError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
