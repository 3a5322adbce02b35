"""Soundness of the continuous (HiGHS) MILP attack in the model's own float32 arithmetic.

Trains (or takes from the cache) Khalil et al.'s quick-profile fc-bnn (2×100, BinaryNet.pytorch
``main_mnist.py`` layers and recipe, 2 epochs on 10,000 MNIST images), attacks the first
``--points`` test images at ``--eps`` with a continuous backend (``--backend``: ``highs``, the
big-M MILP, or ``cpsat-lp``, the pattern decomposition) and prints, per point, the objective
f_target − f_prediction the solver reports beside the one the PyTorch model computes on the
returned image, and the largest difference. The attack itself refuses a result that does not hold
in the model (``ExactAttack.replay``); this script shows how close the two are.

    python benchmarks/exact_soundness.py --points 8 --eps 0.01 --time-limit 30 --backend highs
"""

from __future__ import annotations

import argparse

import torch

from bnnrobust.attacks.combinatorial import MILPAttack
from bnnrobust.data import load
from bnnrobust.train import TrainRequest, train_cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=8, help="first N test points (8)")
    parser.add_argument("--eps", type=float, default=0.01, help="L∞ budget (0.01)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per point (30)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (2)")
    parser.add_argument("--backend", default="highs", choices=["highs", "cpsat-lp"],
                        help="continuous backend (highs)")
    args = parser.parse_args()

    request = TrainRequest("fc-bnn", {"depth": 2, "width": 100, "recipe": "binarynet"}, "mnist",
                           epochs=args.epochs, batch_size=64, lr=0.01, clip_weights=True,
                           train_limit=10000, schedule="binarynet-mnist")
    model = train_cached(request, progress=False).model.eval()
    x, y = load("mnist", "test", limit=args.points)
    result = MILPAttack(model, eps=args.eps, backend=args.backend, hint="fgsm",
                        time_limit=args.time_limit).run(x, y)
    with torch.no_grad():
        logits = model(result.x_adv).double()
    worst = 0.0
    for i, point in enumerate(result.extra["points"]):
        computed = float(logits[i, point["target"]] - logits[i, point["prediction"]])
        worst = max(worst, abs(computed - point["objective"]))
        print(f"point {i}: {point['status']:8s} reported {point['objective']:+.6f}  model "
              f"{computed:+.6f}  flipped {bool(result.success[i])}", flush=True)
    print(f"largest |reported − float32 model| objective difference: {worst:.2e} "
          f"({args.backend}, {args.points} points, ε = {args.eps:g}, {args.time_limit:g} s per "
          "point)")


if __name__ == "__main__":
    main()
