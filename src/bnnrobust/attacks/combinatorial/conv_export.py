"""Integer form of Galloway et al.'s convolutional BNN (``galloway-cnn``, precision ``binary``:
their model B), for the exact attacks on the paper's continuous problem.

The B model (Galloway, Taylor & Moussa 2018; AngusG/cleverhans-attacking-bnns): zero padding, a
real first convolution and ReLU, then binary blocks ``batch norm → sign → ±1 convolution →
ReLU``, flatten, a real linear output. Every sign neuron is ``sign(BN(ReLU(a)))`` of the
convolution ``a`` below it, and with ``r = max(a, 0)`` that is a threshold on ``a`` itself:

- γ > 0: BN increases with r, so the neuron fires everywhere when ``BN(0) >= 0`` (a constant
  +1), else iff ``a >= τ`` with ``τ = μ − β·sqrt(σ² + eps)/γ > 0``;
- γ < 0: BN decreases, so it never fires when ``BN(0) < 0``, else iff ``a <= τ`` (folded, as the
  fully connected export does, into ``(−W)·h >= −τ``); γ = 0: the constant sign of β.

The first convolution is real (``τ`` real, on inputs in [0, 1]; the solvers keep a float32
margin from it, scaled by ``|μ| + |β|·sqrt(σ² + eps)/|γ|``, the size of the terms the batch
norm rounds); the binary convolutions are integer sums of ±1 products, whose thresholds are
found by evaluating PyTorch's own float32 batch norm on every integer the sum can take, so the
integer network agrees with the model exactly there. The last binary convolution feeds its
ReLU straight to the output layer: :attr:`.export.IntegerBNN.relu_weight`. Convolutions are
stored as SciPy sparse matrices over the flattened (C, H, W) input (weight sharing is
expanded, zeros are not stored: a 64-kernel first layer on MNIST is 12,544 rows of 64
nonzeros).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from bnnrobust.attacks.combinatorial.integer import ExportError, IntegerBNN, IntegerLayer
from bnnrobust.nn import BinaryConv2d


def conv_matrix(weight: np.ndarray, in_shape: tuple[int, int, int], *, stride: int,
                padding: tuple[int, int, int, int] = (0, 0, 0, 0)) -> sparse.csr_matrix:
    """A 2-D convolution (no bias) as a sparse matrix: row ``(o·H_out + i)·W_out + j`` holds
    output ``(o, i, j)``'s weights over the flattened ``(C, H, W)`` input; ``padding`` is
    ZeroPad2d's ``(left, right, top, bottom)`` (padded zeros contribute nothing)."""
    cout, cin, kh, kw = weight.shape
    c_in, height, width = in_shape
    if cin != c_in:
        raise ExportError(f"a convolution over {cin} channels meets an input of {c_in}.")
    left, right, top, bottom = padding
    h_out, w_out = _out_hw((height, width), (kh, kw), stride=stride, padding=padding)
    o, c, u, v, i, j = np.meshgrid(np.arange(cout), np.arange(cin), np.arange(kh),
                                   np.arange(kw), np.arange(h_out), np.arange(w_out),
                                   indexing="ij", sparse=False)
    y, x = i * stride + u - top, j * stride + v - left
    valid = (y >= 0) & (y < height) & (x >= 0) & (x < width) & (weight[o, c, u, v] != 0)
    rows = ((o * h_out + i) * w_out + j)[valid]
    cols = ((c * height + y) * width + x)[valid]
    return sparse.csr_matrix((weight[o, c, u, v][valid], (rows, cols)),
                             shape=(cout * h_out * w_out, cin * height * width))


def _bn(bn: nn.BatchNorm2d, channel: int, values: np.ndarray) -> np.ndarray:
    """PyTorch's eval-mode batch norm of ``values`` on ``channel`` (float32, its arithmetic)."""
    with torch.no_grad():
        t = torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1)
        out = F.batch_norm(t, bn.running_mean[channel:channel + 1],
                           bn.running_var[channel:channel + 1], bn.weight[channel:channel + 1],
                           bn.bias[channel:channel + 1], training=False, eps=bn.eps)
    return out.reshape(-1).numpy()


def _real_signs(bn: nn.BatchNorm2d, matrix: sparse.csr_matrix, per_channel: int,
                bias: np.ndarray | None) -> IntegerLayer:
    """The first (real) layer: ``sign(BN(ReLU(W x + b)))`` as thresholds on ``W x``."""
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    mean = bn.running_mean.double().numpy()
    std = np.sqrt(bn.running_var.double().numpy() + bn.eps)
    rows = matrix.shape[0]
    sign, tau, scale = np.ones(rows), np.zeros(rows), np.zeros(rows)
    for ch in range(len(gamma)):
        part = slice(ch * per_channel, (ch + 1) * per_channel)
        at_zero = _bn(bn, ch, np.zeros(1))[0] >= 0
        if gamma[ch] == 0 or (gamma[ch] > 0) == at_zero:
            # constant: fires everywhere (γ > 0, BN(0) >= 0) or nowhere (γ < 0, BN(0) < 0)
            sign[part], tau[part] = 0.0, (-1.0 if at_zero else 1.0)
            continue
        t = mean[ch] - beta[ch] * std[ch] / gamma[ch] - (0.0 if bias is None else bias[ch])
        s = 1.0 if gamma[ch] > 0 else -1.0
        sign[part], tau[part] = s, s * t
        scale[part] = abs(mean[ch]) + abs(beta[ch]) * std[ch] / abs(gamma[ch])
    weight = sparse.diags(sign.astype(np.float64)) @ matrix
    return IntegerLayer(weight=weight.tocsr(), threshold=tau, int_threshold=None,
                        rounding=np.maximum(scale, np.abs(tau)))


def _integer_signs(bn: nn.BatchNorm2d, matrix: sparse.csr_matrix, per_channel: int,
                   fan_in: int, name: str) -> IntegerLayer:
    """A binary layer: ``sign(BN(ReLU(a)))`` of the integer sums ``a = W h`` in
    ``[−fan_in, fan_in]`` as integer thresholds, from PyTorch's arithmetic on every value."""
    values = np.arange(-fan_in, fan_in + 1)
    rows = matrix.shape[0]
    sign, thr = np.ones(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64)
    for ch in range(bn.num_features):
        part = slice(ch * per_channel, (ch + 1) * per_channel)
        fires = _bn(bn, ch, np.maximum(values, 0)) >= 0
        if fires.all() or not fires.any():
            sign[part], thr[part] = 0, (-1 if fires.all() else 1)
        elif fires[np.argmax(fires):].all():  # fires iff a >= t
            thr[part] = values[np.argmax(fires)]
        elif fires[:len(fires) - np.argmax(fires[::-1])].all():  # fires iff a <= t
            sign[part], thr[part] = -1, -values[len(fires) - 1 - np.argmax(fires[::-1])]
        else:
            raise ExportError(f"layer '{name}' channel {ch}: its batch norm fires on a "
                              "non-interval set of integer sums; cannot export it.")
    weight = (sparse.diags(sign.astype(np.float64)) @ matrix).tocsr().astype(np.int8)
    return IntegerLayer(weight=weight, threshold=thr.astype(np.float64), int_threshold=thr)


def _binary_weight(conv: BinaryConv2d) -> np.ndarray:
    return torch.where(conv.weight >= 0, 1, -1).to(torch.int8).numpy()


def export_conv(model: nn.Module) -> IntegerBNN:
    """The integer form of a trained Galloway B model (see the module doc), or an
    :class:`.export.ExportError` naming the layer that does not fit it."""
    first_layer = getattr(model, "input_layer", None)
    if first_layer is not None and not isinstance(first_layer, nn.Identity):
        raise ExportError(f"cannot export layer 'input_layer' ({type(first_layer).__name__}): "
                          "only models without input quantization are supported.")
    body = getattr(model, "body", model)
    shape = getattr(model, "input_shape", None)
    modules = [(n, m) for n, m in body.named_children() if not isinstance(m, nn.Dropout)]
    if shape is None or len(shape) != 3:
        raise ExportError("cannot export a convolutional BNN without its (C, H, W) input shape.")
    padding = (0, 0, 0, 0)
    if modules and isinstance(modules[0][1], nn.ZeroPad2d):
        padding = tuple(int(v) for v in modules[0][1].padding)
        modules = modules[1:]

    def expect(index: int, kind: type, what: str) -> nn.Module:
        if index >= len(modules) or not isinstance(modules[index][1], kind):
            name, found = modules[index] if index < len(modules) else ("end", None)
            raise ExportError(f"cannot export layer '{name}' ({type(found).__name__}): expected "
                              f"{what} (Galloway's B model: conv → ReLU → [BN → sign → binary "
                              "conv → ReLU]... → flatten → linear).")
        return modules[index][1]

    conv = expect(0, nn.Conv2d, "the real first convolution")
    if isinstance(conv, BinaryConv2d) or conv.groups != 1 or conv.dilation != (1, 1) \
            or conv.padding != (0, 0) or conv.stride[0] != conv.stride[1]:
        raise ExportError(f"cannot export layer '{modules[0][0]}': expected a real convolution "
                          "without groups, dilation or built-in padding, square stride.")
    expect(1, nn.ReLU, "a ReLU after the first convolution")
    matrix = conv_matrix(conv.weight.detach().double().numpy(), tuple(shape),
                         stride=conv.stride[0], padding=padding)
    bias = None if conv.bias is None else conv.bias.detach().double().numpy()
    c, h, w = conv.out_channels, *_out_hw(tuple(shape[1:]), conv.kernel_size,
                                           stride=conv.stride[0], padding=padding)
    index, layers, relu_weight, fan_in = 2, [], None, 0
    while index < len(modules) and isinstance(modules[index][1], BinaryConv2d):
        name, block = modules[index]
        if block.input_act is None or block.stochastic or block.xnor or block.bias is not None \
                or block.groups != 1 or block.padding != (0, 0) \
                or block.stride[0] != block.stride[1]:
            raise ExportError(f"cannot export layer '{name}': expected a deterministic binary "
                              "convolution with batch norm and sign on its input, no bias, "
                              "xnor, groups or padding (Galloway's B model; C and S scale or "
                              "sample).")
        expect(index + 1, nn.ReLU, f"a ReLU after '{name}'")
        bn = block.input_act.bn
        if not layers:
            layers.append(_real_signs(bn, matrix, h * w, bias))
        else:
            layers.append(_integer_signs(bn, matrix, h * w, fan_in, name))
        weight = _binary_weight(block)
        matrix = conv_matrix(weight, (c, h, w), stride=block.stride[0])
        fan_in = int(np.prod(weight.shape[1:]))
        c, (h, w) = block.out_channels, _out_hw((h, w), block.kernel_size,
                                                stride=block.stride[0], padding=(0, 0, 0, 0))
        index += 2
        relu_weight = matrix.astype(np.int8)
    if not layers:
        name, found = modules[index] if index < len(modules) else ("end", None)
        raise ExportError(f"cannot export layer '{name}' ({type(found).__name__}): expected a "
                          "binary convolution after the first one (the exact attacks need a "
                          "BNN: Galloway's B model, precision 'binary').")
    expect(index, nn.Flatten, "a Flatten after the last binary block")
    out = expect(index + 1, nn.Linear, "the real linear output layer")
    if index + 2 != len(modules) or out.in_features != relu_weight.shape[0]:
        raise ExportError("cannot export: expected the linear output layer last, over the "
                          "flattened last binary convolution.")
    bias_out = np.zeros(out.out_features) if out.bias is None \
        else out.bias.detach().double().numpy()
    return IntegerBNN(layers=tuple(layers), out_weight=out.weight.detach().double().numpy(),
                      out_bias=bias_out, relu_weight=relu_weight)


def _out_hw(size: tuple[int, int], kernel: tuple[int, int], *, stride: int,
            padding: tuple[int, int, int, int]) -> tuple[int, int]:
    """A convolution's output height and width (``padding`` as ZeroPad2d's left, right, top,
    bottom)."""
    left, right, top, bottom = padding
    return ((size[0] + top + bottom - kernel[0]) // stride + 1,
            (size[1] + left + right - kernel[1]) // stride + 1)
