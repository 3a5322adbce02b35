"""Integer export of fc-bnn: agreement with PyTorch (every MNIST test image), folded batch norm
with negative and zero scales, any depth/width/input size, and refusals naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnnrobust.attacks.combinatorial import ExportError, export
from bnnrobust.data import load, load_arrays
from bnnrobust.models import build
from bnnrobust.nn import BinaryActivation
from bnnrobust.train import fit, predict_logits


def _hidden_signs(model, x):
    signs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: signs.append(o.detach().clone()))
             for m in model.modules() if isinstance(m, BinaryActivation)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return [s.to(torch.int8).numpy() for s in signs]


@pytest.mark.parametrize("recipe", ["plain", "binarynet"])
def test_agrees_on_every_mnist_test_image(data_root, recipe):
    torch.manual_seed(0)
    model = build("fc-bnn", depth=2, width=100, recipe=recipe)
    fit(model, load("mnist", "train", root=data_root, limit=20000), epochs=1, progress=False)
    ib = export(model)
    x, _ = load("mnist", "test", root=data_root)
    pixels, _ = load_arrays("mnist", "test", root=data_root)
    for ours, ref in zip(ib.hidden(x.numpy()), _hidden_signs(model, x), strict=True):
        assert np.array_equal(ours, ref)
    for ours, ref in zip(ib.hidden_pixels(pixels), _hidden_signs(model, x), strict=True):
        assert np.array_equal(ours, ref)  # pure integer arithmetic on the 1/255 grid
    ref_logits = predict_logits(model, x).double().numpy()
    assert np.abs(ib.logits(x.numpy()) - ref_logits).max() < 1e-4
    assert np.array_equal(ib.logits_pixels(pixels).argmax(1), ref_logits.argmax(1))


@pytest.mark.parametrize(("depth", "width", "inputs", "recipe"),
                         [(3, 12, 20, "plain"), (1, 7, 5, "plain"), (4, 30, 784, "plain"),
                          (3, 12, 20, "binarynet"), (2, 30, 784, "binarynet")])
def test_negative_and_zero_batchnorm_scales(depth, width, inputs, recipe):
    """Agreement with PyTorch on 500 random 8-bit inputs, batch-norm scales negative and zero;
    with the BinaryNet layers also biases, the first layer's input normalization and dropout."""
    torch.manual_seed(depth)
    model = build("fc-bnn", depth=depth, width=width, in_features=inputs, recipe=recipe)
    if recipe == "binarynet":
        with torch.no_grad():
            for m in model.modules():
                if getattr(m, "bias", None) is not None and hasattr(m, "binary_weight"):
                    m.bias.copy_(torch.randn_like(m.bias) * 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryActivation):
                m.bn.weight.copy_(torch.randn(width))  # about half negative
                m.bn.weight[0] = 0.0                    # a constant neuron
                m.bn.bias.copy_(torch.randn(width) * 3)
                m.bn.running_mean.copy_(torch.randn(width) * 5)
                m.bn.running_var.copy_(torch.rand(width) * 10 + 0.1)
    model.eval()
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (500, inputs), generator=g)
    x = pixels.float() / 255
    ib = export(model)
    ref = _hidden_signs(model, x)
    for ours, r in zip(ib.hidden(x.numpy()), ref, strict=True):
        assert np.array_equal(ours, r)
    for ours, r in zip(ib.hidden_pixels(pixels.numpy()), ref, strict=True):
        assert np.array_equal(ours, r)
    assert set(np.unique(np.concatenate([layer.weight.ravel() for layer in ib.layers]))) <= {-1, 1}


@pytest.mark.parametrize(("name", "params", "layer"), [
    ("galloway-cnn", {"width": 4, "precision": "scaled"}, "'5' \\(LearnedScale\\)"),
    ("fcn", {"width": 8}, "'1' \\(Normalize\\)"),
    ("fc-bnn", {"width": 8, "input_bits": 2}, "'input_layer' \\(InputQuantizer\\)"),
])
def test_unsupported_models_name_the_layer(name, params, layer):
    with pytest.raises(ExportError, match=f"cannot export layer {layer}"):
        export(build(name, **params))


def test_input_normalization_after_the_first_layer_is_refused():
    model = build("fc-bnn", depth=2, width=8, recipe="binarynet")
    model.body[3].input_normalization = (0.5, 0.5)  # the second BinaryLinear
    with pytest.raises(ExportError, match="cannot export layer '3'.*input normalization on the "
                                          "first layer only"):
        export(model)
