"""What the mix of batch norm's running statistics alone changes in an adversarially trained
binary model: FGSM accuracy with the statistics it was trained with, with statistics of clean
batches only, and with the mix of passes of Galloway et al.'s ``mnist_attack.py`` TF graph
(per batch five clean passes, one random-ε FGSM example, one FGSM ε = 0.3 example: see
``running_stats = "mnist-attack"`` in :mod:`bnnrobust.attacks.adversarial_training`).

The weights are not changed; the two recomputed statistics are cumulative averages over the
same ``--batches`` training batches of 128 (the final weights stand for the last steps of
training, which decide TF's running statistics).

Usage: ``python benchmarks/bn_statistics_effect.py CHECKPOINT [--batches 60] [--points 10000]``
(a ``galloway-cnn`` checkpoint with batch norm, e.g. a B+64 of ``runs/paper-checkpoints``).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from bnnrobust.attacks import FGSM, random_eps
from bnnrobust.attacks.adversarial_training import predicted
from bnnrobust.data import load as load_data
from bnnrobust.train import batch_statistics, load

EPS = (0.0, 0.1, 0.2, 0.3)


def _craft(model: nn.Module, x: torch.Tensor, eps) -> torch.Tensor:
    """FGSM against the predicted label with the batch's statistics (as the TF graph crafts)."""
    with batch_statistics(model):
        return FGSM(model, eps=eps)(x, predicted(model, x))


def recompute(model: nn.Module, x_train: torch.Tensor, *, batches: int, mix: bool) -> None:
    """Running statistics = the cumulative average over ``batches`` batches of the passes of
    each batch (clean only, or the TF graph's mix)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x_train), generator=gen)[:128 * batches]
    for start in range(0, len(order), 128):
        x = x_train[order[start:start + 128]]
        passes = [x] if not mix else \
            [x] * 5 + [_craft(model, x, random_eps(len(x), 0.3, gen)), _craft(model, x, 0.3)]
        model.train()
        with torch.no_grad():
            for xp in passes:
                model(xp)
    model.eval()


def accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Clean and FGSM accuracy (%) at each ε of :data:`EPS`, true labels, batches of 1000."""
    out = []
    for eps in EPS:
        correct = 0
        for start in range(0, len(x), 1000):
            xb, yb = x[start:start + 1000], y[start:start + 1000]
            xa = xb if eps == 0 else FGSM(model, eps=eps)(xb, yb)
            with torch.no_grad():
                correct += int((model(xa).argmax(1) == yb).sum())
        out.append(100 * correct / len(x))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--batches", type=int, default=60, help="training batches averaged")
    parser.add_argument("--points", type=int, default=10000, help="test points attacked")
    args = parser.parse_args()
    model = load(args.checkpoint).model.eval()
    x_train, _ = load_data("mnist", "train")
    x_test, y_test = load_data("mnist", "test", limit=args.points)
    print("running statistics          clean  " + "  ".join(f"FGSM {e}" for e in EPS[1:]))
    rows = [("as trained", None), ("clean batches only", False), ("mnist_attack.py mix", True)]
    for name, mix in rows:
        if mix is not None:
            recompute(model, x_train, batches=args.batches, mix=mix)
        print(f"{name:<26}" + "".join(f"{a:>9.2f}" for a in accuracies(model, x_test, y_test)))


if __name__ == "__main__":
    main()
