"""The toy MLP of Galloway et al., Appendix B (after Papernot et al. 2016's AND problem).

Two inputs, three hidden layers of ``hidden`` units (2 or 4), one output logit (the sigmoid
output neuron of the paper is applied by the loss). Hidden activations are tanh. With
``quantized``, the middle hidden layer has ±1 weights and a sign activation ("weights and
activations thresholded to +1 and -1", straight-through gradients, Hubara rule).
"""

from __future__ import annotations

from torch import nn

from bnnrobust.models.base import ModelEntry, Param, register
from bnnrobust.nn import BinaryLinear, Sign


def toy_mlp(*, hidden: int, quantized: bool) -> nn.Sequential:
    """Build the body (see the module docstring)."""
    middle: list[nn.Module] = (
        [BinaryLinear(hidden, hidden, bias=True, ste="hubara", init_std=None), Sign(ste="hubara")]
        if quantized else [nn.Linear(hidden, hidden), nn.Tanh()]
    )
    return nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), *middle, nn.Linear(hidden, hidden),
                         nn.Tanh(), nn.Linear(hidden, 1))


register(ModelEntry(
    name="toy-mlp",
    builder=toy_mlp,
    params={
        "hidden": Param(2, "units in each of the 3 hidden layers", choices=(2, 4)),
        "quantized": Param(False, "binarize the middle hidden layer (weights and activation)",
                           bool, minimum=None),
    },
    description="Galloway Appendix B toy MLP for logical AND: 2 inputs, 3 hidden layers, 1 output",
    input_shape=lambda p: (2,),
    num_classes=lambda p: 1,
    reference="Galloway et al. 2018, Appendix B; Papernot et al. 2016.",
))
