"""Integer form of a trained fully connected BNN (``fc-bnn``), for exact attacks (Khalil et al.).

Hidden layer l computes ``h_l = sign(BN(W_l h_{l-1} + b_l))`` with ±1 weights and an optional
real bias (the first layer may also normalize its input, :class:`~bnnrobust.nn.BinaryLinear`'s
``input_normalization``; dropout is the identity at inference). With batch norm, the bias and
the normalization folded in, neuron j fires (+1) iff ``W_l[j] · h_{l-1} >= τ_j`` where ``τ = (μ
− β·sqrt(σ² + eps)/γ − offset) / α`` for the layer's affine map ``α·(W·h) + offset``; a
negative γ flips the inequality, which we fold by negating the neuron's weight row and
threshold, so every neuron has the same ``>=`` form. For layers after the first the pre-
activation is an integer, so the threshold is the integer ``ceil(τ)``, chosen by evaluating
PyTorch's own float32 batch-norm arithmetic on the candidate integers so that the integer
network agrees with the PyTorch model exactly. The first layer sees real inputs in [0, 1]
(threshold ``τ``); for 8-bit images ``x = p/255`` its test is ``W_1 p >= 255·τ``, an integer
threshold too, so the whole network is integer arithmetic up to the real-valued output layer
``V h_D + c``, kept exactly (float32 values held in float64).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bnnrobust.attacks.combinatorial.conv_export import export_conv
from bnnrobust.attacks.combinatorial.integer import (
    ExportError,
    IntegerBNN,
    IntegerBNNModule,
    IntegerLayer,
    dense,
    times,
)
from bnnrobust.nn import BinaryActivation, BinaryLinear

__all__ = ["ExportError", "IntegerBNN", "IntegerBNNModule", "IntegerLayer", "dense", "export",
           "times"]


def _bn_fires(linear: BinaryLinear, bn: nn.BatchNorm1d, j: int,
              values: np.ndarray) -> np.ndarray:
    """PyTorch's own eval-mode arithmetic from the ±1 sum ``W_j·h`` (``values``) to the sign:
    the layer's input normalization and bias (in its operation order), then batch norm."""
    with torch.no_grad():
        a = torch.tensor(values, dtype=torch.float32)
        if linear.input_normalization is not None:
            mean, std = linear.input_normalization
            rowsum = torch.where(linear.weight[j] >= 0, 1.0, -1.0).sum()
            a = (a - mean * rowsum) / std
        if linear.bias is not None:
            a = a + linear.bias[j]
        y = (a - bn.running_mean[j]) / torch.sqrt(bn.running_var[j] + bn.eps) * bn.weight[j] \
            + bn.bias[j]
    return (y >= 0).numpy()


def _integer_threshold(linear: BinaryLinear, bn: nn.BatchNorm1d, j: int, tau: float,
                       sign: int, scale: float) -> int:
    """Smallest integer k with ``sign·k/scale`` firing (by PyTorch's arithmetic), near ``tau``."""
    if not math.isfinite(tau):
        return int(np.iinfo(np.int64).min // 4) if tau < 0 else int(np.iinfo(np.int64).max // 4)
    centre = math.ceil(tau * scale)
    candidates = np.arange(centre - 3, centre + 4)
    fires = _bn_fires(linear, bn, j, sign * candidates / scale)
    idx = np.flatnonzero(fires)
    if len(idx) == 0 or not fires[idx[0]:].all():
        return centre  # float ties beyond resolution: fall back to the exact rational bound
    return int(candidates[idx[0]])


def _fold(linear: BinaryLinear, act: BinaryActivation, *, first: bool) -> IntegerLayer:
    bn = act.bn
    w = torch.where(linear.weight >= 0, 1, -1).to(torch.int8).numpy().copy()
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    mean = bn.running_mean.double().numpy()
    std = np.sqrt(bn.running_var.double().numpy() + bn.eps)
    # the pre-activation batch norm sees is alpha·(W·h) + offset: the layer's input
    # normalization (first layer) and bias folded in
    alpha = np.ones(len(gamma))
    offset = np.zeros(len(gamma))
    if linear.input_normalization is not None:
        norm_mean, norm_std = linear.input_normalization
        alpha /= norm_std
        offset -= norm_mean * w.astype(np.float64).sum(1) / norm_std
    if linear.bias is not None:
        offset += linear.bias.detach().double().numpy()
    thr = np.empty(len(gamma))
    ithr = np.empty(len(gamma), dtype=np.int64)
    scale = 255.0 if first else 1.0
    for j in range(len(gamma)):
        if gamma[j] == 0:
            tau, sign = (-math.inf if beta[j] >= 0 else math.inf), 1
        else:  # BN(alpha·a + offset) >= 0 with alpha > 0
            tau_bn = mean[j] - beta[j] * std[j] / gamma[j]
            tau, sign = (tau_bn - offset[j]) / alpha[j], (1 if gamma[j] > 0 else -1)
        if sign < 0:  # γ < 0: fires iff a <= τ, i.e. (−W)·h >= −τ
            w[j] = -w[j]
        thr[j] = sign * tau
        ithr[j] = _integer_threshold(linear, bn, j, sign * tau, sign, scale) \
            if math.isfinite(tau) else _integer_threshold(linear, bn, j, tau, 1, scale)
    return IntegerLayer(weight=w, threshold=thr, int_threshold=ithr)


def export(model: nn.Module) -> IntegerBNN:
    """The integer form of a trained ``fc-bnn`` (any depth, width and input size), of
    Galloway et al.'s convolutional B model (:func:`.conv_export.export_conv`), of the integer
    BNN an :class:`IntegerBNNModule` wraps, or of a fully connected BNN made of other layers
    (the user's own, Brevitas's) that :func:`.recognize.recognize` maps onto an fc-bnn (it
    needs the model's ``input_shape``)."""
    if isinstance(model, IntegerBNNModule):
        return model.integer
    body = getattr(model, "body", model)
    if any(isinstance(m, nn.Conv2d) for m in body.modules()):
        return export_conv(model)
    if not _bnnrobust_layers(body):
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise ExportError(f"cannot export {type(model).__name__}: not a bnnrobust fc-bnn, "
                              "and recognizing other layers needs the model's input shape "
                              "(--input-shape).")
        from bnnrobust.attacks.combinatorial.recognize import recognize

        rebuilt, _ = recognize(model, example=torch.rand(
            4, *shape, generator=torch.Generator().manual_seed(0)))
        return _export_fc(rebuilt)
    return _export_fc(model)


def _bnnrobust_layers(body: nn.Module) -> bool:
    """Whether ``body`` is built of bnnrobust's binary layers (an fc-bnn or one like it)."""
    return any(isinstance(m, BinaryLinear | BinaryActivation) for m in body.modules())


def _export_fc(model: nn.Module) -> IntegerBNN:
    """The integer form of an fc-bnn (see :func:`export`)."""
    body = getattr(model, "body", model)
    first_layer = getattr(model, "input_layer", None)
    if first_layer is not None and not isinstance(first_layer, nn.Identity):
        raise ExportError(f"cannot export layer 'input_layer' ({type(first_layer).__name__}): "
                          "only fc-bnn models without input quantization are supported.")
    modules = list(body.named_children()) if isinstance(body, nn.Sequential) else []
    if not modules:
        raise ExportError(f"cannot export {type(model).__name__}: expected an fc-bnn "
                          "(Flatten, then BinaryLinear + BinaryActivation blocks, then Linear).")
    if isinstance(modules[0][1], nn.Flatten):
        modules = modules[1:]
    layers = []
    modules = [(n, m) for n, m in modules if not isinstance(m, nn.Dropout)]  # eval: identity
    i = 0
    while i < len(modules) - 1:
        (lname, linear), (aname, act) = modules[i], modules[i + 1]
        if not isinstance(linear, BinaryLinear) or linear.stochastic \
                or linear.xnor or linear.input_act is not None \
                or (linear.input_normalization is not None and layers):
            raise ExportError(f"cannot export layer '{lname}' ({type(linear).__name__}): expected "
                              "a deterministic BinaryLinear without xnor or input binarization "
                              "(input normalization on the first layer only).")
        if not isinstance(act, BinaryActivation):
            raise ExportError(f"cannot export layer '{aname}' ({type(act).__name__}): expected a "
                              "BinaryActivation (batch norm then sign) after each BinaryLinear.")
        layers.append(_fold(linear, act, first=not layers))
        i += 2
    name, out = modules[-1]
    if i != len(modules) - 1 or not isinstance(out, nn.Linear) or isinstance(out, BinaryLinear) \
            or not layers:
        raise ExportError(f"cannot export layer '{name}' ({type(out).__name__}): expected the "
                          "real-valued nn.Linear output layer after the binary hidden layers.")
    bias = out.bias.detach().double().numpy() if out.bias is not None \
        else np.zeros(out.out_features)
    return IntegerBNN(layers=tuple(layers), out_weight=out.weight.detach().double().numpy(),
                      out_bias=bias)
