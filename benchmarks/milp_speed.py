"""Exact-attack speed on Khalil et al.'s fc-bnn networks (MNIST), trained as the paper's specs
train them.

The paper (Gurobi on 64-core nodes, ε = 0.01, the continuous problem, 100 test points, the MILP
time limit of 1800 s): the solver's average runtime is 27 s on 2×100 (every point solved to
optimality) and 777 s on 2×200; those figures are printed beside the continuous runs
(``highs``, ``cpsat-lp``) of the same 100 points only, and only at the paper's limit or where
every point was proven (a shorter limit with timeouts gives a smaller mean that says nothing
about the paper's): the ``cpsat`` runs solve a different problem, the pixel grid.

For each network and backend this script trains (or takes from the checkpoint cache) the
network of ``--spec`` (Figure 2's networks, 2x100 ... 5x100) with the training of its
``--profile`` (paper: BinaryNet.pytorch's main_mnist.py recipe, 100 epochs on all 60,000
images), attacks the first ``--points`` test images toward the class with the second-highest
output and prints how many were proven optimal and the median and mean solve times:

- ``cpsat``: the pixel grid, floor(255·ε) whole pixel steps (2 at ε = 0.01);
- ``highs``: the paper's continuous problem, |p| <= ε exactly, as its big-M MILP;
- ``cpsat-lp``: the same continuous problem by pattern decomposition (LP reachability).

Every result goes through the attack contract, which replays the returned input through the
PyTorch model in its own float32 arithmetic and refuses a result that does not hold there; the
summary gives the largest |reported − model| objective difference per run (soundness).

The defaults are the acceptance run of the exact-attack issue (both widths, both backends, 100
points, 180 s): hours on 2 cores. ``--workers N`` attacks N points at once (one thread each).
``--journal PATH`` keeps every finished point; run the same command again after a kill and it
goes on from there; the same command with ``--report`` attacks nothing and prints the summary
of what the journal holds so far (a run still under way, or one spread over several sessions).

    python benchmarks/milp_speed.py --models 2x100 --backends cpsat-lp highs --points 20

Every network of the paper at both of its budgets (the exact-attack issue's table; the journal
keys each point by network, backend and ε, so one journal can hold the whole table; two runs
side by side, one per core, write one journal each, and ``--report`` reads both as one):

    python benchmarks/milp_speed.py --models 2x100 3x100 2x200 4x100 5x100 2x300 2x400 2x500 \
        --eps 0.01 0.005 --backends cpsat-lp --points 20 \
        --journal benchmarks/journals/networks_cpsat-lp.jsonl
    python benchmarks/milp_speed.py --models ... --backends highs ... \
        --journal benchmarks/journals/networks_highs.jsonl
    python benchmarks/milp_speed.py --models ... --backends cpsat-lp highs ... --report \
        --journal benchmarks/journals/networks_cpsat-lp.jsonl benchmarks/journals/networks_highs.jsonl
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

import torch
from journal import Journal, add_checkpoints_option, benchmark_network, codes

from bnnrobust.attacks.combinatorial import MILPAttack
from bnnrobust.attacks.combinatorial.milp import CONTINUOUS
from bnnrobust.data import load
from bnnrobust.experiments import make_executor, run
from bnnrobust.experiments.measures.base import train_request
from bnnrobust.experiments.parse import load as load_spec
from bnnrobust.experiments.runner import code_version

PAPER_MEAN = {"2x100": 27.0, "2x200": 777.0}
PAPER_LIMIT = 1800.0
SPEC = Path(__file__).resolve().parent.parent / "experiments" / "khalil2019" / "figure2_mnist.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=SPEC,
                        help="the spec whose networks are attacked (Khalil's Figure 2, MNIST)")
    parser.add_argument("--models", nargs="+", default=["2x100", "2x200"],
                        help="network labels of the spec, trained first where not cached (2x100 2x200)")
    parser.add_argument("--profile", default="paper",
                        help="the spec profile whose training is used (paper)")
    parser.add_argument("--backends", nargs="+", default=["cpsat", "cpsat-lp", "highs"],
                        help="cpsat (pixel grid), cpsat-lp and/or highs (continuous)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.01],
                        help="L∞ budgets, each run in turn (0.01)")
    parser.add_argument("--points", type=int, default=100, help="first N test points (100)")
    parser.add_argument("--start", type=int, default=0,
                        help="attack only points START..N-1 of the first N (0): two runs side "
                             "by side share one long run, one journal each (--report reads "
                             "both as one)")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per point (180)")
    parser.add_argument("--hint", default="fgsm", help="starting solution: fgsm or none")
    parser.add_argument("--workers", type=int, default=1, help="points attacked at once (1)")
    add_checkpoints_option(parser)
    parser.add_argument("--journal", type=Path, nargs="+",
                        help="JSON-lines file of finished points; a rerun skips them (with "
                             "--report, several journals are read as one)")
    parser.add_argument("--report", action="store_true",
                        help="attack nothing: print the summary and table of the points the "
                             "journals hold (a run still under way included)")
    args = parser.parse_args()
    journals = args.journal or []
    if not 0 <= args.start < args.points:
        raise SystemExit(f"--start must name one of the first --points {args.points} points "
                         f"(0 to {args.points - 1}), got {args.start}.")
    if args.report and (not journals or not all(path.exists() for path in journals)):
        raise SystemExit(f"--report reads journals: give --journal PATH... of existing ones "
                         f"(got {' '.join(map(str, journals)) or 'none'}).")
    if not args.report and len(journals) > 1:
        raise SystemExit("a run writes one journal: give one --journal PATH (several only with "
                         "--report).")
    # one thread per point, the gradient hint included: with more, PyTorch's thread pool
    # contends with the other workers and a 20-step hint on a 2×100 MLP took 2 s instead of ms
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    profile = spec.profile(args.profile)
    plans = {plan.label: plan for plan in spec.model_plans(args.profile)}
    unknown = [m for m in args.models if m not in plans]
    if unknown:
        raise SystemExit(f"{args.spec} has no network {', '.join(unknown)} in profile "
                         f"{args.profile}; it has {', '.join(plans)}.")
    settings = {k: str(v) for k, v in vars(args).items()
                if k not in ("journal", "checkpoints", "workers", "points", "start", "models",
                             "backends", "eps", "report")}
    settings["spec"] = spec.name  # not its path: a journal moves with the checkout
    journal = Journal.merged(journals, settings)

    x, y = load(spec.dataset, "test", limit=args.points)
    summary = []
    for label in args.models:
        runs = [(eps, backend) for eps in args.eps for backend in args.backends]
        if args.report:  # only what the journal holds: a network it has nothing of is not loaded
            runs = [(eps, b) for eps, b in runs if _finished(args, journal, _name(label, b, eps))]
            if not runs:
                continue
        request = train_request(plans[label], profile, spec.dataset, profile.seeds[0])
        trained = benchmark_network(request, args.checkpoints)
        for eps, backend in runs:
            if not args.report:
                _benchmark(args, journal, x, y, trained, label=label, eps=eps, backend=backend)
            summary.append(_summary(args, journal, trained, label=label, eps=eps,
                                    backend=backend))
            print(_line(summary[-1]), flush=True)
    print(f"\n{spec.dataset}, {args.points} points, {args.time_limit:g} s limit, one thread per "
          f"point, {args.workers} worker(s), hint {args.hint}")
    for row in summary:
        print(_line(row))
    print()
    print(_markdown(summary))


def _name(label: str, backend: str, eps: float) -> str:
    """The journal key of a run, before the point's index."""
    return f"{label} {backend} ε={eps:g}"


def _finished(args: argparse.Namespace, journal: Journal, name: str) -> list[dict]:
    """The journal's records of run ``name`` among the first ``args.points`` points."""
    return [journal.records[f"{name} {i}"] for i in range(args.points)
            if f"{name} {i}" in journal.records]


def _benchmark(args: argparse.Namespace, journal: Journal, x: torch.Tensor, y: torch.Tensor,
               trained, *, label: str, eps: float, backend: str) -> None:
    """Attack points ``args.start`` to ``args.points − 1`` of one network at one ε with one
    backend (points already in the journal are not attacked again), printing each point's
    line."""
    attack = MILPAttack(trained.model.eval(), eps=eps, backend=backend, hint=args.hint,
                        time_limit=args.time_limit)
    name = _name(label, backend, eps)

    def show(i: int, r: dict) -> None:
        bound = "inf" if r["bound"] is None else f"{r['bound']:+.4f}"
        print(f"{name} point {i:3d}: {r['status']:8s} {r['seconds']:7.2f} s  objective "
              f"{r['objective']:+.4f}  bound {bound}  flipped {r['flipped']}", flush=True)

    todo = [i for i in range(args.start, args.points) if f"{name} {i}" not in journal.records]

    code = code_version()

    def keep(j: int, r: dict) -> None:
        journal.add(f"{name} {todo[j]}", {**r, "code": code})
        show(todo[j], r)

    for i in range(args.start, args.points):
        if i not in todo:
            show(i, journal.records[f"{name} {i}"])
    outcome = run(make_executor("local", workers=args.workers),
                  functools.partial(_attack, attack, x, y), todo,
                  progress=False, on_result=keep)
    if outcome.interrupted:
        raise SystemExit("interrupted: the finished points are in the journal")


def _summary(args: argparse.Namespace, journal: Journal, trained, *, label: str, eps: float,
             backend: str) -> dict:
    """One run's summary over the points of it the journal holds."""
    results = _finished(args, journal, _name(label, backend, eps))
    times = [r["seconds"] for r in results]
    optimal = [r["seconds"] for r in results if r["status"] == "optimal"]
    gaps = [abs(r["objective"] - r["model_objective"]) for r in results
            if r.get("model_objective") is not None]
    return {"network": label, "accuracy": trained.metrics.get("final_test_accuracy"),
            "eps": eps, "backend": backend,
            "problem": f"grid ({results[0]['eps_steps']} steps)" if backend == "cpsat"
            else "continuous",
            "proven": len(optimal), "points": len(results), "asked": args.points,
            "flipped": sum(r["flipped"] for r in results),
            "median": statistics.median(times), "mean": statistics.mean(times),
            "gap": max(gaps, default=float("nan")),
            "code": codes(results),
            "paper": paper_mean(label, backend=backend, eps=eps, results=results,
                                time_limit=args.time_limit)}


def paper_mean(label: str, *, backend: str, eps: float, results: list[dict],
               time_limit: float) -> float | None:
    """The paper's mean solve time where it is like with like: the continuous problem at
    ε = 0.01 on the first 100 points, and either the paper's limit (1800 s) or every point
    proven optimal (then the limit cut nothing, and the mean does not depend on it); None
    otherwise (a shorter limit with timeouts makes a smaller mean that says nothing)."""
    like = (backend in CONTINUOUS and eps == 0.01 and len(results) == 100
            and (time_limit >= PAPER_LIMIT or all(r["status"] == "optimal" for r in results)))
    return PAPER_MEAN.get(label) if like else None


def _line(row: dict) -> str:
    """One run's summary as a sentence."""
    return (f"fc-bnn {row['network']} ({row['accuracy']:.2%}) ε={row['eps']:g} "
            f"{row['backend']:8s} {row['problem']}: proven optimal {row['proven']}/"
            f"{row['points']}{_partial(row)}, flipped {row['flipped']}, time median {row['median']:.2f} s, "
            f"mean {row['mean']:.2f} s, largest |reported − float32 model| {row['gap']:.1e}, "
            f"code {row['code']}"
            + (f" (paper, same problem with Gurobi on its machine: mean {row['paper']:g} s)"
               if row["paper"] is not None else ""))


def _partial(row: dict) -> str:
    """A note on a run the journal holds only part of."""
    return "" if row["points"] == row["asked"] else f" ({row['points']} of {row['asked']} done)"


def _markdown(rows: list[dict]) -> str:
    """Every run as one Markdown table."""
    lines = ["| network | test accuracy | ε | backend | problem | proven optimal | flipped | "
             "median (s) | mean (s) | largest \\|reported − float32\\| | paper's mean (s) | code |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['accuracy']:.2%} | {r['eps']:g} | {r['backend']} | "
                     f"{r['problem']} | {r['proven']}/{r['points']}{_partial(r)} | {r['flipped']} | "
                     f"{r['median']:.2f} | {r['mean']:.2f} | {r['gap']:.1e} | "
                     f"{'' if r['paper'] is None else format(r['paper'], 'g')} | {r['code']} |")
    return "\n".join(lines)


def _attack(attack: MILPAttack, x, y, index: int) -> dict:
    """One point's record through the attack contract (``run`` on a batch of one)."""
    return attack.run(x[index:index + 1], y[index:index + 1]).extra["points"][0]


if __name__ == "__main__":
    main()
