"""The ``bnnrobust`` command line. Every error on bad input is one clear line, exit status 2."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
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
from bnnrobust.cli_experiments import register as register_experiment_commands
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


def _combinatorial():
    """The exact-attack package, or a clear error when OR-Tools (or SciPy) is missing."""
    try:
        from bnnrobust.attacks import combinatorial
    except ImportError as exc:
        raise BnnRobustError(f"exact attacks need OR-Tools and SciPy: pip install 'bnnrobust[cpsat]' "
                             f"({exc}).") from None
    return combinatorial


PointsOpt = Annotated[int, typer.Option(help="Attack the first N test points.")]
TimeLimitOpt = Annotated[float, typer.Option(
    "--time-limit", help="Seconds per point (the paper: 180).")]
WorkersOpt = Annotated[int, typer.Option(
    help="Points attacked in parallel (local: worker processes; ray: CPUs of a local "
         "instance).")]
ExecutorOpt = Annotated[str, typer.Option(
    "--executor", help="local (processes on this machine) or ray.")]
AddressOpt = Annotated[str | None, typer.Option(
    help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local instance.")]
JsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Write every point's result (status, objective, bound, time, trace, "
                   "perturbation) as JSON to this file.")]
TargetOpt = Annotated[str, typer.Option(
    help="second (the class with the second-highest output, the paper's), untargeted (best "
         "over every class) or a class index.")]


def _exact_points(checkpoint: Path, dataset: str, points: int, root: Path | None):
    if points < 1:
        raise BnnRobustError(f"--points must be >= 1, got {points}.")
    from bnnrobust.data import load_arrays

    ckpt = load_checkpoint(checkpoint, device="cpu")
    pixels, labels = load_arrays(dataset, "test", root=root)
    n = min(points, len(pixels))
    return ckpt, pixels[:n].reshape(n, -1), labels[:n]


def _run_exact(fn, pixels, *, executor: str, workers: int, address: str | None,
               description: str) -> tuple[list, bool]:
    from bnnrobust.experiments import make_executor, run

    outcome = run(make_executor(executor, workers=workers, address=address), fn, list(pixels),
                  description=description)
    if outcome.interrupted:
        err.print(f"interrupted: keeping the {len(outcome.results)} finished point(s).")
    return sorted(outcome.results.items()), outcome.interrupted


def _exact_report(name: str, results: list, labels, settings: dict, json_path: Path | None,
                  interrupted: bool) -> None:
    import statistics

    table = Table("point", "label", "pred", "target", "status", "objective", "bound", "flip",
                  "time (s)")
    for i, r in results:
        table.add_row(str(i), str(int(labels[i])), str(r.prediction), str(r.target), r.status,
                      f"{r.objective:+.4f}", "-" if r.bound == float("inf") else f"{r.bound:+.4f}",
                      "yes" if r.flipped else "no", f"{r.seconds:.2f}")
    if len(results) <= 25:
        out.print(table)
    if results:
        times = [r.seconds for _, r in results]
        proven = sum(r.status == "optimal" for _, r in results)
        out.print(f"{name}: {len(results)} points, proven optimal {proven}, flipped "
                  f"{sum(r.flipped for _, r in results)}; time median "
                  f"{statistics.median(times):.2f} s, mean {statistics.mean(times):.2f} s")
    if json_path is not None:
        json_path.write_text(json.dumps({
            "settings": settings, "interrupted": interrupted,
            "points": [{"index": i, "label": int(labels[i]), **r.as_dict()} for i, r in results]},
            indent=1))
    if interrupted:
        raise typer.Exit(130)


@app.command()
def milp(
    checkpoint: Annotated[Path, typer.Argument(help="An fc-bnn checkpoint ('bnnrobust train fc-bnn').")],
    dataset: DatasetOpt = "mnist",
    eps: Annotated[float, typer.Option(
        help="L∞ budget on [0, 1]. cpsat allows floor(255·ε) whole pixel steps; highs exactly ε.")] = 0.01,
    points: PointsOpt = 100,
    time_limit: TimeLimitOpt = 180.0,
    backend: Annotated[str, typer.Option(
        help="cpsat (OR-Tools CP-SAT on the 1/255 pixel grid, exact for 8-bit images) or highs "
             "(the paper's continuous big-M MILP, HiGHS through OR-Tools MathOpt).")] = "cpsat",
    target: TargetOpt = "second",
    hint: Annotated[str, typer.Option(
        help="Starting solution: fgsm (one round of iterated FGSM) or none (zero).")] = "fgsm",
    threads: Annotated[int, typer.Option(help="CP-SAT workers per point (1 is deterministic).")] = 1,
    workers: WorkersOpt = 1,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    seed: Annotated[int, typer.Option(help="Solver and hint seed.")] = 0,
    root: RootOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """The exact MILP attack (Khalil et al. 2019): maximize f_target − f_prediction per point."""
    comb = _combinatorial()
    ckpt, pixels, labels = _exact_points(checkpoint, dataset, points, root)
    attack = comb.MILPAttack(ckpt.model, eps=eps, target=_target(target), backend=backend,
                             time_limit=time_limit, threads=threads, hint=hint, seed=seed)
    results, interrupted = _run_exact(attack.attack, pixels, executor=executor, workers=workers,
                                      address=address, description=f"milp ({backend})")
    _exact_report(f"milp {backend} ε={eps:g}", results, labels,
                  {**attack.settings(), "checkpoint": str(checkpoint), "dataset": dataset},
                  json_path, interrupted)


@app.command()
def iprop(
    checkpoint: Annotated[Path, typer.Argument(help="An fc-bnn checkpoint ('bnnrobust train fc-bnn').")],
    dataset: DatasetOpt = "mnist",
    eps: Annotated[float, typer.Option(help="L∞ budget on [0, 1] (floor(255·ε) pixel steps).")] = 0.01,
    points: PointsOpt = 100,
    time_limit: TimeLimitOpt = 180.0,
    sub_time_limit: Annotated[float, typer.Option(
        "--sub-time-limit", help="Seconds per layer-to-layer subproblem (the paper: 10).")] = 10.0,
    step: Annotated[str, typer.Option(
        help="Step size S: adaptive (5% of the width, halved after 5 failures) or a number.")] = "adaptive",
    warm_start: Annotated[str, typer.Option(
        "--warm-start", help="none (zero perturbation) or fgsm (iterated FGSM for "
                             "--warm-start-time seconds first).")] = "none",
    warm_start_time: Annotated[float, typer.Option(
        "--warm-start-time", help="Seconds of FGSM for --warm-start fgsm (the paper: 5).")] = 5.0,
    target: Annotated[str, typer.Option(
        help="second (the paper's) or a class index.")] = "second",
    workers: WorkersOpt = 1,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the neuron sampling and CP-SAT.")] = 0,
    root: RootOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """IProp (Khalil et al. 2019): integer target propagation, a fast local search."""
    comb = _combinatorial()
    ckpt, pixels, labels = _exact_points(checkpoint, dataset, points, root)
    if step != "adaptive":
        try:
            step_value: int | str = int(step)
        except ValueError:
            raise BnnRobustError(f"--step must be 'adaptive' or a whole number, got {step!r}.") from None
    else:
        step_value = step
    attack = comb.IProp(ckpt.model, eps=eps, target=_target(target), step=step_value,
                        time_limit=time_limit, sub_time_limit=sub_time_limit,
                        warm_start=warm_start, warm_start_time=warm_start_time, seed=seed)
    results, interrupted = _run_exact(attack.attack, pixels, executor=executor, workers=workers,
                                      address=address, description="iprop")
    _exact_report(f"iprop ε={eps:g}", results, labels,
                  {**attack.settings(), "checkpoint": str(checkpoint), "dataset": dataset},
                  json_path, interrupted)


@app.command()
def certify(
    checkpoint: Annotated[Path, typer.Argument(help="An fc-bnn checkpoint ('bnnrobust train fc-bnn').")],
    dataset: DatasetOpt = "mnist",
    eps: Annotated[list[float] | None, typer.Option(
        help="L∞ budgets, e.g. --eps 0.005 0.01 (whole pixel steps: floor(255·ε)).")] = None,
    points: PointsOpt = 100,
    time_limit: TimeLimitOpt = 180.0,
    min_eps: Annotated[bool, typer.Option(
        "--min-eps", help="Also find each point's smallest flipping ε on the pixel grid "
                          "(bisection up to the largest --eps).")] = False,
    workers: WorkersOpt = 1,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    root: RootOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Certified robust accuracy: prove that no perturbation within ε changes the prediction."""
    import functools

    comb = _combinatorial()
    ckpt, pixels, labels = _exact_points(checkpoint, dataset, points, root)
    eps_list = eps or [0.01]
    for value in eps_list:
        comb.eps_steps(value)
    model = comb.export(ckpt.model)
    table = Table("ε", "pixel steps", "certified accuracy", "robust", "attacked", "unknown",
                  "clean accuracy", "time (s)")
    report: dict = {"checkpoint": str(checkpoint), "dataset": dataset, "time_limit": time_limit,
                    "points": len(pixels), "eps": {}}
    interrupted = False
    for value in eps_list:
        fn = functools.partial(comb.certify, model, eps=value, time_limit=time_limit)
        results, interrupted = _run_exact(fn, pixels, executor=executor, workers=workers,
                                          address=address, description=f"certify ε={value:g}")
        correct = [r.prediction == int(labels[i]) for i, r in results]
        robust = [r.status == "robust" and ok for (_, r), ok in zip(results, correct, strict=True)]
        counts = {s: sum(r.status == s for _, r in results) for s in ("robust", "attacked", "unknown")}
        n = max(len(results), 1)
        table.add_row(f"{value:g}", str(comb.eps_steps(value)), f"{sum(robust) / n:.2%}",
                      str(counts["robust"]), str(counts["attacked"]), str(counts["unknown"]),
                      f"{sum(correct) / n:.2%}", f"{sum(r.seconds for _, r in results):.1f}")
        report["eps"][str(value)] = {"certified_accuracy": sum(robust) / n, **counts,
                                     "points": [{"index": i, "label": int(labels[i]), **r.as_dict()}
                                                for i, r in results]}
        if interrupted:
            break
    out.print(table)
    if min_eps and not interrupted:
        fn = functools.partial(comb.minimal_eps, model, max_eps=max(eps_list), time_limit=time_limit)
        results, interrupted = _run_exact(fn, pixels, executor=executor, workers=workers,
                                          address=address, description="minimal ε")
        steps = Table("point", "label", "minimal pixel steps", "ε", "proven", "time (s)")
        for i, r in results:
            steps.add_row(str(i), str(int(labels[i])), "-" if r.steps is None else str(r.steps),
                          "-" if r.eps is None else f"{r.eps:.4f}", "yes" if r.proven else
                          f"no (>= {r.lower})", f"{r.seconds:.2f}")
        out.print(steps)
        report["minimal_eps"] = [{"index": i, "steps": r.steps, "eps": r.eps, "lower": r.lower,
                                  "proven": r.proven, "seconds": r.seconds} for i, r in results]
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1))
    if interrupted:
        raise typer.Exit(130)


register_experiment_commands(app)


def _target(value: str) -> int | str:
    if value in ("second", "untargeted"):
        return value
    try:
        return int(value)
    except ValueError:
        raise BnnRobustError(f"--target must be second, untargeted or a class index, got "
                             f"{value!r}.") from None


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
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
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
