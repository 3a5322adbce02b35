"""The zoo: output shapes on MNIST and CIFAR shapes, the Galloway layouts, parameter errors."""

from __future__ import annotations

import pytest
import torch

from bnnrobust.data import InputQuantizer
from bnnrobust.errors import ModelError
from bnnrobust.models import available, build
from bnnrobust.nn import BinaryConv2d, LearnedScale, binary_layers

CASES = [
    ("galloway-cnn", {"width": 8}, (1, 28, 28), 10),
    ("galloway-cnn", {"width": 8, "channels": 3, "size": 32}, (3, 32, 32), 10),
    ("galloway-cnn", {"width": 8, "precision": "full"}, (1, 28, 28), 10),
    ("galloway-cnn", {"width": 8, "precision": "stochastic", "channels": 3, "size": 32},
     (3, 32, 32), 10),
    ("fc-bnn", {"depth": 3, "width": 20}, (1, 28, 28), 10),
    ("fc-bnn", {"width": 20, "in_features": 3072}, (3072,), 10),
    ("fcn", {"arch": "fcn2", "width": 32}, (1, 28, 28), 10),
    ("fcn", {"arch": "fcn2", "precision": "full", "width": 32}, (1, 28, 28), 10),
    ("alexnet-cifar", {"fc_width": 64}, (3, 32, 32), 10),
    ("alexnet-cifar", {"fc_width": 64, "precision": "full", "num_classes": 100}, (3, 32, 32), 100),
    ("alexnet-imagenet", {}, (3, 227, 227), 1000),
    ("alexnet-imagenet", {"precision": "full", "num_classes": 10}, (3, 227, 227), 10),
    ("resnet20", {"width": 4}, (3, 32, 32), 100),
    ("resnet20", {"width": 4, "precision": "full", "num_classes": 10}, (3, 32, 32), 10),
    ("toy-mlp", {"hidden": 4, "quantized": True}, (2,), 1),
    ("mlp", {}, (1, 28, 28), 10),
    ("mlp", {"in_features": 3072}, (3, 32, 32), 10),
]


def test_every_family_is_covered():
    assert {c[0] for c in CASES} == set(available())


@pytest.mark.parametrize(("name", "params", "shape", "classes"), CASES)
def test_output_shapes(name, params, shape, classes):
    torch.manual_seed(0)
    model = build(name, **params)
    assert model.input_shape == shape and model.num_classes == classes
    for mode in (model.train, model.eval):
        mode()
        out = model(torch.rand(3, *shape))
        assert out.shape == (3, classes) and torch.isfinite(out).all()
    assert model.config == {"name": name, "params": {**{k: p.default for k, p in
                                                         available()[name].params.items()},
                                                      **params}}


def test_flat_models_take_images_of_their_size():
    from bnnrobust.train import check_input_shape

    model = build("fc-bnn", width=8, in_features=3072)
    check_input_shape(model, torch.rand(2, 3, 32, 32))  # flattens itself: accepted
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_fcn_default_widths():
    assert build("fcn", arch="fcn1").body[2].weight.shape == (6144, 784)  # after Normalize
    assert build("fcn", arch="fcn2").body[2].weight.shape == (600, 784)


@pytest.mark.parametrize("k", [32, 64])
def test_galloway_shapes_on_mnist(k):
    model = build("galloway-cnn", precision="full", width=k)
    shapes = []
    for module in model.body:
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    model(torch.rand(2, 1, 28, 28))
    assert shapes == [(k, 14, 14), (2 * k, 5, 5), (2 * k, 1, 1)]


def test_galloway_precisions():
    a, b, c, s = (build("galloway-cnn", precision=p, width=8)
                  for p in ("full", "binary", "scaled", "stochastic"))
    assert binary_layers(a) == []
    assert [type(m) for m in binary_layers(b)] == [BinaryConv2d, BinaryConv2d]
    assert all(layer.input_act is not None for layer in binary_layers(b))
    assert not any(isinstance(m, LearnedScale) for m in b.modules())
    scales = [m for m in c.modules() if isinstance(m, LearnedScale)]
    assert [m.scale.item() for m in scales] == pytest.approx([0.05, 0.05])
    assert [layer.stochastic for layer in binary_layers(s)] == [False, True]
    assert all(p.bias is None for p in b.modules() if isinstance(p, torch.nn.Conv2d))


@pytest.mark.parametrize("precision", ["binary", "scaled", "stochastic"])
def test_galloway_real_activations_convolve_the_batch_normed_input_with_signed_weights(
        precision):
    torch.manual_seed(0)
    model = build("galloway-cnn", precision=precision, width=4, activations="real").train()
    layers = binary_layers(model)
    assert len(layers) == 2 and all(layer.input_act is None for layer in layers)
    seen = []
    for layer in layers:
        layer.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o)))
    model(torch.rand(8, 1, 28, 28))
    for layer, inputs, output in seen:
        # the input is real (batch normed, not ±1) and the weights are the sign of the latent
        assert not set(inputs.unique().tolist()) <= {-1.0, 1.0}
        assert inputs.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # batch statistics, training mode
        if not layer.stochastic:  # S samples its layer 3 weights at each forward pass
            expected = torch.nn.functional.conv2d(inputs, torch.sign(layer.weight),
                                                  stride=layer.stride)
            torch.testing.assert_close(output, expected)
    norms = [m for m in model.body if isinstance(m, torch.nn.BatchNorm2d)]
    assert [n.num_features for n in norms] == [4, 8]
    # the default is the paper's text: the sign of the batch-normed input
    assert all(layer.input_act is not None
               for layer in binary_layers(build("galloway-cnn", precision=precision, width=4)))


@pytest.mark.parametrize(("precision", "activations"), [
    ("binary", "sign"), ("scaled", "sign"), ("stochastic", "sign"), ("binary", "real")])
def test_galloway_batch_norm_is_tf_contrib_default_no_scale_decay_0999(precision, activations):
    """The authors' tf.contrib.layers.batch_norm: a learned shift, no scale (γ stays 1 while
    training), running statistics with decay 0.999 (one batch moves them by 0.1 % of the way)."""
    from bnnrobust.train import fit

    torch.manual_seed(0)
    model = build("galloway-cnn", precision=precision, width=4, activations=activations)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 2 and all(n.momentum == 0.001 and n.eps == 1e-5 for n in norms)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    first = norms[0]
    with torch.no_grad():
        inputs = []
        hook = first.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
        model.train()(x[:16])
        hook.remove()
    batch_mean = inputs[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(first.running_mean, 0.001 * batch_mean)
    fit(model, (x, y), epochs=2, batch_size=16, lr=0.01, progress=False)
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in norms)
    assert all(n.bias.abs().sum() > 0 for n in norms)


def test_input_bits_adds_quantizer():
    model = build("fcn", width=16, input_bits=2)
    assert isinstance(model.input_layer, InputQuantizer) and model.input_layer.bits == 2
    assert not isinstance(build("fcn", width=16).input_layer, InputQuantizer)


def test_cli_strings_are_coerced():
    model = build("galloway-cnn", precision="scaled", width="16", input_bits="none")
    assert model.config["params"]["width"] == 16
    assert build("toy-mlp", quantized="true").config["params"]["quantized"] is True


@pytest.mark.parametrize(("name", "params", "message"), [
    ("resnet-20", {}, "available models: alexnet-cifar, alexnet-imagenet, fc-bnn, fcn, "
                   "galloway-cnn, mlp, resnet20"),
    ("galloway-cnn", {"filters": 64}, "valid parameters: activations, channels, input_bits, "
                                      "num_classes, precision, size, width"),
    ("galloway-cnn", {"activations": "relu"}, "valid values: sign, real"),
    ("galloway-cnn", {"precision": "full", "activations": "real"},
     "applies to the binary models"),
    ("galloway-cnn", {"precision": "ternary"}, "valid values: full, binary, scaled, stochastic"),
    ("galloway-cnn", {"width": 0}, "must be >= 1"),
    ("galloway-cnn", {"width": "wide"}, "expects int"),
    ("galloway-cnn", {"size": 20}, "must be >= 27"),
    ("fc-bnn", {"depth": 2.5}, "must be int"),
    ("toy-mlp", {"hidden": 3}, "valid values: 2, 4"),
    ("fcn", {"input_bits": 9}, "valid values: 1, 2, 3, 4, 5, 6, 7, 8"),
])
def test_bad_names_and_parameters(name, params, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        build(name, **params)


def test_panda_binary_fcn_is_binarynet_mnist_with_four_hidden_layers():
    """BinaryNet.pytorch main_mnist.py's network: normalization inside the model, binary
    linear layers with real biases (inputs binarized from the second layer on), batch norm,
    Hardtanh, dropout before the last hidden batch norm, a full-precision output layer."""
    from bnnrobust.nn import BinaryLinear, Normalize, Sign, clip_latent_weights

    torch.manual_seed(0)
    model = build("fcn", arch="fcn2", precision="binary", width=12).eval()
    kinds = [type(m).__name__ for m in model.body]
    assert kinds[:2] == ["Flatten", "Normalize"] and kinds[-1] == "Linear"
    assert kinds.count("BinaryLinear") == 4 and kinds.count("Sign") == 3
    assert kinds.index("Dropout") == len(kinds) - 4  # then BatchNorm1d, Hardtanh, Linear
    norm = next(m for m in model.body if isinstance(m, Normalize))
    assert (norm.mean, norm.std) == (0.1307, 0.3081)
    binary = [m for m in model.body if isinstance(m, BinaryLinear)]
    assert all(m.bias is not None for m in binary)
    assert not any(isinstance(m, Sign) for m in list(model.body)[:3])  # real first-layer input
    with torch.no_grad():
        for m in binary:
            m.weight.mul_(5)
            m.bias.fill_(3.0)
    clip_latent_weights(model)
    assert all(m.weight.abs().max() <= 1 and m.bias.abs().max() <= 1 for m in binary)


def test_imagenet_alexnet_is_the_xnor_net_reference_layout():
    from bnnrobust.nn import BinaryActivation, BinaryConv2d, BinaryLinear, binary_layers

    torch.manual_seed(0)
    xnor = build("alexnet-imagenet")
    layers = binary_layers(xnor)
    assert [type(m) for m in layers] == [BinaryConv2d] * 4 + [BinaryLinear] * 2
    assert [m.weight.shape[0] for m in layers] == [256, 384, 384, 256, 4096, 4096]
    assert all(m.xnor and m.bias is not None for m in layers)
    convs = [m for m in xnor.modules() if type(m) is torch.nn.Conv2d]
    assert [tuple(c.weight.shape) for c in convs] == [(96, 3, 11, 11)]  # full-precision first
    assert type(xnor.body[-1]) is torch.nn.Linear and xnor.body[-1].weight.shape == (1000, 4096)
    acts = [m for m in xnor.modules() if isinstance(m, BinaryActivation)]
    assert len(acts) == 6 and all(a.bn.eps == 1e-4 for a in acts)
    # the forward weights are ±α per output channel, α the channel's mean |W|
    w = layers[0].weight
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(layers[0].effective_weight(), torch.where(w >= 0, 1.0, -1.0) * alpha)
    full = build("alexnet-imagenet", precision="full")
    assert binary_layers(full) == [] and not any(isinstance(m, BinaryActivation)
                                                 for m in full.modules())
    assert sum(p.numel() for p in full.parameters()) == sum(p.numel() for p in xnor.parameters())


def test_imagenet_alexnet_normalizes_inside_at_the_pixel_scale():
    from bnnrobust.nn import Normalize

    model = build("alexnet-imagenet")
    norm = model.body[0]
    assert isinstance(norm, Normalize)
    x = torch.full((1, 3, 2, 2), 0.5)
    out = norm(x)
    assert torch.allclose(out[0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) * 255)
