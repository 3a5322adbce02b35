"""Input discretization to k bits (Panda et al., eq. 2), a non-differentiable input layer.

``I_k = floor(I / s) * s + s / 2`` with ``s = 256 / 2**k`` on 0-255 pixel values ``I = 255 x``:
each value is replaced by the centre of its bin when [0, 256) is cut into ``2**k`` equal bins.
The result is divided by 256, so it lies in (0, 1). ``floor`` has a zero gradient, so a plain
gradient attack sees no signal through this layer; the layer declares its backward surrogate
(the identity) so that BPDA (Athalye et al. 2018) can attack it properly.
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
        pixels = x * 255.0
        return (torch.floor(pixels / self.step) * self.step + self.step / 2) / 256.0

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable stand-in used on the backward pass by BPDA: the identity."""
        return x

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}"
