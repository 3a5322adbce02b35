"""Binarization functions with straight-through estimators (STE).

Forward: ``sign(x)`` with ``sign(0) = +1``. Backward, two documented rules:

- ``"hubara"`` (Hubara/Courbariaux et al. 2016, BinaryNet): the gradient passes where
  ``|x| <= 1`` and is zero elsewhere, i.e. the derivative of ``clip(x, -1, 1)``.
- ``"galloway"`` (Galloway et al. 2018, the authors' TensorFlow ``QuantizeGrad``): the incoming
  gradient passes unchanged except that it is clipped to ``[-1, 1]``.

Stochastic binarization (Courbariaux et al. 2015): ``2 * Bernoulli(hard_sigmoid(w)) - 1`` with
``hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)``, sampled anew at every call, with the same STE
rules on the backward pass so gradients reach the latent weights.
"""

from __future__ import annotations

import torch

from bnnrobust.errors import BnnRobustError

STE_RULES = ("galloway", "hubara")


def _check_rule(rule: str) -> str:
    if rule not in STE_RULES:
        raise BnnRobustError(f"unknown STE rule {rule!r}; expected one of {', '.join(STE_RULES)}.")
    return rule


def _sign(x: torch.Tensor) -> torch.Tensor:
    """±1 with sign(0) = +1. Adding +0.0 turns -0.0 into +0.0 before copysign (fast path)."""
    return torch.ones_like(x).copysign_(x + 0.0)


def _ste_backward(grad: torch.Tensor, x: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "hubara":
        return grad * (x.abs() <= 1).to(grad.dtype)
    return grad.clamp(-1.0, 1.0)


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        ctx.rule = rule
        return _sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (x,) = ctx.saved_tensors
        return _ste_backward(grad, x, ctx.rule), None

    @staticmethod
    def symbolic(g, x, rule):  # noqa: D102 - ONNX export: Where(x < 0, -1, 1), sign(0) = +1
        zero = g.op("Constant", value_t=torch.tensor(0.0))
        return g.op("Where", g.op("Less", x, zero), g.op("Constant", value_t=torch.tensor(-1.0)),
                    g.op("Constant", value_t=torch.tensor(1.0)))


class _StochasticSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, rule: str, generator: torch.Generator | None):  # noqa: D102
        ctx.save_for_backward(w)
        ctx.rule = rule
        prob = hard_sigmoid(w)
        return 2.0 * torch.bernoulli(prob, generator=generator) - 1.0

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (w,) = ctx.saved_tensors
        return _ste_backward(grad, w, ctx.rule), None, None


def sign_ste(x: torch.Tensor, rule: str = "galloway") -> torch.Tensor:
    """``sign(x)`` in {-1, +1} (``sign(0) = +1``) with a straight-through gradient.

    Args:
        x: any tensor.
        rule: backward rule, ``"galloway"`` (gradient clipped to [-1, 1], default) or
            ``"hubara"`` (gradient passed where |x| <= 1, zero elsewhere).
    """
    return _SignSTE.apply(x, _check_rule(rule))


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``clip((x + 1) / 2, 0, 1)``: the probability of +1 in stochastic binarization."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def stochastic_binarize(
    w: torch.Tensor, *, rule: str = "galloway", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample ``2 * Bernoulli(hard_sigmoid(w)) - 1`` in {-1, +1}; the mean is ``2*hard_sigmoid(w)-1``.

    A new sample is drawn at every call (training and evaluation alike). Pass ``generator``
    for reproducible samples. The backward pass is the straight-through ``rule``.
    """
    return _StochasticSTE.apply(w, _check_rule(rule), generator)
