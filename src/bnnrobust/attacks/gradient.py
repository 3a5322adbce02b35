"""What the white-box gradient attacks share: targets, eval mode, EOT and BPDA gradients, losses.

Targeted mode: ``target=`` an explicit label tensor, or a rule: ``"second"`` (the class with the
second-highest logit, as in Khalil et al.), ``"random"`` (uniform over the other classes, from
the attack's seed) or ``"least_likely"``. Every gradient attack works from logits, is batched,
runs on the model's device, is deterministic under ``seed``, runs the model in eval mode with
its parameters frozen and restores every submodule's mode (and the stochastic layers' seeds)
afterwards.

Adaptive options (:class:`GradientParams`):

- ``eot_samples=N`` (expectation over transformation, Athalye et al. 2018): the input gradient
  is the mean over N forward/backward passes, for models with randomness at inference.
- ``bpda=True`` (backward pass differentiable approximation): every input layer that declares
  itself ``non_differentiable`` (e.g. :class:`~bnnrobust.data.InputQuantizer`) is run as
  ``layer(x).detach() + (surrogate(x) - surrogate(x).detach())``: its true output forward
  (exactly), its declared surrogate's gradient backward (the identity by default).

Losses (:class:`LossParams`, for the attacks that ascend a loss rather than their own
objective):

- ``loss="margin"`` (Carlini & Wagner's margin on the logits): ascend ``max_{j≠y} z_j − z_y``
  (untargeted) or ``z_t − max_{j≠t} z_j`` (targeted) instead of the cross-entropy. Its gradient
  does not vanish when the softmax saturates, which is how Galloway et al.'s model B hides
  from FGSM: the "attack the logits" adaptive evaluation.
- ``temperature=T``: the loss sees ``logits / T`` (the attacker's guess of a softmax
  temperature, as in defensive distillation; Galloway et al. 2018, Figure 5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bnnrobust.attacks.base import (
    Attack,
    AttackError,
    AttackParams,
    Found,
    check_choice,
    check_flag,
    check_positive,
    check_steps,
)
from bnnrobust.nn import is_stochastic, seeded
from bnnrobust.train import eval_mode

TARGET_RULES = ("second", "random", "least_likely")
LOSSES = ("ce", "margin")


@dataclass(frozen=True, kw_only=True)
class GradientParams(AttackParams):
    """Options of every gradient attack.

    Args:
        target: ``None`` (untargeted, default), a rule name (``"second"``, ``"random"``,
            ``"least_likely"``) or a label tensor; a tensor passed to ``run`` wins.
        eot_samples: forward/backward passes averaged per gradient (default 1).
        bpda: differentiate through non-differentiable input layers with their surrogate
            (default False).
        seed: see :class:`~bnnrobust.attacks.base.AttackParams`.
    """

    target: str | torch.Tensor | None = None
    eot_samples: int = 1
    bpda: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.target, str):
            check_choice("target rule", self.target, TARGET_RULES)
        elif self.target is not None and not isinstance(self.target, torch.Tensor):
            raise AttackError(f"target must be None, a rule ({', '.join(TARGET_RULES)}) or a "
                              f"tensor of labels, got {self.target!r}.")
        check_steps("eot_samples", self.eot_samples)
        check_flag("bpda", self.bpda)


@dataclass(frozen=True, kw_only=True)
class LossParams(GradientParams):
    """Options of the gradient attacks that ascend a loss (FGSM, BIM, PGD, R-FGSM).

    Args:
        loss: ``"ce"`` (cross-entropy, default) or ``"margin"`` (on the logits; see the
            module doc).
        temperature: divide the logits by this before the loss (default 1: no change).
    """

    loss: str = "ce"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("loss", self.loss, LOSSES)
        self._set("temperature", check_positive("temperature", self.temperature))


def non_differentiable_layers(model: nn.Module) -> list[nn.Module]:
    """Layers that declare themselves non-differentiable (candidates for BPDA)."""
    return [m for m in model.modules() if getattr(m, "non_differentiable", False)]


@contextmanager
def bpda_mode(model: nn.Module) -> Iterator[int]:
    """Make every ``non_differentiable`` layer use its declared surrogate on the backward pass.

    Yields how many layers were wrapped.
    """
    handles = []
    for module in model.modules():
        if getattr(module, "non_differentiable", False) and hasattr(module, "surrogate"):
            def hook(mod, inputs, output):
                approx = mod.surrogate(inputs[0])
                return output.detach() + (approx - approx.detach())  # the forward value exactly

            handles.append(module.register_forward_hook(hook))
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def input_grad(output: torch.Tensor, x: torch.Tensor, *,
               retain_graph: bool = False) -> torch.Tensor:
    """The gradient of the scalar ``output`` with respect to ``x``: zero where ``output`` does
    not depend on ``x`` differentiably at all (a model that is piecewise constant in its
    input, e.g. a BNN exported without its straight-through estimator: the gradient that
    masks it, which the attacks then meet, rather than an error)."""
    if not output.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(output, x, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Stop gradients to the parameters for the block (attacks need input gradients only)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class Gradient(NamedTuple):
    """What :meth:`GradientAttack.gradient` returns: the logits, the per-sample loss and the
    input gradient at one input batch (each the mean over the EOT passes)."""

    logits: torch.Tensor
    loss: torch.Tensor
    grad: torch.Tensor


class GradientAttack(Attack):
    """Base class of the white-box gradient attacks (see the module doc).

    Subclasses set ``name`` and ``Params`` and implement :meth:`_perturb`.
    """

    Params: ClassVar[type[GradientParams]] = GradientParams
    #: differentiate the batch's summed loss (each input's own gradient) instead of its mean
    summed_loss: ClassVar[bool] = False

    @property
    def eot_passes(self) -> int:
        """Forward passes per gradient: ``eot_samples``, or 1 when the model has no randomness
        at inference (its passes would all be the same)."""
        return self.params.eot_samples if is_stochastic(self.model) else 1

    @property
    def targeted(self) -> bool:
        """Whether the attack aims at a target class."""
        return self.params.target is not None

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor, *,
                       target: torch.Tensor | None = None) -> torch.Tensor:
        """The input gradient the attack follows at ``x`` (its loss, temperature, EOT and
        BPDA settings; model set up as during the attack), on ``x``'s device."""
        out_device = x.device
        x, y = self._prepare_inputs(x, y)
        self._seed_generator(x.device)
        with self._prepared_model():
            tgt = self._resolve_target(x, y, target)
            grad = self.gradient(x, y, tgt).grad
        return grad.to(out_device)

    def _execute(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
                 measure: bool) -> Found:
        """Set the model up (eval, frozen, seeded, BPDA), resolve the target, run
        :meth:`_perturb`; with ``measure``, judge success on the model's prediction."""
        self._seed_generator(x.device)
        with self._prepared_model():
            tgt = self._resolve_target(x, y, target)
            x_adv, extra = self._perturb(x, y, tgt)
            x_adv = x_adv.detach().clamp(0.0, 1.0)
            success = None
            if measure:
                with torch.no_grad():
                    success = self.is_success(self.model(x_adv), y, tgt)
        return Found(x, x_adv, success, target=tgt,
                     queries=extra.pop("queries", None), extra=extra)

    def _seed_generator(self, device: torch.device) -> None:
        """A fresh generator from the attack's seed: every call draws the same numbers."""
        self.generator = torch.Generator(device=device).manual_seed(self.params.seed)

    @contextmanager
    def _prepared_model(self) -> Iterator[None]:
        """Eval mode, frozen parameters, seeded stochastic layers and (with ``bpda``) the
        surrogate gradients, all undone afterwards."""
        with ExitStack() as stack:
            stack.enter_context(eval_mode(self.model))
            stack.enter_context(frozen(self.model))
            stack.enter_context(seeded(self.model, self.params.seed))
            if self.params.bpda:
                stack.enter_context(bpda_mode(self.model))
            yield

    def loss(self, logits: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample loss the attack ascends: CE on the label, or minus CE on the target; with
        ``loss="margin"`` the logit margin of the best other class over the label (untargeted)
        or of the target over the best other class (targeted). Logits are divided by the
        temperature first."""
        temperature = getattr(self.params, "temperature", 1.0)
        if temperature != 1.0:
            logits = logits / temperature
        if getattr(self.params, "loss", "ce") == "margin":
            goal = target if target is not None else y
            picked = logits.gather(1, goal[:, None])[:, 0]
            others = logits.masked_fill(F.one_hot(goal, logits.shape[1]).bool(), -math.inf)
            margin = others.amax(1) - picked
            return -margin if target is not None else margin
        if target is not None:
            return -F.cross_entropy(logits, target, reduction="none")
        return F.cross_entropy(logits, y, reduction="none")

    def gradient(self, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> Gradient:
        """The logits, per-sample loss and input gradient at ``x``, each averaged over
        ``eot_samples`` passes (one pass when the model has no randomness at inference: the
        passes would be identical).

        The gradient is that of the batch-mean loss (as torchattacks and CleverHans compute it
        for FGSM and PGD; its direction per input is the same as the per-sample loss's), or of
        the summed loss where the attack sets ``summed_loss`` (each input's own gradient).
        """
        passes = self.eot_passes
        total = None
        for _ in range(passes):
            xg = x.detach().requires_grad_(True)
            logits = self.model(xg)
            loss = self.loss(logits, y, target)
            grad = input_grad(loss.sum() if self.summed_loss else loss.mean(), xg)
            out = Gradient(logits.detach(), loss.detach(), grad)
            if passes == 1:
                return out
            total = out if total is None else Gradient(*(a + b for a, b in zip(total, out, strict=True)))
        return Gradient(*(t / passes for t in total))

    def _resolve_target(self, x: torch.Tensor, y: torch.Tensor,
                        target: torch.Tensor | None) -> torch.Tensor | None:
        """The target labels: ``target`` if given, else the ``target`` parameter (a tensor,
        or a rule applied to the model's logits at ``x``), else None (untargeted)."""
        target = target if target is not None else self.params.target
        if target is None:
            return None
        if isinstance(target, torch.Tensor):
            target = target.to(x.device).long()
            if target.shape != y.shape:
                raise AttackError(f"target must hold one label per input ({len(y)}), got shape "
                                  f"{tuple(target.shape)}.")
            clash = (target == y).nonzero().flatten()
            if len(clash):
                raise AttackError(f"target equals the true label for input(s) "
                                  f"{clash[:5].tolist()}; a targeted attack needs another class.")
            return target
        with torch.no_grad():
            logits = self.model(x)
        n_classes = logits.shape[1]
        if target == "second":
            return logits.topk(2, dim=1).indices[:, 1]
        if target == "least_likely":
            return logits.argmin(1)
        offset = torch.randint(1, n_classes, y.shape, generator=self.generator,
                               device=x.device)
        return (y + offset) % n_classes

    def _still_correct(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                       *, targets: int) -> torch.Tensor:
        """For the attacks that aim at the ``targets`` likeliest other classes in turn and
        succeed on any misclassification (APGD-T, FAB-T): refuse a given target or more
        targets than the model has other classes; the inputs still correctly classified."""
        if target is not None:
            raise AttackError(f"{self.name} picks its own targets (the likeliest other "
                              "classes) and takes no target.")
        with torch.no_grad():
            logits = self.model(x)
        if logits.shape[1] - 1 < targets:
            raise AttackError(f"{self.name} cannot aim at {targets} target classes: the model "
                              f"has {logits.shape[1]} classes (at most {logits.shape[1] - 1}).")
        return ~self.is_success(logits, y, None)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
                 ) -> tuple[torch.Tensor, dict]:
        """``(x_adv, extra)``: the adversarial inputs and attack-specific values; an extra
        ``"queries"`` (model queries per input, score-based attacks) becomes the result's
        ``queries``."""
        raise NotImplementedError
