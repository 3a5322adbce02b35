"""ResNet-20 for CIFAR (He et al. 2016), full precision or XNOR (Rastegari et al. 2016).

Three stages of three basic blocks (``width``, 2·``width``, 4·``width`` channels, strides 1, 2,
2) after a 3×3 stem, then global average pooling and a linear classifier. Shortcuts that change
shape are 1×1 convolutions with batch norm. ``xnor``: the stem and the classifier stay full
precision (as in XNOR-Net); each 3×3 convolution inside the blocks is an XNOR layer — batch
norm → sign of the input → ±1 weights scaled by the mean |W| per output channel — followed by
ReLU where the full-precision block has one. Panda et al. used it on CIFAR-100 (Figure 7).
"""

from __future__ import annotations

import torch
from torch import nn

from bnnrobust.models.base import INPUT_BITS, ModelEntry, Param, register
from bnnrobust.nn import BinaryConv2d


def _conv3x3(cin: int, cout: int, stride: int, xnor: bool) -> nn.Module:
    if xnor:
        return BinaryConv2d(cin, cout, 3, stride, padding=1, binarize_input=True, xnor=True,
                            ste="hubara", init_std=None)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions and a shortcut: ``relu(conv2(relu(conv1(x))) + shortcut(x))``."""

    def __init__(self, cin: int, cout: int, stride: int, *, xnor: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, xnor)
        self.conv2 = _conv3x3(cout, cout, 1, xnor)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


def resnet20(*, precision: str, width: int, num_classes: int) -> nn.Sequential:
    """Build the body (see the module docstring)."""
    xnor = precision == "xnor"
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(cin, cout, stride, xnor=xnor))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


register(ModelEntry(
    name="resnet20",
    builder=resnet20,
    params={
        "precision": Param("xnor", "xnor (binary weights and activations, scaled) or full", str,
                           choices=("xnor", "full")),
        "width": Param(16, "channels of the first stage (He et al.: 16)"),
        "num_classes": Param(100, "number of classes (100 for CIFAR-100)"),
        "input_bits": INPUT_BITS,
    },
    description="ResNet-20 for CIFAR, XNOR or full precision",
    input_shape=lambda p: (3, 32, 32),
    num_classes=lambda p: p["num_classes"],
    reference="He et al. 2016; Rastegari et al. XNOR-Net 2016; used by Panda et al.",
))
