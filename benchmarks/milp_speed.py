"""Exact-attack speed on Khalil et al.'s fc-bnn (MNIST).

The paper (Gurobi, 3-minute limit, ε = 0.01, the continuous problem): 2×100 solved to optimality
in 27 s on average, 2×200 in 777 s; those figures are printed beside the continuous runs
(``highs``, ``cpsat-lp``) only: the ``cpsat`` runs solve a different problem, the pixel grid.

For each width and backend this script trains (or takes from the cache) an fc-bnn, attacks the
first ``--points`` test images toward the class with the second-highest output and prints how
many were proven optimal and the median and mean solve times:

- ``cpsat``: the pixel grid, floor(255·ε) whole pixel steps (2 at ε = 0.01);
- ``highs``: the paper's continuous problem, |p| <= ε exactly, as its big-M MILP;
- ``cpsat-lp``: the same continuous problem by pattern decomposition (LP reachability).

The defaults are the acceptance run of the exact-attack issue (both widths, both backends, 100
points, 180 s): hours on 2 cores. ``--workers N`` attacks N points at once (one thread each).
``--journal PATH`` keeps every finished point; run the same command again after a kill and it
goes on from there.

    python benchmarks/milp_speed.py --widths 100 --backends cpsat --points 20
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

from journal import Journal

from bnnrobust.attacks.combinatorial import MILPAttack
from bnnrobust.attacks.combinatorial.milp import CONTINUOUS
from bnnrobust.data import load
from bnnrobust.experiments import make_executor, run
from bnnrobust.train import TrainRequest, train_cached

PAPER_MEAN = {100: 27.0, 200: 777.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2, help="hidden layers (2)")
    parser.add_argument("--widths", type=int, nargs="+", default=[100, 200],
                        help="neurons per layer (100 200)")
    parser.add_argument("--backends", nargs="+", default=["cpsat", "highs"],
                        help="cpsat (pixel grid) and/or highs (continuous)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (10)")
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument("--eps", type=float, default=0.01, help="L∞ budget (0.01)")
    parser.add_argument("--points", type=int, default=100, help="first N test points (100)")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per point (180)")
    parser.add_argument("--hint", default="fgsm", help="starting solution: fgsm or none")
    parser.add_argument("--workers", type=int, default=1, help="points attacked at once (1)")
    parser.add_argument("--journal", type=Path,
                        help="JSON-lines file of finished points; a rerun skips them")
    args = parser.parse_args()
    settings = {k: v for k, v in vars(args).items() if k not in ("journal", "workers", "points",
                                                                  "widths", "backends")}
    journal = Journal(args.journal, settings)

    x, y = load(args.dataset, "test", limit=args.points)
    summary = []
    for width in args.widths:
        trained = train_cached(TrainRequest("fc-bnn", {"depth": args.depth, "width": width},
                                            args.dataset, epochs=args.epochs), progress=False)
        acc = trained.metrics.get("final_test_accuracy")
        for backend in args.backends:
            attack = MILPAttack(trained.model, eps=args.eps, backend=backend, hint=args.hint,
                                time_limit=args.time_limit)
            name = f"{args.depth}x{width} {backend}"

            def show(i: int, r: dict, name: str = name) -> None:
                bound = "inf" if r["bound"] is None else f"{r['bound']:+.4f}"
                print(f"{name} point {i:3d}: {r['status']:8s} {r['seconds']:7.2f} s  objective "
                      f"{r['objective']:+.4f}  bound {bound}  flipped {r['flipped']}", flush=True)

            todo = [i for i in range(args.points) if f"{name} {i}" not in journal.records]

            def keep(j: int, r: dict, name: str = name, todo: list = todo) -> None:
                journal.add(f"{name} {todo[j]}", r)
                show(todo[j], r)

            for i in range(args.points):
                if i not in todo:
                    show(i, journal.records[f"{name} {i}"])
            outcome = run(make_executor("local", workers=args.workers),
                          functools.partial(_attack, attack, x, y), todo,
                          progress=False, on_result=keep)
            if outcome.interrupted:
                raise SystemExit("interrupted: the finished points are in the journal")
            results = [journal.records[f"{name} {i}"] for i in range(args.points)]
            times = [r["seconds"] for r in results]
            optimal = [r["seconds"] for r in results if r["status"] == "optimal"]
            summary.append(
                f"fc-bnn {args.depth}x{width} ({args.dataset}, {acc:.2%}) {backend:8s} "
                + (f"grid, floor(255·ε) = {results[0]['eps_steps']} steps" if backend == "cpsat"
                   else f"continuous, |p| <= {args.eps:g}")
                + f": proven optimal {len(optimal)}/{len(results)}, flipped "
                f"{sum(r['flipped'] for r in results)}, time median "
                f"{statistics.median(times):.2f} s, "
                f"mean {statistics.mean(times):.2f} s"
                + (f" (paper, same problem with Gurobi on its machine: mean "
                   f"{PAPER_MEAN[width]:g} s)" if backend in CONTINUOUS and width in PAPER_MEAN
                   else ""))
            print(summary[-1], flush=True)
    print(f"\nε={args.eps}, {args.points} points, {args.time_limit:g} s limit, one thread per "
          f"point, {args.workers} worker(s), hint {args.hint}")
    for line in summary:
        print(line)


def _attack(attack: MILPAttack, x, y, index: int) -> dict:
    """One point's record through the attack contract (``run`` on a batch of one)."""
    return attack.run(x[index:index + 1], y[index:index + 1]).extra["points"][0]


if __name__ == "__main__":
    main()
