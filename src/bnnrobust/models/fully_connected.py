"""Fully connected networks: Khalil et al.'s ``fc-bnn`` and Panda et al.'s ``fcn`` (FCN1/FCN2).

``fc-bnn`` (Khalil, Gupta, Dilkina, ICLR 2019): ``depth`` hidden layers of ``width`` neurons,
each ``sign(BN(W h))`` with ±1 weights ``W`` (no bias; batch norm supplies the threshold), the
first taking the real-valued input in [0, 1]; the output layer is a real-valued weighted sum
(linear with bias) of the last hidden layer. Straight-through rule: Hubara's (the surrogate
``clip(x, -1, 1)`` the paper describes). ``recipe="binarynet"`` takes the layers of the code the
paper cites (BinaryNet.pytorch ``main_mnist.py``): the input normalized by (0.1307, 0.3081)
inside the first layer, real biases, dropout 0.5 before the last hidden batch norm. Both forms
export to integer form for the MILP.

``fcn`` (Panda et al.): FCN1 784-6144×4-10 and FCN2 784-600×4-10. ``binary``: BinaryNet.pytorch's
MNIST network (``main_mnist.py``, the code Panda et al. cite) with four hidden layers instead of
its three: the input normalized inside the model ((x − 0.1307)/0.3081), then per hidden layer a
binary linear layer with a real bias (its input binarized by sign from the second layer on),
batch norm and Hardtanh; dropout 0.5 between the last hidden linear layer and its batch norm;
a full-precision linear output on the last Hardtanh (the script's LogSoftmax + cross-entropy is
the plain cross-entropy here). ``full``: linear → batch norm → ReLU hidden layers and a linear
output.
"""

from __future__ import annotations

from torch import nn

from bnnrobust.models.base import INPUT_BITS, ModelEntry, Param, register
from bnnrobust.nn import BinaryActivation, BinaryLinear, Normalize, Sign

FCN_WIDTHS = {"fcn1": 6144, "fcn2": 600}
#: BinaryNet.pytorch main_mnist.py's input normalization, transforms.Normalize((0.1307,), (0.3081,))
MNIST_NORMALIZATION = (0.1307, 0.3081)


def binary_hidden_stack(in_features: int, width: int, depth: int) -> list[nn.Module]:
    """``depth`` blocks of BinaryLinear (±1 weights, no bias) → batch norm → sign."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [BinaryLinear(in_features if i == 0 else width, width, ste="hubara",
                                init_std=None),
                   BinaryActivation(width, dims=1, ste="hubara")]
    return layers


def fc_bnn(*, depth: int, width: int, in_features: int, num_classes: int,
           recipe: str = "plain") -> nn.Sequential:
    """Khalil et al.'s fully connected BNN (see the module docstring)."""
    if recipe == "plain":
        return nn.Sequential(nn.Flatten(), *binary_hidden_stack(in_features, width, depth),
                             nn.Linear(width, num_classes))
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers.append(BinaryLinear(in_features if i == 0 else width, width, bias=True,
                                   ste="hubara", init_std=None,
                                   input_normalization=MNIST_NORMALIZATION if i == 0 else None))
        if i == depth - 1:
            layers.append(nn.Dropout(0.5))
        layers.append(BinaryActivation(width, dims=1, ste="hubara"))
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def fcn(*, arch: str, precision: str, width: int | None, in_features: int,
        num_classes: int) -> nn.Sequential:
    """Panda et al.'s FCN1/FCN2, binary or full precision (see the module docstring)."""
    width = width or FCN_WIDTHS[arch]
    depth = 4
    if precision == "binary":
        return binarynet_mnist(in_features=in_features, width=width, depth=depth,
                               num_classes=num_classes)
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else width, width), nn.BatchNorm1d(width),
                   nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def binarynet_mnist(*, in_features: int, width: int, depth: int,
                    num_classes: int) -> nn.Sequential:
    """BinaryNet.pytorch's ``main_mnist.py`` network with ``depth`` hidden layers (see the
    module docstring): fc → BN → Hardtanh, the next fc binarizing its input; dropout before
    the last hidden BN; a full-precision output layer."""
    layers: list[nn.Module] = [nn.Flatten(), Normalize(*MNIST_NORMALIZATION)]
    for i in range(depth):
        layers.append(BinaryLinear(in_features if i == 0 else width, width, bias=True,
                                   binarize_input=False, ste="hubara", init_std=None))
        if i > 0:  # sign of the previous Hardtanh (Binarize(input) in BinarizeLinear)
            layers.insert(-1, Sign(ste="hubara"))
        if i == depth - 1:
            layers.append(nn.Dropout(0.5))
        layers += [nn.BatchNorm1d(width), nn.Hardtanh()]
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _flat_shape(p: dict) -> tuple[int, ...]:
    return (1, 28, 28) if p["in_features"] == 784 else (p["in_features"],)


register(ModelEntry(
    name="fc-bnn",
    builder=fc_bnn,
    params={
        "depth": Param(2, "number of binary hidden layers (paper: 2, 3, 4, 5)"),
        "width": Param(100, "neurons per hidden layer (paper: 100 to 500)"),
        "in_features": Param(784, "input size (784 = a flattened 28×28 image)"),
        "num_classes": Param(10, "number of classes"),
        "recipe": Param("plain", "plain (no bias, no dropout, raw [0, 1] inputs) or binarynet "
                        "(BinaryNet.pytorch main_mnist.py's layers: input normalization, "
                        "biases, dropout 0.5 before the last hidden batch norm)", str,
                        choices=("plain", "binarynet")),
        "input_bits": INPUT_BITS,
    },
    description="Khalil et al. 2019 fully connected BNN: depth × width hidden sign(BN(W h))",
    input_shape=_flat_shape,
    num_classes=lambda p: p["num_classes"],
    reference="Khalil, Gupta, Dilkina. Combinatorial Attacks on Binarized Neural Networks. "
              "ICLR 2019.",
))

register(ModelEntry(
    name="fcn",
    builder=fcn,
    params={
        "arch": Param("fcn2", "fcn1 = 784-6144×4-10, fcn2 = 784-600×4-10", str,
                      choices=tuple(FCN_WIDTHS)),
        "precision": Param("binary", "binary (BNN) or full precision", str,
                           choices=("binary", "full")),
        "width": Param(None, "override the hidden width of the arch", optional=True),
        "in_features": Param(784, "input size (784 = a flattened 28×28 image)"),
        "num_classes": Param(10, "number of classes"),
        "input_bits": INPUT_BITS,
    },
    description="Panda et al. FCN1 / FCN2, binary or full precision, 4 hidden layers",
    input_shape=_flat_shape,
    num_classes=lambda p: p["num_classes"],
    reference="Panda, Chakraborty, Roy. Discretization based Solutions for Secure Machine "
              "Learning against Adversarial Attacks. IEEE Access 2019.",
))
