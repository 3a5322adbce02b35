"""Bring your own model: a Python factory with a state dict, or an ONNX file, behind the contract
every zoo model keeps (inputs in [0, 1], logits out).

- :func:`from_factory` imports ``package.module:factory`` (from the current folder or an
  installed package), calls it with no arguments, checks it returned an ``nn.Module`` and loads
  ``weights`` (a state dict, read with ``torch.load(weights_only=True)``, so loading runs no
  code; every key and shape must fit).
- :func:`from_onnx` converts an ONNX file with onnx2torch (the ``onnx`` extra), after
  checks: the file must parse and pass ONNX's checker, a model above opset 17 is
  first converted down with ONNX's version converter (onnx2torch follows the operator sets up
  to 17), and every operator must have a converter — otherwise the error names the ones that
  do not (:func:`onnx_support`). Sign, BatchNormalization, Gemm/MatMul, Conv, Relu, Clip,
  Where and the shape operators a PyTorch export writes are among the supported ones.
- :class:`UserModel` wraps either: ``bounds`` maps [0, 1] onto the range the network expects,
  ``normalize`` subtracts a per-channel mean and divides by a standard deviation inside the
  model (so attacks keep seeing [0, 1] inputs and budgets mean what they say), ``output_index``
  picks the logits out of a tuple output and ``logits_from_probs`` takes the log of a softmax
  output. :func:`check_outputs` runs it once and refuses, with the option to use, a tuple,
  probabilities or a class count other than the one declared.

Example::

    net = from_factory("mynets:small_bnn", weights=Path("small_bnn.pt"))
    model = UserModel(net, name="mynets:small_bnn", input_shape=(1, 28, 28), num_classes=10,
                      normalize=((0.1307,), (0.3081,)))
    check_outputs(model, x[:8])
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from bnnrobust.errors import ModelError

#: the highest operator set onnx2torch converts (newer models are converted down first)
ONNX_OPSET = 17


class UserModel(nn.Module):
    """A user's network behind the zoo's contract (see the module doc).

    Args:
        net: the user's ``nn.Module``.
        name: how reports name it (e.g. ``"mynets:small_bnn"`` or the ONNX file's name).
        input_shape: the shape of one input without the batch dimension, or None (not checked).
        num_classes: the classes the logits score, or None (taken from the first output).
        normalize: ``(mean, std)``, one value or one per channel, applied after ``bounds``.
        bounds: ``(low, high)``, the input range the network expects (default (0, 1)).
        output_index: the element of a tuple output that holds the logits.
        logits_from_probs: the network returns probabilities; use their log as logits.
    """

    def __init__(self, net: nn.Module, *, name: str, input_shape: Sequence[int] | None = None,
                 num_classes: int | None = None,
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0), output_index: int | None = None,
                 logits_from_probs: bool = False) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ModelError(f"the model must be a torch.nn.Module, got {type(net).__name__}.")
        low, high = (float(b) for b in bounds)
        if not low < high:
            raise ModelError(f"bounds must be LOW,HIGH with LOW < HIGH, got {low},{high}.")
        self.net = net
        self.bounds = (low, high)
        self.output_index = output_index
        self.logits_from_probs = logits_from_probs
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        mean, std = normalize if normalize is not None else ((), ())
        if normalize is not None:
            if not mean or len(mean) != len(std) or any(s <= 0 for s in std):
                raise ModelError(f"normalize needs as many means as standard deviations, each "
                                 f"deviation > 0 (one value, or one per channel); got mean "
                                 f"{list(mean)}, std {list(std)}.")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]))
        self.register_buffer("std", torch.tensor([float(s) for s in std]))
        self.config = {"name": name, "params": {
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "num_classes": num_classes, "normalize": None if normalize is None else
            [list(map(float, mean)), list(map(float, std))], "bounds": [low, high],
            "output_index": output_index, "logits_from_probs": logits_from_probs}}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] as the network receives it: in its ``input_shape`` (a flat network
        gets flat inputs), mapped onto ``bounds``, normalized."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            x = x.reshape(len(x), *self.input_shape)
        low, high = self.bounds
        if (low, high) != (0.0, 1.0):
            x = low + (high - low) * x
        if len(self.mean):
            shape = (1, -1, *([1] * (x.dim() - 2)))
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.net(self.prepare(x))
        if self.output_index is not None:
            out = out[self.output_index]
        if self.logits_from_probs:
            out = out.clamp_min(1e-30).log()
        return out


def check_outputs(model: UserModel, x: torch.Tensor) -> None:
    """Run ``model`` once on ``x`` (a few inputs) and refuse an output attacks cannot use: a
    tuple without ``output_index``, not a ``(N, classes)`` tensor, probabilities without
    ``logits_from_probs``, another number of classes than declared. Sets ``num_classes`` when
    it was not given."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            raw = model.net(model.prepare(x))
    except Exception as exc:  # the user's code: any failure is reported, not traced
        raise ModelError(f"the model failed on inputs of shape {tuple(x.shape)}: "
                         f"{type(exc).__name__}: {exc}. Check --input-shape (and --normalize "
                         "for the number of channels).") from None
    finally:
        for module, training in modes:  # every submodule as it was
            module.training = training
    if isinstance(raw, (tuple, list)):
        if model.output_index is None:
            raise ModelError(f"the model returns a {type(raw).__name__} of {len(raw)} outputs; "
                             "pick the logits with --output-index K (0-based).")
        if not -len(raw) <= model.output_index < len(raw):
            raise ModelError(f"--output-index {model.output_index} is out of range: the model "
                             f"returns {len(raw)} outputs.")
        raw = raw[model.output_index]
    elif model.output_index is not None:
        raise ModelError("--output-index was given but the model returns a single tensor.")
    if not isinstance(raw, torch.Tensor) or raw.dim() != 2 or len(raw) != len(x):
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise ModelError(f"the model must return one row of class scores per input, shape "
                         f"({len(x)}, classes); got {shape}.")
    if model.num_classes is not None and raw.shape[1] != model.num_classes:
        raise ModelError(f"the model scores {raw.shape[1]} classes but --classes says "
                         f"{model.num_classes}.")
    model.num_classes = raw.shape[1]
    model.config["params"]["num_classes"] = raw.shape[1]
    probabilities = bool((raw >= 0).all() and (raw <= 1).all()
                         and torch.allclose(raw.sum(1), torch.ones(len(raw)), atol=1e-4))
    if probabilities and not model.logits_from_probs:
        raise ModelError("the model seems to return probabilities (each row is in [0, 1] and "
                         "sums to 1); attacks need logits: return the logits, or pass "
                         "--logits-from-probs to attack their log.")


def from_factory(spec: str, *, weights: Path | None = None) -> nn.Module:
    """The ``nn.Module`` that ``package.module:factory`` returns, with ``weights`` loaded (see
    the module doc). The current folder is searched first, as ``python -m`` would."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ModelError(f"--model must be package.module:factory (a callable returning an "
                         f"nn.Module), got {spec!r}.")
    module = _import(module_name)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ModelError(f"{module_name!r} has no attribute {attribute!r} (--model "
                             f"{spec}).")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelError(f"{spec} is a {type(factory).__name__}, not a callable; --model must "
                         "name a function or class that returns an nn.Module.")
    try:
        net = factory()
    except Exception as exc:  # the user's code
        raise ModelError(f"calling {spec}() failed: {type(exc).__name__}: {exc}. The factory "
                         "must build the model with no arguments.") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"{spec}() returned a {type(net).__name__}, not a torch.nn.Module.")
    if weights is not None:
        load_weights(net, weights)
    return net


def _import(name: str) -> ModuleType:
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ModelError(f"cannot import {name!r} ({exc}); run from the folder that holds "
                         f"{name.replace('.', '/')}.py, or install its package.") from None
    except Exception as exc:  # the user's module failed while importing
        raise ModelError(f"importing {name!r} failed: {type(exc).__name__}: {exc}.") from None
    finally:
        if added:
            sys.path.remove(here)


def load_weights(net: nn.Module, path: Path) -> None:
    """Load the state dict at ``path`` into ``net``: read with ``weights_only=True`` (a file
    that holds code or objects is refused), every key and shape must match."""
    if not path.is_file():
        raise ModelError(f"--weights {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"--weights {path} is not a state dict torch.load(weights_only=True) "
                         f"can read ({type(exc).__name__}: {str(exc).splitlines()[0]}); save "
                         "it with torch.save(model.state_dict(), path).") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(
            state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise ModelError(f"--weights {path} must hold a state dict (parameter name -> "
                         "tensor), as torch.save(model.state_dict(), path) writes.")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ModelError(f"--weights {path} do not fit the model: " + " ".join(lines[:3])
                         + (" ..." if len(lines) > 3 else "")) from None


def _onnx_modules() -> tuple[Any, Any, dict]:
    """``(onnx, onnx2torch, its converter registry)``, or an error naming the extra. Where
    torchvision is not installed (it is not here), onnx2torch's two detection converters
    (NonMaxSuppression, RoiAlign), which import it, are left out."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(f"--onnx needs the 'onnx' extra: pip install 'bnnrobust[onnx]' "
                         f"({exc}).") from None
    stub = None
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or built for another torch
        stub = _torchvision_stub()
    try:
        import onnx2torch
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
    except ImportError as exc:
        raise ModelError(f"--onnx needs the 'onnx' extra: pip install 'bnnrobust[onnx]' "
                         f"({exc}).") from None
    finally:
        if stub is not None:
            for name in stub:
                sys.modules.pop(name, None)
    registry = dict(_CONVERTER_REGISTRY)
    if stub is not None:
        for key in [k for k in registry if k.operation_type in ("NonMaxSuppression", "RoiAlign")]:
            del registry[key]
    return onnx, onnx2torch, registry


def _torchvision_stub() -> list[str]:
    """Put a stand-in for torchvision's ops in ``sys.modules`` for onnx2torch's import (its
    detection converters use them only when converting those operators)."""
    def unavailable(*_: Any, **__: Any) -> None:
        raise ModelError("this ONNX operator needs torchvision, which is not installed.")

    package, ops = ModuleType("torchvision"), ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = unavailable  # type: ignore[attr-defined]
    package.ops = ops  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": package, "torchvision.ops": ops})
    return ["torchvision", "torchvision.ops"]


def onnx_support(graph_model: Any) -> list[str]:
    """The operators of an ONNX model (``onnx.ModelProto``) that no converter handles, as
    ``"Op (domain, opset N)"``; empty when it converts."""
    onnx, _, registry = _onnx_modules()
    opsets = {o.domain: o.version for o in graph_model.opset_import}
    known = {(k.domain, k.operation_type, k.version) for k in registry}
    missing = []
    for node in graph_model.graph.node:
        domain = node.domain or ""
        version = opsets.get(domain, opsets.get("ai.onnx", 0))
        try:
            version = onnx.defs.get_schema(node.op_type, domain=domain,
                                           max_inclusive_version=version).since_version
        except Exception:  # an operator ONNX itself does not define
            pass
        if (domain, node.op_type, version) not in known:
            missing.append(f"{node.op_type} ({domain or 'ai.onnx'}, opset {version})")
    return sorted(set(missing))


def from_onnx(path: Path) -> nn.Module:
    """The PyTorch module onnx2torch converts the ONNX file ``path`` into (see the module
    doc)."""
    if not path.is_file():
        raise ModelError(f"--onnx {path} does not exist.")
    onnx, onnx2torch, _ = _onnx_modules()
    try:
        graph_model = onnx.load(str(path))
        onnx.checker.check_model(graph_model)
    except Exception as exc:
        raise ModelError(f"--onnx {path} is not a valid ONNX model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}).") from None
    opset = max((o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")),
                default=ONNX_OPSET)
    if opset > ONNX_OPSET:
        try:
            graph_model = onnx.version_converter.convert_version(graph_model, ONNX_OPSET)
        except Exception as exc:
            raise ModelError(f"--onnx {path} uses opset {opset}; the converter handles up to "
                             f"{ONNX_OPSET} and ONNX's version converter could not bring it "
                             f"down ({str(exc).splitlines()[0] if str(exc) else exc}); export "
                             f"it with opset_version={ONNX_OPSET}.") from None
    missing = onnx_support(graph_model)
    if missing:
        raise ModelError(f"--onnx {path} holds operators the ONNX converter (onnx2torch) does "
                         f"not support: {', '.join(missing)}. Export the model without them, "
                         "or use --model with its PyTorch code.")
    try:
        return onnx2torch.convert(graph_model)
    except Exception as exc:
        raise ModelError(f"converting --onnx {path} failed: {type(exc).__name__}: {exc}.") \
            from None
