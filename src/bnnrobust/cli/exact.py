"""The exact attacks on a fully connected BNN, point by point over an executor: ``milp``,
``iprop``, ``certify``."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.table import Table

from bnnrobust.attacks import Attack, AttackResult
from bnnrobust.attacks.catalogue import entry
from bnnrobust.cli.options import (
    AddressOpt,
    DatasetOpt,
    EpsListOpt,
    ExecutorOpt,
    JsonOpt,
    RecordsOpt,
    RootOpt,
    SaveAdvOpt,
    WorkersOpt,
    check_count,
    check_eps,
    check_keep_options,
    check_output_file,
    err,
    out,
)
from bnnrobust.cli.source import Source, load_model, takes_model
from bnnrobust.data import load
from bnnrobust.errors import BnnRobustError
from bnnrobust.evaluate import certified, concatenate, solve_summary
from bnnrobust.evaluate.records import (
    result_records,
    save_adversarial,
    write_records,
)
from bnnrobust.experiments import check_executor, make_executor, run
from bnnrobust.files import atomic_write

PointsOpt = Annotated[int, typer.Option("--points", help="Attack the first N test points.")]
TimeLimitOpt = Annotated[float, typer.Option(
    "--time-limit", help="Seconds per point (the paper: 180).")]
TargetOpt = Annotated[str, typer.Option(
    "--target", help="second (the class with the second-highest output, the paper's), "
                     "untargeted (best over every class) or a class index.")]


def parse_target(value: str) -> int | str:
    """``--target``: second, untargeted or a class index."""
    if value in ("second", "untargeted"):
        return value
    try:
        return int(value)
    except ValueError:
        raise BnnRobustError(f"--target must be second, untargeted or a class index, got "
                             f"{value!r}.") from None


def _points(source: Source, dataset: str, points: int, root: Path | None):
    """The model (on the CPU, where the solvers run) and the first ``points`` test points;
    the structure recognized in the user's own BNN is printed."""
    source.check()
    check_count("--points", points)
    x, y = load(dataset, "test", root=root, limit=points)
    loaded = load_model(source, device="cpu", sample=x)
    if source.external:
        from bnnrobust.attacks.combinatorial.recognize import recognize

        _, structure = recognize(loaded.model, example=x[:8])
        out.print("recognized a fully connected BNN:\n  " + "\n  ".join(structure),
                  highlight=False)
    return loaded, x, y


def _attack_one(attack: Attack, x: torch.Tensor, y: torch.Tensor,
                starts: Mapping[int, torch.Tensor], index: int) -> AttackResult:
    if index in starts:
        return attack.run(x[index:index + 1], y[index:index + 1], start=starts[index])
    return attack.run(x[index:index + 1], y[index:index + 1])


def _run_points(attack: Attack, x: torch.Tensor, y: torch.Tensor, *, executor: str,
                workers: int, address: str | None, description: str,
                starts: Mapping[int, torch.Tensor] | None = None,
                ) -> tuple[AttackResult | None, list[int], bool]:
    """``attack`` on every point through the executor: the combined result (None when no
    point finished), the indices it covers, and whether the run was interrupted.
    ``starts``: a starting input (shape ``(1, ...)``) for some points, by index (an exact
    attack's ``run(..., start=)``)."""
    outcome = run(make_executor(executor, workers=workers, address=address),
                  functools.partial(_attack_one, attack, x, y, starts or {}),
                  list(range(len(x))), description=description)
    if outcome.interrupted:
        err.print(f"interrupted: keeping the {len(outcome.results)} finished point(s).")
    done = sorted(outcome.results)
    result = concatenate([outcome.results[i] for i in done]) if done else None
    return result, done, outcome.interrupted


def _records(result: AttackResult | None, done: list[int], x: torch.Tensor,
             y: torch.Tensor) -> list[dict[str, Any]]:
    """Per point: index, label, the attack's record and the perturbation (on [0, 1])."""
    if result is None:
        return []
    records = result.extra["points"]
    delta = (result.x_adv - x[done]).flatten(1)
    return [{"index": i, "label": int(y[i]), **p, "perturbation": d.tolist()}
            for i, p, d in zip(done, records, delta, strict=True)]


def _keep(found: dict[float, tuple[AttackResult | None, list[int]]], attack: str,
          y: torch.Tensor, *, records: Path | None, save_adv: Path | None) -> None:
    """The per-sample records and adversarial inputs the options ask for: per ε, the points
    done (``found``: ε -> (result, their indices))."""
    rows, arrays = [], {}
    for eps, (result, done) in found.items():
        if result is None:
            continue
        pred = torch.tensor([p["prediction"] for p in result.extra["points"]])
        rows += result_records(result, attack=attack, eps=eps, indices=done, labels=y[done],
                               clean_prediction=pred)
        arrays[f"x_adv_eps={eps:g}"] = result.x_adv.numpy()
        arrays[f"index_eps={eps:g}"] = np.array(done)
    if records is not None:
        write_records(rows, records)
        out.print(f"records: {records.resolve()}", highlight=False)
    if save_adv is not None:
        save_adversarial(arrays, save_adv)
        out.print(f"adversarial inputs: {save_adv.resolve()}", highlight=False)


def _report(name: str, result: AttackResult | None, records: list[dict[str, Any]],
            settings: dict, json_path: Path | None, interrupted: bool) -> None:
    table = Table("point", "label", "pred", "target", "status", "objective", "bound", "flip",
                  "time (s)")
    for r in records:
        table.add_row(str(r["index"]), str(r["label"]), str(r["prediction"]), str(r["target"]),
                      r["status"], f"{r['objective']:+.4f}",
                      "-" if r["bound"] is None else f"{r['bound']:+.4f}",
                      "yes" if r["flipped"] else "no", f"{r['seconds']:.2f}")
    if len(records) <= 25:
        out.print(table)
    if result is not None:
        s = solve_summary(result)
        out.print(f"{name}: {s.points} points, proven optimal {s.proven}, flipped {s.flipped}; "
                  f"time median {s.median_seconds:.2f} s, mean {s.mean_seconds:.2f} s")
    if json_path is not None:
        atomic_write(json_path, json.dumps({"settings": settings, "interrupted": interrupted,
                                            "points": records}, indent=1))
    if interrupted:
        raise typer.Exit(130)


@takes_model
def milp(
    source: Source,
    dataset: DatasetOpt = "mnist",
    eps: Annotated[float, typer.Option(
        "--eps", help="L∞ budget on [0, 1], in (0, 1]. cpsat allows floor(255·ε) whole pixel "
                      "steps; highs exactly ε.")] = 0.01,
    points: PointsOpt = 100,
    time_limit: TimeLimitOpt = 180.0,
    backend: Annotated[str, typer.Option(
        help="cpsat (OR-Tools CP-SAT on the 1/255 pixel grid, exact for 8-bit images), "
             "cpsat-lp (the paper's continuous problem by the same pattern decomposition, "
             "LP reachability) or highs (the paper's continuous big-M MILP, HiGHS through "
             "OR-Tools MathOpt).")] = "cpsat",
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
    records: RecordsOpt = None,
    save_adv: SaveAdvOpt = None,
) -> None:
    """The exact MILP attack (Khalil et al. 2019): maximize f_target − f_prediction per point,
    on an fc-bnn ('bnnrobust train fc-bnn') or Galloway's convolutional B model (continuous
    backends only)."""
    check_output_file("--json", json_path)
    check_keep_options(records, save_adv)
    params = {"eps": eps, "target": parse_target(target), "backend": backend,
              "time_limit": time_limit, "threads": threads, "hint": hint, "seed": seed}
    entry("milp").check(params)
    check_executor(executor, workers=workers, address=address)
    loaded, x, y = _points(source, dataset, points, root)
    attack = entry("milp").make(loaded.model, params)
    result, done, interrupted = _run_points(attack, x, y, executor=executor, workers=workers,
                                            address=address, description=f"milp ({backend})")
    _keep({eps: (result, done)}, "milp", y, records=records, save_adv=save_adv)
    _report(f"milp {backend} ε={eps:g}", result, _records(result, done, x, y),
            {**attack.settings(), "model": loaded.name, "dataset": dataset},
            json_path, interrupted)


@takes_model
def iprop(
    source: Source,
    dataset: DatasetOpt = "mnist",
    eps: Annotated[float, typer.Option(
        "--eps", help="L∞ budget on [0, 1], in (0, 1] (floor(255·ε) pixel steps).")] = 0.01,
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
    records: RecordsOpt = None,
    save_adv: SaveAdvOpt = None,
) -> None:
    """IProp (Khalil et al. 2019): integer target propagation, a fast local search, on an
    fc-bnn."""
    check_output_file("--json", json_path)
    check_keep_options(records, save_adv)
    if step != "adaptive":
        try:
            step_value: int | str = int(step)
        except ValueError:
            raise BnnRobustError(f"--step must be 'adaptive' or a whole number, got {step!r}.") from None
    else:
        step_value = step
    params = {"eps": eps, "target": parse_target(target), "step": step_value,
              "time_limit": time_limit, "sub_time_limit": sub_time_limit,
              "warm_start": warm_start, "warm_start_time": warm_start_time, "seed": seed}
    entry("iprop").check(params)
    check_executor(executor, workers=workers, address=address)
    loaded, x, y = _points(source, dataset, points, root)
    attack = entry("iprop").make(loaded.model, params)
    result, done, interrupted = _run_points(attack, x, y, executor=executor, workers=workers,
                                            address=address, description="iprop")
    _keep({eps: (result, done)}, "iprop", y, records=records, save_adv=save_adv)
    _report(f"iprop ε={eps:g}", result, _records(result, done, x, y),
            {**attack.settings(), "model": loaded.name, "dataset": dataset},
            json_path, interrupted)


def _minimal(integer, max_eps: float, backend: str, tolerance: float, time_limit: float,
             x: torch.Tensor, index: int):
    from bnnrobust.attacks.combinatorial import minimal_eps
    from bnnrobust.attacks.combinatorial.attack import grid_pixels

    return minimal_eps(integer, grid_pixels(x[index:index + 1])[0], max_eps=max_eps,
                       backend=backend, tolerance=tolerance, time_limit=time_limit)


@takes_model
def certify(
    source: Source,
    dataset: DatasetOpt = "mnist",
    eps: EpsListOpt = None,
    points: PointsOpt = 100,
    time_limit: TimeLimitOpt = 180.0,
    backend: Annotated[str, typer.Option(
        help="cpsat (the 1/255 pixel grid, floor(255·ε) whole steps), cpsat-lp (the paper's "
             "continuous problem, |p| <= ε, by pattern decomposition) or highs (the same "
             "continuous problem as the big-M MILP).")] = "cpsat",
    bounds_first: Annotated[bool, typer.Option(
        "--bounds-first/--no-bounds-first", help="Settle what interval and LP bounds can "
                                                 "before the exact search (the table counts "
                                                 "what settled each point).")] = True,
    min_eps: Annotated[bool, typer.Option(
        "--min-eps", help="Also find each point's smallest flipping ε (bisection up to the "
                          "largest --eps; whole pixel steps with cpsat, to --tolerance on the "
                          "continuous box).")] = False,
    tolerance: Annotated[float, typer.Option(
        help="Width of the minimal-ε bracket on the continuous box (cpsat-lp, highs).")] = 1e-4,
    workers: WorkersOpt = 1,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    root: RootOpt = None,
    json_path: JsonOpt = None,
    records: RecordsOpt = None,
    save_adv: SaveAdvOpt = None,
) -> None:
    """Certified robust accuracy of an fc-bnn or Galloway's B model: prove that no
    perturbation within ε changes the prediction (default ε 0.01; on the 1/255 pixel grid,
    floor(255·ε) whole steps, unless --backend names a continuous one). Several ε are
    certified smallest first, and a counter-example found at one is tried first at every
    larger ε (it lies within the larger box): a point broken at ε is never reported unknown
    at a larger ε."""
    check_output_file("--json", json_path)
    check_keep_options(records, save_adv)
    # smallest first: a counter-example within ε' is one within every ε > ε'
    eps_list = sorted(check_eps(eps, [0.01]))
    params = {"time_limit": time_limit, "backend": backend, "bounds": bounds_first}
    for value in eps_list:
        entry("certify").check({"eps": value, **params})
    if min_eps and not (math.isfinite(tolerance) and tolerance > 0):
        raise BnnRobustError(f"--tolerance must be a finite number > 0, got {tolerance}.")
    check_executor(executor, workers=workers, address=address)
    loaded, x, y = _points(source, dataset, points, root)
    from bnnrobust.attacks.combinatorial import eps_steps

    table = Table("ε", "problem", "certified", "robust", "attacked", "unknown",
                  "settled: smaller ε/interval/LP/exact", "clean", "time (s)")
    report: dict = {"model": loaded.name, "dataset": dataset, "time_limit": time_limit,
                    "backend": backend, "bounds": bounds_first, "points": len(x), "eps": {}}
    interrupted = False
    summaries: list[str] = []
    found: dict[int, torch.Tensor] = {}  # a counter-example per point, from a smaller ε
    kept: dict[float, tuple[AttackResult | None, list[int]]] = {}
    for value in eps_list:
        attack = entry("certify").make(loaded.model, {"eps": value, **params})
        result, done, interrupted = _run_points(attack, x, y, executor=executor,
                                                workers=workers, address=address,
                                                description=f"certify ε={value:g}",
                                                starts=found)
        kept[value] = (result, done)
        if result is not None:
            for i, status, adv in zip(done, result.status, result.x_adv, strict=True):
                if status == "attacked":
                    found.setdefault(i, adv[None])
            c = certified(result, y[done])
            by = c.settled_by
            where = f"{eps_steps(value)} pixel steps" if backend == "cpsat" \
                else f"continuous, {backend}"
            table.add_row(f"{value:g}", where, f"{c.certified_accuracy:.2%}",
                          str(c.robust), str(c.attacked), str(c.unknown),
                          f"{by['start']} / {by['interval']} / {by['lp']} / {by['exact']}",
                          f"{c.clean_accuracy:.2%}", f"{float(result.point_seconds.sum()):.1f}")
            summaries.append(f"certify ε={value:g} ({where}): certified accuracy "
                             f"{c.certified_accuracy:.2%} (robust {c.robust}, attacked "
                             f"{c.attacked}, unknown {c.unknown} of {c.points} points; settled "
                             f"by a smaller ε's counter-example {by['start']}, interval "
                             f"{by['interval']}, LP {by['lp']}, exact {by['exact']}; clean "
                             f"{c.clean_accuracy:.2%})")
            per_point = result.extra["points"]
            report["eps"][str(value)] = {
                **c.as_dict(), "points": [{"index": i, "label": int(y[i]), **p}
                                          for i, p in zip(done, per_point, strict=True)]}
        if interrupted:
            break
    out.print(table)
    for line in summaries:
        out.print(line, highlight=False)
    _keep(kept, "certify", y, records=records, save_adv=save_adv)
    if min_eps and not interrupted:
        fn = functools.partial(_minimal, attack.integer, max(eps_list), backend, tolerance,
                               time_limit, x)
        outcome = run(make_executor(executor, workers=workers, address=address), fn,
                      list(range(len(x))), description="minimal ε")
        interrupted = outcome.interrupted
        digits = 4 if backend == "cpsat" else max(4, 1 - math.floor(math.log10(tolerance)))
        steps = Table("point", "label", "minimal ε in", "pixel steps", "proven", "probes",
                      "time (s)")
        for i, r in sorted(outcome.results.items()):
            upper = "-" if r.upper is None else f"{r.upper:.{digits}f}"
            steps.add_row(str(i), str(int(y[i])), f"({r.lower:.{digits}f}, {upper}]",
                          "-" if r.steps is None or backend != "cpsat" else str(r.steps),
                          "yes" if r.proven else "no", str(r.probes), f"{r.seconds:.2f}")
        out.print(steps)
        report["minimal_eps"] = [{"index": i, **r.as_dict()}
                                 for i, r in sorted(outcome.results.items())]
    if json_path is not None:
        atomic_write(json_path, json.dumps(report, indent=1))
    if interrupted:
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command()(milp)
    app.command()(iprop)
    app.command()(certify)
