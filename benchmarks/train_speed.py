"""Epoch time of the Galloway CNN (K=64) on MNIST: binary (model B) against full precision (A).

Both models train on the same batches in the same run, alternating, so that machine load hits
both alike; the script prints the time per epoch of each and the ratio binary / full
(target: at most 1.5).

    python benchmarks/train_speed.py                 # a full epoch (469 batches of 128)
    python benchmarks/train_speed.py --batches 100   # a quicker estimate
"""

from __future__ import annotations

import argparse
import time

import torch

from bnnrobust.data import load
from bnnrobust.models import build
from bnnrobust.train.loop import loss_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64, help="K, kernels in layer 1 (64)")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches to time per model (default: one full epoch)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (128)")
    parser.add_argument("--precision", default="binary",
                        help="precision compared with full: binary, scaled or stochastic")
    args = parser.parse_args()

    x, y = load("mnist", "train")
    n_batches = args.batches or (len(x) + args.batch_size - 1) // args.batch_size
    torch.manual_seed(0)
    models = {p: build("galloway-cnn", precision=p, width=args.width)
              for p in ("full", args.precision)}
    opts = {p: torch.optim.Adam(m.parameters(), lr=1e-3) for p, m in models.items()}
    seconds = dict.fromkeys(models, 0.0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for b in range(n_batches):
        idx = order[(b * args.batch_size) % len(x):][: args.batch_size]
        xb, yb = x[idx], y[idx]
        for p, model in models.items():  # alternate: both see the same machine load
            model.train()
            start = time.perf_counter()
            opts[p].zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opts[p].step()
            seconds[p] += time.perf_counter() - start
    per_epoch = {p: s / n_batches * ((len(x) + args.batch_size - 1) // args.batch_size)
                 for p, s in seconds.items()}
    print(f"galloway-cnn K={args.width}, MNIST, batch {args.batch_size}, {n_batches} batches "
          f"timed per model, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for p, t in per_epoch.items():
        print(f"  {p:>10}: {t:7.1f} s per epoch ({seconds[p] / n_batches * 1000:.1f} ms/batch)")
    ratio = per_epoch[args.precision] / per_epoch["full"]
    print(f"ratio {args.precision}/full: {ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
