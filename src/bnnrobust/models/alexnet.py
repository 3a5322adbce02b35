"""AlexNet for CIFAR (binary or full precision) and for ImageNet (XNOR or full precision).

``alexnet-cifar`` (Panda et al.'s CIFAR-10 network) follows BinaryNet.pytorch's
``models/alexnet_binary.py`` (Hubara et al.), the code Panda et al. cite. That network is
ImageNet-shaped (an 11×11/4 first convolution and 3×3/2 pooling on 224×224 crops, 6×6 maps
before the classifier); on 32×32 CIFAR images we keep its layer sequence, widths and
normalization and take CIFAR-sized kernels: five convolutions (64w, 192w, 384w, 256w, 256
channels; kernels 5, 5, 3, 3, 3; 2×2 max-pooling after 1, 2 and 5) and three fully connected
layers (``fc_width``, ``fc_width``, classes), each followed by batch norm; the order is the
reference's (convolution → pooling → batch norm → activation). ``binary``: every convolution and
linear layer has ±1 weights (the image itself is not binarized, as the reference's
``BinarizeConv2d`` skips 3-channel inputs); every other layer input is binarized (batch norm →
sign, Hubara straight-through for the reference's Hardtanh); the output is batch-normalized.
Inputs in [0, 1] are normalized inside the model with ImageNet's mean and std, as the
reference's ``preprocess.py`` does for CIFAR.
``full``: the same with ReLU activations and real weights. ``width`` is BinaryNet's inflation
ratio ``ratioInfl`` (3, its value).

``alexnet-imagenet`` (Panda et al.'s ImageNet network, Figure 8) follows XNOR-Net-PyTorch's
``ImageNet/networks/model_list/alexnet.py`` (Rastegari et al.'s XNOR AlexNet), on 227×227 crops:
a full-precision first convolution (96 filters, 11×11, stride 4; batch norm, ReLU, 3×3/2
max-pooling), four XNOR convolutions (256 5×5, 384, 384, 256 3×3; pooling after the first and
the last) and two XNOR fully connected layers of 4096, then batch norm, dropout 0.5 and a
full-precision linear classifier. An XNOR layer is batch norm (ε = 1e-4) → sign (Hubara
straight-through) → [dropout 0.5 in the second fully connected layer] → convolution or linear
map with ±1 weights scaled by the mean |W| of each output channel, with a real bias → ReLU.
``full``: the same network with the sign removed and real weights (the like-for-like
full-precision AlexNet-BN). Inputs in [0, 1] are mean-subtracted inside the model at the
255-level pixel scale of the reference's Caffe mean image (per-channel ImageNet means here, not
its per-pixel mean image). Weights start from N(0, 1/fan_in) as the reference's ``main.py``
initializes them (it passes 1/fan_in as the standard deviation).
"""

from __future__ import annotations

from torch import nn

from bnnrobust.models.base import INPUT_BITS, ModelEntry, Param, register
from bnnrobust.nn import BinaryActivation, BinaryConv2d, BinaryLinear, Normalize, Sign

#: ImageNet's RGB channel means (the per-channel means of torchvision's normalization)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet's RGB standard deviations (BinaryNet.pytorch normalizes CIFAR inputs with them too)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the reference subtracts a mean image from pixels on the 0..255 scale
PIXEL_SCALE = (1 / 255, 1 / 255, 1 / 255)
#: (out channels, kernel, padding, max-pool after) of the four XNOR convolutions
_XNOR_CONVS = ((256, 5, 2, True), (384, 3, 1, False), (384, 3, 1, False), (256, 3, 1, True))

_CONVS = ((64, 5, True), (192, 5, True), (384, 3, False), (256, 3, False), (256, 3, True))


def alexnet_cifar(*, precision: str, width: int, fc_width: int, num_classes: int) -> nn.Sequential:
    """Build the body (see the module docstring)."""
    binary = precision == "binary"

    def act() -> nn.Module:
        return Sign(ste="hubara") if binary else nn.ReLU()

    layers: list[nn.Module] = [Normalize(IMAGENET_MEAN, IMAGENET_STD)]
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
        "width": Param(3, "channel inflation ratio of conv layers 1-4 (BinaryNet's ratioInfl, 3)"),
        "fc_width": Param(4096, "units of the two hidden fully connected layers"),
        "num_classes": Param(10, "number of classes (10 for CIFAR-10, 100 for CIFAR-100)"),
        "input_bits": INPUT_BITS,
    },
    description="AlexNet-style CIFAR network (BinaryNet.pytorch), binary or full precision",
    input_shape=lambda p: (3, 32, 32),
    num_classes=lambda p: p["num_classes"],
    reference="Hubara et al. Binarized Neural Networks. NeurIPS 2016; used by Panda et al.",
))


def _fan_in_init(module: nn.Module) -> None:
    """N(0, 1/fan_in) weights for every convolution and linear map (the reference's init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / m.weight[0].numel())


def _xnor_block(cin: int, cout: int, *, xnor: bool, kernel: int = 0, padding: int = 0,
                dropout: float = 0.0) -> list[nn.Module]:
    """Batch norm (ε = 1e-4) → sign → [dropout] → XNOR convolution (``kernel`` > 0) or linear
    map → ReLU; without ``xnor`` the sign is left out and the weights are real."""
    dims = 2 if kernel else 1
    if xnor:
        head: list[nn.Module] = [BinaryActivation(cin, dims=dims, ste="hubara")]
        head[0].bn.eps = 1e-4
    else:
        head = [nn.BatchNorm2d(cin, eps=1e-4) if kernel else nn.BatchNorm1d(cin, eps=1e-4)]
    if dropout:
        head.append(nn.Dropout(dropout))
    if kernel:
        layer = (BinaryConv2d(cin, cout, kernel, padding=padding, bias=True, xnor=True,
                              ste="hubara", init_std=None) if xnor
                 else nn.Conv2d(cin, cout, kernel, padding=padding))
    else:
        layer = (BinaryLinear(cin, cout, bias=True, xnor=True, ste="hubara", init_std=None)
                 if xnor else nn.Linear(cin, cout))
    return [*head, layer, nn.ReLU()]


def alexnet_imagenet(*, precision: str, num_classes: int) -> nn.Sequential:
    """Build the body (see the module docstring)."""
    xnor = precision == "xnor"
    layers: list[nn.Module] = [Normalize(IMAGENET_MEAN, PIXEL_SCALE),
                               nn.Conv2d(3, 96, 11, stride=4), nn.BatchNorm2d(96, eps=1e-4),
                               nn.ReLU(), nn.MaxPool2d(3, 2)]
    cin = 96
    for cout, kernel, padding, pool in _XNOR_CONVS:
        layers += _xnor_block(cin, cout, xnor=xnor, kernel=kernel, padding=padding)
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
        cin = cout
    layers.append(nn.Flatten())
    layers += _xnor_block(256 * 6 * 6, 4096, xnor=xnor)
    layers += _xnor_block(4096, 4096, xnor=xnor, dropout=0.5)
    layers += [nn.BatchNorm1d(4096, eps=1e-3), nn.Dropout(0.5), nn.Linear(4096, num_classes)]
    body = nn.Sequential(*layers)
    _fan_in_init(body)
    return body


register(ModelEntry(
    name="alexnet-imagenet",
    builder=alexnet_imagenet,
    params={
        "precision": Param("xnor", "xnor (XNOR-Net) or full precision", str,
                           choices=("xnor", "full")),
        "num_classes": Param(1000, "number of classes (1000 for ImageNet)"),
        "input_bits": INPUT_BITS,
    },
    description="AlexNet for 227×227 ImageNet crops (XNOR-Net-PyTorch), XNOR or full precision",
    input_shape=lambda p: (3, 227, 227),
    num_classes=lambda p: p["num_classes"],
    reference="Rastegari et al. XNOR-Net. ECCV 2016 (jiecaoyu/XNOR-Net-PyTorch); used by Panda "
              "et al.",
))
