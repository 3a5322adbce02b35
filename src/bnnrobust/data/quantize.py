"""Input discretization to k bits (Panda et al., eq. 2), a non-differentiable input layer.

Panda et al.: ``I_k = floor(I / s) * s + s / 2`` with ``s = 256 / 2**k`` on 0-255 pixel values
``I = 255 x``: [0, 256) is cut into ``2**k`` bins of ``s`` levels and each value is replaced by
its bin's centre. Here the centre is taken over the ``s`` integer pixel values a bin holds,
``floor(I / s) * s + (s − 1) / 2``, and the result is scaled back by 255: the bins are the
paper's and the values lie half a pixel level below the paper's continuous centre, so that
discretizing an 8-bit image to 8 bits is the identity (there is nothing to discretize), and
discretizing twice is discretizing once. ``floor`` has a zero gradient, so a plain gradient
attack sees no signal through this layer; the layer declares its backward surrogate (the
identity) so that BPDA (Athalye et al. 2018) can attack it.
"""

from __future__ import annotations

import torch
from torch import nn

from bnnrobust.errors import BnnRobustError


class InputQuantizer(nn.Module):
    """Discretize inputs in [0, 1] to ``bits`` bits per value (1 <= bits <= 8).

    Usable inside a model (first layer) or as a dataset transform: ``InputQuantizer(2)(x)``.
    ``non_differentiable`` and :meth:`surrogate` declare the BPDA backward rule (identity).
    """

    non_differentiable = True

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise BnnRobustError(f"InputQuantizer bits must be an integer in 1..8, got {bits!r}.")
        self.bits = bits
        self.step = 256.0 / 2**bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # 1e-4 of a level absorbs float32 rounding of k/255 (an 8-bit value stays in its bin)
        bins = torch.floor((x * 255.0 + 1e-4) / self.step).clamp(0, 2**self.bits - 1)
        return (bins * self.step + (self.step - 1) / 2) / 255.0

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable stand-in used on the backward pass by BPDA: the identity."""
        return x

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}"


def input_quantizers(model: nn.Module) -> list[InputQuantizer]:
    """The model's input quantizers, in module order."""
    return [m for m in model.modules() if isinstance(m, InputQuantizer)]


def discretize_like(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` discretized as the model's input quantizer does it (``x`` itself when the model
    has none): Panda et al.'s protocol discretizes the data set before the attack."""
    for quantizer in input_quantizers(model):
        x = quantizer(x)
    return x.detach()
