"""The integer form of a BNN that the exact attacks work on (:class:`IntegerBNN`), shared by
the exporters (:mod:`.export` for fully connected BNNs, :mod:`.conv_export` for Galloway's
convolutional B model): hidden layers that fire iff ``W·h >= T``, then a real output layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bnnrobust.attacks.base import AttackError


class ExportError(AttackError):
    """A model that is not a supported fully connected BNN."""


@dataclass(frozen=True)
class IntegerLayer:
    """One hidden layer: weights (out × in; ±1 int8, or real for a convolutional network's first
    layer; dense or a SciPy sparse matrix) and, per neuron, fire iff ``W·h >= T``.

    ``threshold`` is the real threshold (for real inputs); ``int_threshold`` the integer one
    for integer pre-activations (hidden layers) or for 0-255 pixel inputs (first layer; None
    when the first layer's weights are real, so that pixel inputs give no integer test).
    """

    weight: Any
    threshold: np.ndarray
    int_threshold: np.ndarray | None
    #: per neuron, the size of the terms whose float32 rounding moves the threshold test (the
    #: batch norm's mean and shift); None: ``|threshold|``
    rounding: np.ndarray | None = None

    @property
    def margin_scale(self) -> np.ndarray:
        """What :func:`.problem.float32_margin` scales the threshold's rounding by."""
        return np.abs(self.threshold) if self.rounding is None else self.rounding

    @property
    def integer(self) -> bool:
        """Whether the layer is integer arithmetic on its (pixel or ±1) inputs."""
        return self.int_threshold is not None


def dense(weight: Any) -> np.ndarray:
    """A layer's weights as a dense array (SciPy sparse ones expanded)."""
    return weight.toarray() if hasattr(weight, "toarray") else np.asarray(weight)


def times(weight: Any, h: np.ndarray) -> np.ndarray:
    """``h @ weight.T`` for a dense or SciPy sparse ``weight`` (rows of ``h`` are inputs)."""
    if hasattr(weight, "toarray"):
        return np.asarray((weight @ h.T).T)
    return h @ weight.T


@dataclass(frozen=True)
class IntegerBNN:
    """A BNN in integer form: hidden layers, then ``logits = V h + c`` — or, with
    ``relu_weight`` (a last binary layer without batch norm and sign, as in Galloway et al.'s
    convolutional B model), ``logits = V·max(R h, 0) + c`` with ±1 ``R``: integer sums, so the
    ReLU is exact."""

    layers: tuple[IntegerLayer, ...]
    out_weight: np.ndarray
    out_bias: np.ndarray
    relu_weight: Any = None

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.layers)

    @property
    def grid_exact(self) -> bool:
        """Whether 8-bit inputs give integer arithmetic throughout (±1 first-layer weights)."""
        return self.layers[0].integer

    def hidden(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations (±1, int8) of every hidden layer for real inputs ``x`` (N × features)."""
        acts = []
        h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for i, layer in enumerate(self.layers):
            weight = layer.weight.astype(np.float64 if i == 0 else np.int64)
            pre = times(weight, h)
            thr = layer.threshold if i == 0 else layer.int_threshold
            h = np.where(pre >= thr, 1, -1).astype(np.int64)
            acts.append(h.astype(np.int8))
        return acts

    def hidden_pixels(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Activations for 8-bit inputs ``pixels`` (integers 0..255): integer arithmetic only
        (through the real first layer on ``pixels / 255`` when its weights are real)."""
        if not self.grid_exact:
            return self.hidden(np.asarray(pixels, dtype=np.float64) / 255.0)
        acts = []
        h = np.asarray(pixels, dtype=np.int64).reshape(len(pixels), -1)
        for layer in self.layers:
            h = np.where(times(layer.weight.astype(np.int64), h) >= layer.int_threshold, 1, -1)
            acts.append(h.astype(np.int8))
        return acts

    def output(self, h: np.ndarray) -> np.ndarray:
        """Output values from the last hidden layer's activations ``h`` (N × width, ±1)."""
        h = np.asarray(h, dtype=np.int64)
        if self.relu_weight is not None:
            h = np.maximum(times(self.relu_weight.astype(np.int64), h), 0)
        return h @ self.out_weight.T + self.out_bias

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Output values for real inputs in [0, 1]."""
        return self.output(self.hidden(x)[-1])

    def logits_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Output values for 0-255 integer pixels (the 1/255 grid)."""
        return self.output(self.hidden_pixels(pixels)[-1])


class IntegerBNNModule(nn.Module):
    """An :class:`IntegerBNN` as a PyTorch model (its exact forward pass, no gradient), so
    that the exact attacks of the catalogue can run on an integer BNN given directly.

    Shape: ``(N, features)`` (or any shape that flattens to it) in [0, 1] → ``(N, classes)``
    logits (float64 values returned as float32 would round them: kept float64).
    """

    def __init__(self, integer: IntegerBNN) -> None:
        super().__init__()
        self.integer = integer
        self.input_shape = (integer.layers[0].weight.shape[1],)
        self.num_classes = integer.out_weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits by the exact forward pass: in integer arithmetic for inputs on the 1/255
        grid (8-bit images), else with the real first-layer thresholds."""
        flat = x.detach().reshape(len(x), -1).cpu().double().numpy()
        pixels = np.rint(flat * 255.0)
        if np.abs(flat * 255.0 - pixels).max(initial=0.0) <= 1e-3:
            logits = self.integer.logits_pixels(pixels.astype(np.int64))
        else:
            logits = self.integer.logits(flat)
        return torch.from_numpy(logits).to(x.device)
