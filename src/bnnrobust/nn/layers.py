"""Binarized layers: latent real weights, binarized in the forward pass.

``BinaryConv2d`` and ``BinaryLinear`` keep the latent float weights (``weight``, what the
optimizer updates) apart from the ±1 weights used in the forward pass (:meth:`binary_weight`).
Options (keyword-only):

- ``binarize_input``: batch-normalize the input, then ``sign`` it (Galloway et al.: "batch
  normalization was applied before quantizing activations to ensure they were centered");
  ``bn_momentum`` and ``bn_scale`` (``BinaryConv2d``): that batch norm's ``momentum`` and
  ``scale`` (see :func:`batch_norm`).
- ``stochastic``: weights are sampled ``2*Bernoulli(hard_sigmoid(w))-1`` at every forward pass,
  in training and at test time (Galloway's model S). :func:`seed_stochastic` makes it repeatable.
- ``xnor``: scale the ±1 weights by the mean |W| of each output channel (Rastegari et al. 2016).
- ``ste``: straight-through rule, ``"galloway"`` (clip gradient to [-1, 1]) or ``"hubara"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from bnnrobust.errors import BnnRobustError
from bnnrobust.nn.binarize import _check_rule, sign_ste, stochastic_binarize


class Sign(nn.Module):
    """``sign`` (``sign(0) = +1``) with a straight-through gradient, as a module."""

    def __init__(self, *, ste: str = "galloway") -> None:
        super().__init__()
        self.ste = _check_rule(ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return sign_ste(x, self.ste)

    def extra_repr(self) -> str:  # noqa: D102
        return f"ste={self.ste}"


def batch_norm(num_features: int, *, dims: int = 2, eps: float = 1e-5, momentum: float = 0.1,
               scale: bool = True) -> nn.modules.batchnorm._BatchNorm:
    """``BatchNorm2d`` (``dims=2``, N×C×H×W) or ``BatchNorm1d`` (``dims=1``, N×C).

    PyTorch's defaults: running statistics updated with ``momentum`` 0.1, a learned scale γ and
    shift β. ``scale=False`` keeps γ at 1, untrained (a parameter without gradient, so that
    the layer's state and its exports are those of any batch norm): TensorFlow's
    ``tf.contrib.layers.batch_norm`` default (``scale=False``), whose ``decay=0.999`` is
    ``momentum=0.001`` here.
    """
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(num_features, eps=eps,
                                                           momentum=momentum)
    if not scale:
        bn.weight.requires_grad_(False)
    return bn


class BinaryActivation(nn.Module):
    """Batch norm (eps 1e-5; ``momentum`` and ``scale`` as :func:`batch_norm`'s) followed by
    ``sign`` with a straight-through gradient.

    ``dims=2`` normalizes N×C×H×W feature maps (``BatchNorm2d``), ``dims=1`` N×C vectors.
    """

    def __init__(self, num_features: int, *, dims: int = 2, ste: str = "galloway",
                 eps: float = 1e-5, momentum: float = 0.1, scale: bool = True) -> None:
        super().__init__()
        self.bn = batch_norm(num_features, dims=dims, eps=eps, momentum=momentum, scale=scale)
        self.sign = Sign(ste=ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.sign(self.bn(x))


class Normalize(nn.Module):
    """``(x − mean) / std`` inside the model, so that attacks keep seeing [0, 1] inputs (e.g.
    BinaryNet.pytorch's MNIST normalization, mean 0.1307, std 0.3081). ``mean`` and ``std`` are
    numbers, or one number per channel of an N×C×H×W input (e.g. ImageNet's RGB means)."""

    def __init__(self, mean: float | tuple[float, ...], std: float | tuple[float, ...]) -> None:
        super().__init__()
        self.mean = tuple(map(float, mean)) if isinstance(mean, tuple | list) else float(mean)
        self.std = tuple(map(float, std)) if isinstance(std, tuple | list) else float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if isinstance(self.mean, float) and isinstance(self.std, float):
            return (x - self.mean) / self.std
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).reshape(shape)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).reshape(shape)
        return (x - mean) / std

    def extra_repr(self) -> str:  # noqa: D102
        return f"mean={self.mean}, std={self.std}"


class LearnedScale(nn.Module):
    """Multiply by one learned scalar (Galloway et al.'s scaled ReLU; init 0.05)."""

    def __init__(self, init: float = 0.05) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.scale


def _truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Normal(0, std) truncated at two standard deviations (TensorFlow's truncated_normal)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class _BinaryLayer(nn.Module):
    """Shared machinery of the binary layers: latent weight, binarization, seeding, scaling."""

    weight: nn.Parameter

    def _setup(self, in_features: int, *, binarize_input: bool, input_dims: int,
               stochastic: bool, xnor: bool, ste: str, init_std: float | None,
               bn_momentum: float = 0.1, bn_scale: bool = True) -> None:
        self.ste = _check_rule(ste)
        self.stochastic = stochastic
        self.xnor = xnor
        self.input_act = (
            BinaryActivation(in_features, dims=input_dims, ste=ste, momentum=bn_momentum,
                             scale=bn_scale) if binarize_input else None
        )
        if init_std is None:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            _truncated_normal_(self.weight, init_std)
        self._seed: int | None = None
        self.generator: torch.Generator | None = None

    def seed(self, seed: int | None) -> None:
        """Fix the random stream of a stochastic layer (``None``: use the global RNG)."""
        self._seed = seed
        self.generator = None

    def generator_state(self) -> torch.Tensor | None:
        """The state of the seeded random stream (None before its first draw or unseeded)."""
        return self.generator.get_state() if self.generator is not None else None

    def load_generator_state(self, state: torch.Tensor) -> None:
        """Continue the seeded random stream from ``state`` (see :meth:`generator_state`)."""
        generator = self._generator()
        if generator is None:
            raise ValueError("an unseeded stochastic layer has no random stream to restore.")
        generator.set_state(state)

    def _generator(self) -> torch.Generator | None:
        if self._seed is None:
            return None
        device = self.weight.device
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self._seed)
        return self.generator

    def binary_weight(self) -> torch.Tensor:
        """The ±1 weights of this forward pass (a fresh sample for a stochastic layer)."""
        if self.stochastic:
            return stochastic_binarize(self.weight, rule=self.ste, generator=self._generator())
        return sign_ste(self.weight, self.ste)

    def effective_weight(self) -> torch.Tensor:
        """The weights the forward pass uses: ±1, times the per-channel mean |W| with ``xnor``."""
        wb = self.binary_weight()
        if self.xnor:
            dims = tuple(range(1, self.weight.dim()))
            wb = wb * self.weight.abs().mean(dim=dims, keepdim=True)
        return wb

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_act is None else self.input_act(x)

    def extra_repr(self) -> str:  # noqa: D102
        opts = [f"ste={self.ste}"]
        opts += [n for n in ("stochastic", "xnor") if getattr(self, n)]
        if self.input_act is not None:
            opts.append("binarize_input")
        return super().extra_repr() + ", " + ", ".join(opts)


class BinaryConv2d(_BinaryLayer, nn.Conv2d):
    """2-D convolution with ±1 weights (latent weights init truncated normal σ = 0.2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, bias: bool = False, binarize_input: bool = False,
                 stochastic: bool = False, xnor: bool = False, ste: str = "galloway",
                 init_std: float | None = 0.2, bn_momentum: float = 0.1,
                 bn_scale: bool = True) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, bias=bias)
        self._setup(in_channels, binarize_input=binarize_input, input_dims=2,
                    stochastic=stochastic, xnor=xnor, ste=ste, init_std=init_std,
                    bn_momentum=bn_momentum, bn_scale=bn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.conv2d(self._prepare_input(x), self.effective_weight(), self.bias,
                        self.stride, self.padding)


class BinaryLinear(_BinaryLayer, nn.Linear):
    """Fully connected layer with ±1 weights (latent init truncated normal σ = ``init_std``).

    ``input_normalization=(mean, std)`` applies ``(x − mean) / std`` to the input inside the
    layer, computed as ``(W·x − mean·ΣW) / std`` after the product (the same map; written so that
    the layer is a function of the ±1 sum ``W·x``, which the integer export relies on); the
    bias is added last.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False,
                 binarize_input: bool = False, stochastic: bool = False, xnor: bool = False,
                 ste: str = "galloway", init_std: float | None = 0.2,
                 input_normalization: tuple[float, float] | None = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._setup(in_features, binarize_input=binarize_input, input_dims=1,
                    stochastic=stochastic, xnor=xnor, ste=ste, init_std=init_std)
        self.input_normalization = None if input_normalization is None else \
            _check_normalization(input_normalization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        weight = self.effective_weight()
        if self.input_normalization is None:
            return F.linear(self._prepare_input(x), weight, self.bias)
        mean, std = self.input_normalization
        out = (F.linear(self._prepare_input(x), weight) - mean * weight.sum(1)) / std
        return out if self.bias is None else out + self.bias


def _check_normalization(value: tuple[float, float]) -> tuple[float, float]:
    """``(mean, std)`` as floats, both finite and ``std > 0``, or a clear error."""
    try:
        mean, std = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BnnRobustError(f"input_normalization must be a pair (mean, std) of numbers; got "
                             f"{value!r}.") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise BnnRobustError(f"input_normalization = ({mean}, {std}): expected a finite mean "
                             "and a finite std > 0.")
    return mean, std


def binary_layers(model: nn.Module) -> list[_BinaryLayer]:
    """Every binary layer of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, _BinaryLayer)]


def is_stochastic(model: nn.Module) -> bool:
    """Whether ``model`` samples anything at inference (its output varies between passes)."""
    return any(layer.stochastic for layer in binary_layers(model))


def seed_stochastic(model: nn.Module, seed: int | None) -> None:
    """Seed every stochastic layer (layer i gets ``seed + i``); ``None`` returns to the global RNG."""
    for i, layer in enumerate(layer for layer in binary_layers(model) if layer.stochastic):
        layer.seed(None if seed is None else seed + i)


@contextmanager
def seeded(model: nn.Module, seed: int | None) -> Iterator[None]:
    """Seed the stochastic layers for a block and restore their previous seeds afterwards."""
    layers = [layer for layer in binary_layers(model) if layer.stochastic]
    saved = [(layer._seed, layer.generator) for layer in layers]
    seed_stochastic(model, seed)
    try:
        yield
    finally:
        for layer, (old_seed, old_gen) in zip(layers, saved, strict=True):
            layer._seed, layer.generator = old_seed, old_gen


@contextmanager
def approximate_activations(model: nn.Module) -> Iterator[int]:
    """For the block, every sign activation of ``model`` computes ``g(x) = clip(x, −1, 1)``
    in its forward pass instead (Khalil et al. 2019's "approximate BNN", whose gradient their
    FGSM baseline follows); the weights stay ±1. Yields how many activations were replaced."""
    handles = [m.register_forward_hook(lambda _m, inputs, _out: inputs[0].clamp(-1.0, 1.0))
               for m in model.modules() if isinstance(m, Sign)]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def clip_latent_weights(model: nn.Module, bound: float = 1.0) -> None:
    """Clamp the latent weights (and biases) of every binary layer to ``[-bound, bound]``
    (BinaryConnect; BinaryNet.pytorch clamps both through their ``.org`` copies)."""
    for layer in binary_layers(model):
        layer.weight.clamp_(-bound, bound)
        if layer.bias is not None:
            layer.bias.clamp_(-bound, bound)


@torch.no_grad()
def center_xnor_weights(model: nn.Module) -> None:
    """Centre and clamp the latent weights of every XNOR layer: subtract their mean over the
    input channels (dimension 1), then clamp to [-1, 1] (XNOR-Net-PyTorch's
    ``meancenterConvParams`` and ``clampConvParams``, run before each forward pass)."""
    for layer in binary_layers(model):
        if layer.xnor:
            layer.weight.sub_(layer.weight.mean(dim=1, keepdim=True)).clamp_(-1.0, 1.0)
