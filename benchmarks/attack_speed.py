"""Attack speed on the Galloway CNN (K=64), a batch of 256 MNIST-sized inputs, on this machine.

For PGD-40 and CW-L2-100 it prints two ratios, each against a baseline measured in the same run:

- our time / (steps × one forward+backward to the input): the overhead of our attack loop
  (target: at most 1.1);
- our time / torchattacks' time at equal settings (target: at most 1.0).

Runs alternate between the contenders and the best of ``--repeats`` is kept, so that machine
load hits all alike. Uses real MNIST test images when the data is present, else random inputs.

    python benchmarks/attack_speed.py [--repeats 3] [--batch 256] [--width 64]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bnnrobust.attacks import CWL2, PGD
from bnnrobust.errors import BnnRobustError
from bnnrobust.models import build


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (best kept)")
    parser.add_argument("--batch", type=int, default=256, help="inputs per batch (256)")
    parser.add_argument("--width", type=int, default=64, help="K of the Galloway CNN (64)")
    args = parser.parse_args()
    import torchattacks

    torch.manual_seed(0)
    model = build("galloway-cnn", precision="full", width=args.width).eval()
    try:
        from bnnrobust.data import load

        x, y = load("mnist", "test", limit=args.batch)
        source = "MNIST test images"
    except BnnRobustError:
        x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
        source = "random inputs (MNIST not found)"
    for p in model.parameters():
        p.requires_grad_(False)  # baseline: the least work, gradients to the input only

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xg), y), xg)

    one = best_time(lambda: [forward_backward() for _ in range(5)], args.repeats) / 5
    for p in model.parameters():
        p.requires_grad_(True)  # the attacks must cope with a trainable model as users pass it
    print(f"galloway-cnn K={args.width}, batch {args.batch} of {source}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(f"one forward+backward to the input: {one * 1000:.1f} ms")

    contenders = {
        "PGD-40": (
            40,
            lambda: PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=True)(x, y),
            lambda: torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=True)(x, y),
        ),
        "CW-L2-100": (
            100,
            lambda: CWL2(model, c=1.0, steps=100, lr=0.01, binary_search_steps=1,
                         abort_early=False)(x, y),
            lambda: torchattacks.CW(model, c=1.0, kappa=0, steps=100, lr=0.01)(x, y),
        ),
    }
    for name, (steps, ours, theirs) in contenders.items():
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):  # alternate
            ours_t.append(best_time(ours, 1))
            theirs_t.append(best_time(theirs, 1))
        o, t = min(ours_t), min(theirs_t)
        print(f"{name:>10}: ours {o:6.2f} s, torchattacks {t:6.2f} s | "
              f"ours / (steps x fwd+bwd) = {o / (steps * one):.2f} (target <= 1.1) | "
              f"ours / torchattacks = {o / t:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
