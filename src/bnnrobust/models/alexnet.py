"""AlexNet-style network for 32×32 CIFAR inputs, binary or full precision (Panda et al.).

Follows the BinaryNet.pytorch AlexNet (Hubara et al.) adapted to CIFAR: five convolutions
(64w, 192w, 384w, 256w, 256 channels; kernels 5, 5, 3, 3, 3; max-pooling after 1, 2 and 5)
and three fully connected layers (``fc_width``, ``fc_width``, classes), each followed by batch
norm. ``binary``: every convolution and linear layer has ±1 weights; every layer input except
the image is binarized (batch norm → sign, Hubara STE); the output is batch-normalized.
``full``: the same with ReLU activations and real weights. ``width`` is BinaryNet's inflation
ratio (it used 3; default 1 here to keep CPU runs affordable).
"""

from __future__ import annotations

from torch import nn

from bnnrobust.models.base import INPUT_BITS, ModelEntry, Param, register
from bnnrobust.nn import BinaryConv2d, BinaryLinear, Sign

_CONVS = ((64, 5, True), (192, 5, True), (384, 3, False), (256, 3, False), (256, 3, True))


def alexnet_cifar(*, precision: str, width: int, fc_width: int, num_classes: int) -> nn.Sequential:
    """Build the body (see the module docstring)."""
    binary = precision == "binary"

    def act() -> nn.Module:
        return Sign(ste="hubara") if binary else nn.ReLU()

    layers: list[nn.Module] = []
    cin, size = 3, 32
    for i, (cout, kernel, pool) in enumerate(_CONVS):
        cout = cout * width if i < len(_CONVS) - 1 else cout
        conv = (BinaryConv2d(cin, cout, kernel, padding=kernel // 2, ste="hubara", init_std=None)
                if binary else nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False))
        layers.append(conv)
        if pool:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [nn.BatchNorm2d(cout), act()]
        cin = cout
    layers.append(nn.Flatten())
    fin = cin * size * size
    for fout in (fc_width, fc_width):
        linear = (BinaryLinear(fin, fout, ste="hubara", init_std=None) if binary
                  else nn.Linear(fin, fout, bias=False))
        layers += [linear, nn.BatchNorm1d(fout), act()]
        fin = fout
    if binary:
        layers += [BinaryLinear(fin, num_classes, ste="hubara", init_std=None),
                   nn.BatchNorm1d(num_classes)]
    else:
        layers.append(nn.Linear(fin, num_classes))
    return nn.Sequential(*layers)


register(ModelEntry(
    name="alexnet-cifar",
    builder=alexnet_cifar,
    params={
        "precision": Param("binary", "binary (BNN) or full precision", str,
                           choices=("binary", "full")),
        "width": Param(1, "channel inflation ratio of conv layers 1-4 (BinaryNet used 3)"),
        "fc_width": Param(4096, "units of the two hidden fully connected layers"),
        "num_classes": Param(10, "number of classes (10 for CIFAR-10, 100 for CIFAR-100)"),
        "input_bits": INPUT_BITS,
    },
    description="AlexNet-style CIFAR network (BinaryNet.pytorch), binary or full precision",
    input_shape=lambda p: (3, 32, 32),
    num_classes=lambda p: p["num_classes"],
    reference="Hubara et al. Binarized Neural Networks. NeurIPS 2016; used by Panda et al.",
))
