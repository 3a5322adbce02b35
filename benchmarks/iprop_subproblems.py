"""IProp on the paper's continuous problem: how its result depends on the subproblem time limit.

Khalil et al. give IProp 10 s per layer-to-layer subproblem (9) and per problem (10) inside a
180 s budget; the quick profiles scale both down. This script trains (or takes from the cache)
the quick-profile fc-bnn of Khalil et al. (2×100, BinaryNet.pytorch ``main_mnist.py`` layers and
recipe, 2 epochs on 10,000 MNIST images), runs IProp (the paper's pseudocode: adaptive step,
our options off, zero start, ``domain="continuous"``, target = second-ranked class) on the first
``--points`` test images at ``--eps`` once per subproblem limit, and prints per point the
starting objective f_target − f_prediction, the final one, and the iterations made.

    python benchmarks/iprop_subproblems.py --points 3 --eps 0.01 --time-limit 30 --sub 0.11 10
"""

from __future__ import annotations

import argparse

import numpy as np

from bnnrobust.attacks.combinatorial import IProp
from bnnrobust.data import load_arrays
from bnnrobust.train import TrainRequest, train_cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=3, help="first N test points (3)")
    parser.add_argument("--eps", type=float, default=0.01, help="L∞ budget (0.01)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per point (30)")
    parser.add_argument("--sub", type=float, nargs="+", default=[0.11, 10.0],
                        help="subproblem limits to compare, seconds (0.11 10)")
    args = parser.parse_args()

    request = TrainRequest("fc-bnn", {"depth": 2, "width": 100, "recipe": "binarynet"}, "mnist",
                           epochs=2, batch_size=64, lr=0.01, clip_weights=True,
                           train_limit=10000, schedule="binarynet-mnist")
    model = train_cached(request, progress=False).model.eval()
    images, _ = load_arrays("mnist", "test")
    print(f"IProp, continuous problem, ε = {args.eps}, {args.time_limit:g} s per point")
    print("point  sub-limit  start      final      iterations")
    for i in range(args.points):
        pixels = images[i].reshape(-1).astype(np.int64)
        for sub in args.sub:
            attack = IProp(model, eps=args.eps, time_limit=args.time_limit, sub_time_limit=sub,
                           domain="continuous")
            result = attack.attack_point(pixels, target="second")
            print(f"{i:5d}  {sub:8.2f}s  {result.trace[0][1]:9.3f}  {result.objective:9.3f}  "
                  f"{result.iterations:10d}", flush=True)


if __name__ == "__main__":
    main()
