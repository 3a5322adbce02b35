"""Clean accuracy and predictions, batched, in eval mode, with the model's mode restored.

The one definition of a random model's accuracy (stochastic weights): the mean over ``passes``
forward passes with fixed seeds ``seed, seed + 1, ...`` of the per-pass accuracy, so that it is
repeatable. Per input (:func:`correct_fraction`) that is the fraction of the passes that
classify it correctly; :func:`accuracy` is the mean of those fractions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bnnrobust.device import resolve_device
from bnnrobust.errors import BnnRobustError
from bnnrobust.nn import is_stochastic, seed_stochastic, seeded


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BnnRobustError(f"{name} must be an integer >= 1, got {value!r}.")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's mode after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Make every batch-norm layer normalize with the statistics of the batch it sees, in any
    mode, without changing its running statistics (restored afterwards): how TF1 code that
    builds a graph in training mode computes it, e.g. adversarial examples crafted during
    training."""
    saved = [(m, m.running_mean, m.running_var) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    for m, _, _ in saved:
        m.running_mean, m.running_var = None, None
    try:
        yield model
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var


def check_input_shape(model: nn.Module, x: torch.Tensor, *, what: str = "inputs") -> None:
    """Raise a clear error when ``x`` (a batch) does not have the model's input shape."""
    expected = getattr(model, "input_shape", None)
    if expected is None:
        return
    got = tuple(x.shape[1:])
    flat_ok = len(expected) == 1 and int(torch.tensor(got).prod()) == expected[0]
    if got != tuple(expected) and not flat_ok:
        hint = ""
        if len(got) == 3 and len(expected) == 3:
            hint = f" (for galloway-cnn use --param channels={got[0]} --param size={got[1]})"
        raise BnnRobustError(
            f"{what} have shape {'×'.join(map(str, got))} but the model takes "
            f"{'×'.join(map(str, expected))}{hint}."
        )


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000,
                   device: str | torch.device = "auto") -> torch.Tensor:
    """Logits for ``x`` (on the CPU), computed in eval mode in batches."""
    _check_count("batch_size", batch_size)
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise BnnRobustError("the inputs hold NaN or infinite values; a model is evaluated "
                             "only on finite inputs (in [0, 1]).")
    dev = resolve_device(device)
    model.to(dev)
    outs = []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            outs.append(model(x[start:start + batch_size].to(dev)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean per example: is the prediction right? (one logit: binary, threshold 0)."""
    if logits.dim() == 2 and logits.shape[1] == 1:
        return (logits[:, 0] >= 0).long() == y.long()
    return logits.argmax(dim=1) == y


def correct_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     batch_size: int = 1000, device: str | torch.device = "auto",
                     passes: int = 5, seed: int = 0) -> torch.Tensor:
    """Per input (CPU, float): the fraction of forward passes that classify it as ``y``.

    A stochastic model is evaluated ``passes`` times with seeds ``seed + i`` (its layers'
    seeds restored afterwards); a deterministic model once (fractions are 0 or 1).
    """
    _check_count("passes", passes)
    check_input_shape(model, x)
    y = y.cpu()
    if not is_stochastic(model):
        return correct(predict_logits(model, x, batch_size=batch_size, device=device), y).float()
    total = torch.zeros(len(x))
    with seeded(model, seed):
        for i in range(passes):
            seed_stochastic(model, seed + i)
            total += correct(predict_logits(model, x, batch_size=batch_size, device=device),
                             y).float()
    return total / passes


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000,
             device: str | torch.device = "auto", passes: int = 5, seed: int = 0) -> float:
    """Fraction of ``x`` classified as ``y``: the mean of :func:`correct_fraction` (for a
    stochastic model, the mean over ``passes`` seeded passes of the per-pass accuracy)."""
    return correct_fraction(model, x, y, batch_size=batch_size, device=device, passes=passes,
                            seed=seed).mean().item()


def dataset_accuracy(model: nn.Module, data: Dataset, *, batch_size: int = 256,
                     device: str | torch.device = "auto", workers: int = 0, passes: int = 5,
                     seed: int = 0) -> float:
    """:func:`accuracy` over a map-style dataset of ``(image, label)`` (a streamed split such as
    ImageNet's), read in order in batches by a DataLoader with ``workers`` processes."""
    _check_count("batch_size", batch_size)
    total, seen = 0.0, 0
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers):
        total += correct_fraction(model, x, y, batch_size=batch_size, device=device,
                                  passes=passes, seed=seed).sum().item()
        seen += len(y)
    if seen == 0:
        raise BnnRobustError("the evaluation dataset is empty.")
    return total / seen
