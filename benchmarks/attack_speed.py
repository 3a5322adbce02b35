"""Attack speed on the Galloway CNN (K=64), a batch of 256 MNIST-sized inputs, on this machine.

For PGD-40 and CW-L2-100 it prints two ratios, each against a baseline measured in the same run:

- our time / (steps × one forward+backward to the input): the overhead of our attack loop
  (target: at most 1.1);
- our time / torchattacks' time at equal settings (target: at most 1.0).

Each round times the baseline, ours and torchattacks back to back, and the median over
``--repeats`` rounds is printed, so that machine load hits all alike.
Uses real MNIST test images when the data is present, else random inputs.

    python benchmarks/attack_speed.py [--repeats 3] [--batch 256] [--width 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bnnrobust.attacks import CWL2, PGD
from bnnrobust.errors import BnnRobustError
from bnnrobust.models import build


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (median kept)")
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
    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xg), y), xg)

    print(f"galloway-cnn K={args.width}, batch {args.batch} of {source}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; median over {args.repeats} "
          "rounds, each round timing baseline, ours and torchattacks back to back")
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
        overhead, versus, times = [], [], []
        for _ in range(args.repeats):
            for p in model.parameters():
                p.requires_grad_(False)  # baseline: the least work, gradients to the input only
            one = timed(lambda n=steps: [forward_backward() for _ in range(n)]) / steps
            for p in model.parameters():
                p.requires_grad_(True)  # the attacks get the model as users pass it
            o, t = timed(ours), timed(theirs)
            overhead.append(o / (steps * one))
            versus.append(o / t)
            times.append((one, o, t))
        one, o, t = (statistics.median(v) for v in zip(*times, strict=True))
        print(f"{name:>10}: fwd+bwd {one * 1000:.1f} ms, ours {o:.2f} s, torchattacks {t:.2f} s | "
              f"ours / (steps x fwd+bwd) = {statistics.median(overhead):.2f} (target <= 1.1) | "
              f"ours / torchattacks = {statistics.median(versus):.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
