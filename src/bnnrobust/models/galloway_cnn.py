"""The CNN of Galloway, Taylor & Moussa (ICLR 2018): the CleverHans tutorial model and its
binary variants A (full), B (binary), C (binary + learned scalar), S (C with layer 3 stochastic).

Layout (K = ``width`` kernels in layer 1, no biases anywhere, as in the authors' code):
conv 8×8 stride 2 SAME K → ReLU → conv 6×6 stride 2 VALID 2K → ReLU → conv 5×5 stride 1 VALID 2K
→ ReLU → flatten → linear 10. In B, C and S, layers 2 and 3 are binary blocks: batch norm
→ sign of the input → convolution with ±1 weights (latent init truncated normal σ = 0.2) →
ReLU; the STE clips gradients to [-1, 1]. The batch norm is the authors' call of
``tf.contrib.layers.batch_norm`` with its defaults: eps 1e-5 (theirs), a learned shift β and
no scale (γ = 1, ``scale=False``), running statistics with decay 0.999 (``momentum=0.001``
here; PyTorch's default 0.1 would average the last few batches, not the last thousand). C
and S multiply each binary block's ReLU output by a learned scalar (init 0.05). S samples
layer 3's weights at every forward pass.
Full-precision kernels are initialized with unit L2 norm per filter and the linear layer with
unit-norm columns, as the authors' code does.

``activations = "real"`` drops the sign from the binary blocks (batch norm → convolution with
±1 weights → ReLU): the authors' code as published with the paper
(AngusG/cleverhans-attacking-bnns, commit e970b8f, December 2017), whose binary ``Conv2D``
computed the convolution of the sign of its input and then overwrote it with the convolution of
the unbinarized, batch-normed input. Its issue #1 reported this and it was fixed on
2018-03-23, after the paper; the reporter's FGSM ε = 0.3 on B64 with that code gave 59 %, the
paper's B64 value, so the paper's B, C and S numbers very likely come from binary weights with
real activations. The default (``"sign"``) is the paper's text and the fixed code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnnrobust.errors import ModelError
from bnnrobust.models.base import INPUT_BITS, ModelEntry, Param, register
from bnnrobust.nn import BinaryConv2d, LearnedScale, batch_norm

PRECISIONS = ("full", "binary", "scaled", "stochastic")
ACTIVATIONS = ("sign", "real")
#: ``tf.contrib.layers.batch_norm``'s default decay 0.999 as PyTorch's momentum
TF_BN_MOMENTUM = 0.001


@torch.no_grad()
def unit_norm_init_(weight: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """Truncated normal, then scaled to unit L2 norm per output unit (the authors' init)."""
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
    norms = weight.flatten(1).norm(dim=1).clamp_min(1e-7)
    weight.div_(norms.view(-1, *([1] * (weight.dim() - 1))))
    return weight


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _binary_block(cin: int, cout: int, kernel: int, stride: int, *, scaled: bool,
                  stochastic: bool, sign: bool) -> list[nn.Module]:
    conv = BinaryConv2d(cin, cout, kernel, stride, binarize_input=sign, stochastic=stochastic,
                        ste="galloway", init_std=0.2, bn_momentum=TF_BN_MOMENTUM, bn_scale=False)
    # without the sign, the batch norm that centres the sign's input stays (the authors' code)
    block: list[nn.Module] = [conv, nn.ReLU()] if sign else \
        [batch_norm(cin, eps=1e-5, momentum=TF_BN_MOMENTUM, scale=False), conv, nn.ReLU()]
    if scaled:
        block.append(LearnedScale(0.05))
    return block


def galloway_cnn(*, precision: str, width: int, channels: int, size: int,
                 num_classes: int, activations: str = "sign") -> nn.Sequential:
    """Build the body of the Galloway CNN (see the module docstring)."""
    if precision == "full" and activations != "sign":
        raise ModelError(f"galloway-cnn: activations = {activations!r} applies to the binary "
                         "models (precision binary, scaled or stochastic); precision = 'full' "
                         "(model A) has real activations already. Drop the parameter.")
    k = width
    left, right = _same_padding(size, 8, 2)
    s1 = math.ceil(size / 2)
    s3 = (s1 - 6) // 2 + 1 - 4
    conv1 = nn.Conv2d(channels, k, 8, stride=2, bias=False)
    unit_norm_init_(conv1.weight)
    layers: list[nn.Module] = [nn.ZeroPad2d((left, right, left, right)), conv1, nn.ReLU()]
    if precision == "full":
        for cin, cout, kernel, stride in ((k, 2 * k, 6, 2), (2 * k, 2 * k, 5, 1)):
            conv = nn.Conv2d(cin, cout, kernel, stride=stride, bias=False)
            unit_norm_init_(conv.weight)
            layers += [conv, nn.ReLU()]
    else:
        scaled = precision in ("scaled", "stochastic")
        sign = activations == "sign"
        layers += _binary_block(k, 2 * k, 6, 2, scaled=scaled, stochastic=False, sign=sign)
        layers += _binary_block(2 * k, 2 * k, 5, 1, scaled=scaled,
                                stochastic=precision == "stochastic", sign=sign)
    linear = nn.Linear(2 * k * s3 * s3, num_classes, bias=False)
    unit_norm_init_(linear.weight, std=1.0)
    layers += [nn.Flatten(), linear]
    return nn.Sequential(*layers)


register(ModelEntry(
    name="galloway-cnn",
    builder=galloway_cnn,
    params={
        "precision": Param("binary", "A = full, B = binary, C = scaled, S = stochastic", str,
                           choices=PRECISIONS),
        "width": Param(64, "K, kernels in layer 1 (paper: 32, 64, 128, 256); later layers 2K"),
        "activations": Param("sign", "binary blocks' activations: sign (the paper's text) or "
                             "real (batch norm, no sign: the authors' code behind the paper's "
                             "numbers, fixed after it)", str, choices=ACTIVATIONS),
        "channels": Param(1, "input channels (1 for MNIST, 3 for CIFAR-10)", choices=(1, 3)),
        "size": Param(28, "input height = width (28 for MNIST, 32 for CIFAR-10)", minimum=27),
        "num_classes": Param(10, "number of classes"),
        "input_bits": INPUT_BITS,
    },
    description="Galloway et al. 2018 CNN: A (full), B (binary), C (scaled), S (stochastic)",
    input_shape=lambda p: (p["channels"], p["size"], p["size"]),
    num_classes=lambda p: p["num_classes"],
    reference="Galloway, Taylor, Moussa. Attacking Binarized Neural Networks. ICLR 2018.",
))
