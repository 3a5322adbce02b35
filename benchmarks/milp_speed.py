"""Exact-attack speed on Khalil et al.'s fc-bnn (MNIST), against the paper's Gurobi figures.

The paper (Gurobi, 3-minute limit, ε = 0.01): 2×100 solved to optimality in 27 s on average,
2×200 in 777 s. This script trains (or takes from the cache) an fc-bnn, runs the CP-SAT attack
on the 1/255 pixel grid (floor(255·ε) = 2 pixel steps at ε = 0.01) on the first ``--points``
test images with target = second-highest class, and prints how many were proven optimal and
the median and mean solve times.

    python benchmarks/milp_speed.py --width 100 --points 100 --time-limit 180
"""

from __future__ import annotations

import argparse
import statistics

from bnnrobust.attacks.combinatorial import MILPAttack
from bnnrobust.data import load_arrays
from bnnrobust.train import TrainRequest, train_cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2, help="hidden layers (2)")
    parser.add_argument("--width", type=int, default=100, help="neurons per layer (100)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (10)")
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument("--eps", type=float, default=0.01, help="L∞ budget (0.01)")
    parser.add_argument("--points", type=int, default=100, help="first N test points (100)")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per point")
    parser.add_argument("--threads", type=int, default=1, help="CP-SAT workers (1)")
    parser.add_argument("--backend", default="cpsat", help="cpsat (pixel grid) or highs (continuous)")
    parser.add_argument("--hint", default="fgsm", help="starting solution: fgsm or none")
    args = parser.parse_args()

    request = TrainRequest("fc-bnn", {"depth": args.depth, "width": args.width}, args.dataset,
                           epochs=args.epochs)
    trained = train_cached(request, progress=False)
    attack = MILPAttack(trained.model, eps=args.eps, backend=args.backend, hint=args.hint,
                        time_limit=args.time_limit, threads=args.threads)
    pixels, _ = load_arrays(args.dataset, "test")
    pixels = pixels[: args.points].reshape(args.points, -1)
    results = []
    for i, x in enumerate(pixels):
        r = attack.attack(x)
        results.append(r)
        print(f"point {i:3d}: {r.status:8s} {r.seconds:7.2f} s  objective {r.objective:+.4f}  "
              f"bound {r.bound:+.4f}  flipped {r.flipped}", flush=True)
    optimal = [r.seconds for r in results if r.status == "optimal"]
    times = [r.seconds for r in results]
    acc = trained.metrics.get("final_test_accuracy")
    print(f"\nfc-bnn {args.depth}x{args.width} ({args.dataset}, test accuracy {acc:.2%}), "
          f"ε={args.eps} = {results[0].eps_steps} pixel steps, {args.points} points, "
          f"{args.time_limit:g} s limit, {args.threads} thread(s), hint {args.hint}, "
          + ("CP-SAT on the pixel grid" if args.backend == "cpsat" else
             f"HiGHS on the continuous problem (|p| <= {args.eps})"))
    print(f"proven optimal: {len(optimal)}/{len(results)}; flipped: "
          f"{sum(r.flipped for r in results)}")
    print(f"solve time over all points: median {statistics.median(times):.2f} s, mean "
          f"{statistics.mean(times):.2f} s (paper, Gurobi, 2x100: mean 27 s; 2x200: 777 s)")
    if optimal:
        print(f"over proven points: median {statistics.median(optimal):.2f} s, mean "
              f"{statistics.mean(optimal):.2f} s")


if __name__ == "__main__":
    main()
