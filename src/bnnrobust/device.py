"""Device selection shared by every layer: ``"auto"`` means CUDA when present, else CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bnnrobust.errors import BnnRobustError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks the first CUDA device when one is available, else the CPU. Asking for
    CUDA on a machine without it raises an error that says so instead of failing later.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BnnRobustError(
                f"device {device!r} was requested but PyTorch sees no CUDA device here; "
                "use --device cpu (or auto)."
            )
        return torch.device(name)
    raise BnnRobustError(f"unknown device {device!r}; expected one of {', '.join(DEVICE_CHOICES)}")


@contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Run the block with PyTorch's global generators (CPU and every CUDA device) seeded with
    ``seed``, and give the caller's generator state back afterwards: library code draws
    repeatable numbers (weight initialization, dropout) without reseeding anyone's RNG."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
