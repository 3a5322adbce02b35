"""Recognize a fully connected BNN made of the user's own layers (or Brevitas's) and rebuild it
from bnnrobust's layers, which :func:`~.export.export` turns into integer form.

The model is run once with hooks, so the layers are taken in the order its forward pass calls
them, whatever their classes or nesting; each called module is mapped by what it computes,
found by probing it, not by its name:

- *linear*: a module with a 2-D ``weight`` that computes an affine map ``W x + b`` (its
  effective ``W`` and ``b`` read off by probing; a weight function such as ``sign(w)``, a
  Brevitas binary weight quantizer, is whatever it computes);
- *batch norm*: ``nn.BatchNorm1d`` (its eval-mode statistics);
- *sign*: a module whose output is ±1 with the sign of its input (its value at 0 is noted:
  +1 as bnnrobust's, Brevitas's and Larq's; 0 as ``torch.sign``; −1);
- skipped: flatten, dropout and anything else that is the identity in eval mode;
- a module none of these describe, but whose calls contain mapped modules, is a container
  (looked into); any other is an error naming it.

The sequence must read ``(linear, [batch norm], sign)`` × depth, then a linear output layer;
the hidden linear layers' weights must be ±1 (the first layer may normalize its input: a
:class:`~bnnrobust.models.external.UserModel`'s bounds and scalar normalization are folded
into it). The rebuilt network is checked against the model on random and given inputs before
it is used; the exact attacks still replay every result through the model itself.

Example::

    rebuilt, structure = recognize(model, example=x[:8])
    print("\\n".join(structure))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bnnrobust.attacks.combinatorial.integer import ExportError
from bnnrobust.nn import BinaryActivation, BinaryLinear
from bnnrobust.train import eval_mode


@dataclass
class _Unit:
    """One mapped module: ``kind`` linear / batchnorm / sign / skip, and what was read."""

    name: str
    module: nn.Module
    kind: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    zero: float | None = None  # a sign's value at 0


def recognize(model: nn.Module, *, example: torch.Tensor) -> tuple[nn.Sequential, list[str]]:
    """bnnrobust's fully connected BNN that computes what ``model`` does, and the recognized
    structure, one line per layer (see the module doc). ``example``: a few inputs of the
    model's shape."""
    with torch.no_grad(), eval_mode(model):  # every submodule's mode restored afterwards
        prefix, net = _split_wrapper(model)
        calls = _calls(net, prefix(example.float()))
        units = _units(net, calls)
        rebuilt, lines = _rebuild(units, _input_affine(model))
        _check_equal(model, rebuilt, example)
    return rebuilt, lines


def _split_wrapper(model: nn.Module):
    """``(prepare, network)``: a UserModel's input preparation and wrapped network, else the
    identity and the model."""
    prepare = getattr(model, "prepare", None)
    net = getattr(model, "net", None)
    if callable(prepare) and isinstance(net, nn.Module):
        if getattr(model, "output_index", None) is not None or \
                getattr(model, "logits_from_probs", False):
            raise ExportError("an exact attack needs the network's logits directly: "
                              "--output-index and --logits-from-probs are not supported here.")
        return prepare, net
    return (lambda x: x), model


def _input_affine(model: nn.Module) -> tuple[float, float] | None:
    """The scalar ``(mean, std)`` with ``prepare(x) = (x − mean) / std`` of a UserModel (its
    bounds and normalization), None for the identity; per-channel normalization is refused."""
    if getattr(model, "prepare", None) is None or getattr(model, "net", None) is None:
        return None
    low, high = model.bounds
    mean = model.mean.tolist() if len(model.mean) else [0.0]
    std = model.std.tolist() if len(model.std) else [1.0]
    if len(mean) != 1:
        raise ExportError("an exact attack folds the input normalization into the first "
                          "layer: give one mean and one standard deviation (--normalize "
                          "MEAN,STD), not one per channel.")
    # (low + (high − low) x − m) / s = (x − (m − low)/(high − low)) / (s/(high − low))
    scale = high - low
    folded = ((mean[0] - low) / scale, std[0] / scale)
    return None if folded == (0.0, 1.0) else folded


def _calls(net: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, int]]:
    """Every module call of ``net``'s forward pass on ``x``: ``(name, module, depth)`` in
    call order (depth: how many calls enclose it)."""
    names = {id(m): n for n, m in net.named_modules()}
    calls, depth, handles = [], [0], []

    def before(module, _inputs):
        calls.append((names.get(id(module), type(module).__name__), module, depth[0]))
        depth[0] += 1

    def after(_module, _inputs, _output):
        depth[0] -= 1

    for module in net.modules():
        if module is not net:
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
    try:
        net(x)
    except Exception as exc:
        raise ExportError(f"the network failed on an input of shape {tuple(x.shape)}: "
                          f"{type(exc).__name__}: {exc}.") from None
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _units(net: nn.Module, calls: list[tuple[str, nn.Module, int]]) -> list[_Unit]:
    """The mapped modules in call order: a call is mapped if it can be, else looked into."""
    units: list[_Unit] = []
    i = 0
    while i < len(calls):
        name, module, depth = calls[i]
        inner = i + 1
        while inner < len(calls) and calls[inner][2] > depth:
            inner += 1
        unit = _map(name, module)
        if unit is not None:
            units.append(unit)
            i = inner  # its own calls (a quantizer inside a linear layer) are part of it
        elif inner > i + 1:
            i += 1  # a container: look into its calls
        else:
            raise ExportError(f"cannot map layer '{name}' ({type(module).__name__}) of a fully "
                              "connected BNN: expected a linear layer (2-D weight, affine), "
                              "BatchNorm1d, a sign activation (±1 outputs), or a layer that is "
                              "the identity in eval mode (flatten, dropout).")
    return [u for u in units if u.kind != "skip"]


def _map(name: str, module: nn.Module) -> _Unit | None:
    """What ``module`` computes, by probing (None: it is none of the mapped kinds)."""
    if isinstance(module, nn.BatchNorm1d):
        return _Unit(name, module, "batchnorm")
    if isinstance(module, nn.Flatten | nn.Dropout | nn.Identity):
        return _Unit(name, module, "skip")
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return _affine(name, module, weight.shape[1])
    probe = torch.tensor([[-100.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 100.0]])
    try:
        out = module(probe)
    except Exception:  # a layer that does not take a vector: not a sign or an identity
        return None
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        return None
    if torch.equal(out, probe):
        return _Unit(name, module, "skip")
    nonzero = probe != 0
    if torch.equal(out[nonzero], torch.sign(probe[nonzero])) and float(out[0, 3]) in (-1, 0, 1):
        return _Unit(name, module, "sign", zero=float(out[0, 3]))
    return None


def _affine(name: str, module: nn.Module, n_in: int) -> _Unit | None:
    """The effective ``W`` and ``b`` of an affine ``module`` on ``n_in`` inputs (None if it
    is not affine)."""
    try:
        basis = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)])
        out = module(basis)
        random = torch.randn(16, n_in, generator=torch.Generator().manual_seed(0))
        check = module(random)
    except Exception:
        return None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    bias = _exact(out[0], getattr(module, "bias", None))
    weight = _exact((out[1:] - out[0]).T.contiguous(), getattr(module, "weight", None))
    expected = random @ weight.T + bias
    if not torch.allclose(check, expected, rtol=1e-4, atol=1e-4 * (1 + expected.abs().max())):
        return None
    has_bias = bool(bias.abs().max() > 0)
    return _Unit(name, module, "linear", weight=weight, bias=bias if has_bias else None)


def _exact(probed: torch.Tensor, stored: object) -> torch.Tensor:
    """The exact values behind ``probed`` (read off a float32 forward pass, so off by rounding):
    the module's ``stored`` parameter where it is what was computed, else ±1 where the probe
    is ±1 within rounding (a sign weight function), else the probe itself."""
    scale = 1e-5 * (1 + float(probed.abs().max()))
    if isinstance(stored, torch.Tensor) and stored.shape == probed.shape and \
            torch.allclose(stored.detach().float(), probed, rtol=0, atol=scale):
        return stored.detach().float().clone()
    if torch.allclose(probed.abs(), torch.ones_like(probed), rtol=0, atol=scale):
        return torch.sign(probed)
    return probed


def _rebuild(units: list[_Unit], affine: tuple[float, float] | None
             ) -> tuple[nn.Sequential, list[str]]:
    """bnnrobust's layers from the mapped units (see the module doc)."""
    layers: list[nn.Module] = [nn.Flatten()]
    lines = ["input" + ("" if affine is None else
                        f", normalized (x − {affine[0]:.6g}) / {affine[1]:.6g}")]
    i = 0
    while i < len(units) - 1:
        linear = units[i]
        if linear.kind != "linear":
            raise ExportError(f"cannot map layer '{linear.name}' "
                              f"({type(linear.module).__name__}) here: expected a linear layer "
                              "(a hidden block is linear, [batch norm], sign).")
        j = i + 1
        bn = units[j] if units[j].kind == "batchnorm" else None
        j += bn is not None
        if j >= len(units) or units[j].kind != "sign":
            where = units[j] if j < len(units) else units[-1]
            raise ExportError(f"cannot map layer '{where.name}' ({type(where.module).__name__}) "
                              f"after '{linear.name}': expected a sign activation.")
        sign = units[j]
        w = linear.weight
        alpha = w.abs().amax(1)  # a scaled binary layer (Brevitas's default 0.1): α·(±1)
        if not (torch.equal(w.abs(), alpha[:, None].expand_as(w)) and (alpha > 0).all()):
            raise ExportError(f"layer '{linear.name}' ({type(linear.module).__name__}) has "
                              f"weights other than ±α (|w| from {float(w.abs().min()):.4g} to "
                              f"{float(w.abs().max()):.4g} within a neuron); a hidden layer of "
                              "a BNN the exact attacks take has binary weights.")
        out_features, in_features = w.shape
        first = len(layers) == 1
        layer = BinaryLinear(in_features, out_features, bias=linear.bias is not None,
                             ste="hubara", init_std=None,
                             input_normalization=affine if first else None)
        layer.weight.data.copy_(torch.sign(w))
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias / alpha)
        layers += [layer, _activation(bn, alpha, out_features)]
        scale = "" if torch.equal(alpha, torch.ones_like(alpha)) else \
            f" (scaled by {float(alpha.min()):.4g}" + (
                "" if alpha.min() == alpha.max() else f"..{float(alpha.max()):.4g}") + \
            ", folded into the batch norm)"
        zero = {1.0: "+1", 0.0: "0 (torch.sign; +1 in the integer form, checked by replay)",
                -1.0: "−1 (+1 in the integer form, checked by replay)"}[sign.zero]
        lines.append(f"'{linear.name}' ({type(linear.module).__name__}): ±1 linear "
                     f"{in_features}→{out_features}{', bias' if linear.bias is not None else ''}"
                     f"{scale}"
                     + (f"; '{bn.name}' batch norm" if bn is not None else "; no batch norm")
                     + f"; '{sign.name}' ({type(sign.module).__name__}) sign, 0 ↦ {zero}")
        i = j + 1
    if i != len(units) - 1 or units[-1].kind != "linear" or len(layers) == 1:
        last = units[i] if i < len(units) else units[-1]
        raise ExportError(f"cannot map layer '{last.name}' ({type(last.module).__name__}): "
                          "expected the real-valued linear output layer after the binary "
                          "hidden layers.")
    out = units[-1]
    head = nn.Linear(out.weight.shape[1], out.weight.shape[0])
    head.weight.data.copy_(out.weight)
    head.bias.data.copy_(out.bias if out.bias is not None else torch.zeros(out.weight.shape[0]))
    lines.append(f"'{out.name}' ({type(out.module).__name__}): real linear output "
                 f"{out.weight.shape[1]}→{out.weight.shape[0]}")
    return nn.Sequential(*layers, head).eval(), lines


def _activation(bn: _Unit | None, alpha: torch.Tensor, width: int) -> BinaryActivation:
    """bnnrobust's batch norm and sign for a layer whose sum was scaled by ``alpha`` (per
    neuron, > 0): ``BN(α·z)`` is ``BN'(z)`` with the mean divided by α and the variance (with
    its eps) by α²; without a batch norm, the sign of the sum itself."""
    eps = bn.module.eps if bn is not None else 1e-5
    act = BinaryActivation(width, dims=1, ste="hubara", eps=eps)
    if bn is None:
        act.bn.running_var.fill_(1.0 - eps)
        return act.eval()
    act.bn.load_state_dict(bn.module.state_dict())
    if not torch.equal(alpha, torch.ones_like(alpha)):
        variance = (bn.module.running_var + eps) / alpha**2 - eps
        if (variance <= 0).any():
            raise ExportError(f"the scale of the layer before '{bn.name}' is too large to fold "
                              "into its batch norm.")
        act.bn.running_mean.copy_(bn.module.running_mean / alpha)
        act.bn.running_var.copy_(variance)
    return act.eval()


def _check_equal(model: nn.Module, rebuilt: nn.Module, example: torch.Tensor) -> None:
    """Refuse a rebuilt network whose logits differ from the model's."""
    x = torch.cat([example.float(), torch.rand(64, *example.shape[1:],
                                               generator=torch.Generator().manual_seed(0))])
    theirs, ours = model(x), rebuilt(x)
    gap = float((theirs - ours).abs().max())
    if gap > 1e-3 * (1 + float(theirs.abs().max())) or not torch.equal(theirs.argmax(1),
                                                                      ours.argmax(1)):
        raise ExportError(f"the recognized structure does not reproduce the model (logits "
                          f"differ by up to {gap:.3g}): its forward pass computes something "
                          "between its layers that the hooks do not see (a function call in "
                          "forward?).")
