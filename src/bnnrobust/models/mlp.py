"""A plain ReLU multilayer perceptron: Papernot et al.'s black-box substitute (784-200-200-10).

``layers`` hidden layers of ``hidden`` units with ReLU, then a linear output; the input is
flattened. Galloway et al. used it as the substitute of the black-box attack (Tables 4, 5).
"""

from __future__ import annotations

from torch import nn

from bnnrobust.models.base import ModelEntry, Param, register


def mlp(*, hidden: int, layers: int, in_features: int, num_classes: int) -> nn.Sequential:
    """Build the body (see the module docstring)."""
    body: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(layers):
        body += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*body, nn.Linear(width, num_classes))


register(ModelEntry(
    name="mlp",
    builder=mlp,
    params={
        "hidden": Param(200, "units per hidden layer (Papernot's substitute: 200)"),
        "layers": Param(2, "hidden layers (Papernot's substitute: 2)"),
        "in_features": Param(784, "input size (784 = a flattened 28×28 image, 3072 = CIFAR)"),
        "num_classes": Param(10, "number of classes"),
    },
    description="ReLU MLP, the black-box substitute of Papernot et al. (784-200-200-10)",
    input_shape=lambda p: (1, 28, 28) if p["in_features"] == 784 else
    ((3, 32, 32) if p["in_features"] == 3072 else (p["in_features"],)),
    num_classes=lambda p: p["num_classes"],
    reference="Papernot et al. Practical Black-Box Attacks against Machine Learning. 2017.",
))
