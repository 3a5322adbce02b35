"""The contract every attack follows (DESIGN.md §3), in the torchattacks shape with Foolbox's
explicitness::

    atk = PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=True)
    x_adv = atk(x, y)                 # adversarial inputs, clipped to [0, 1]
    result = atk.run(x, y)            # AttackResult: x_adv, success, norms, time, settings

Targeted mode: ``target=`` an explicit label tensor, or a rule: ``"second"`` (the class with the
second-highest logit, as in Khalil et al.), ``"random"`` (uniform over the other classes, from
the attack's seed) or ``"least_likely"``. Every attack works from logits, is batched, runs on
the model's device, is deterministic under ``seed``, runs the model in eval mode and restores
every submodule's mode (and the stochastic layers' seeds) afterwards, and never changes the
model's parameters.

Adaptive options shared by every gradient attack:

- ``eot_samples=N`` (expectation over transformation, Athalye et al. 2018): the input gradient
  is the mean over N forward/backward passes, for models with randomness at inference.
- ``bpda=True`` (backward pass differentiable approximation): every input layer that declares
  itself ``non_differentiable`` (e.g. :class:`~bnnrobust.data.InputQuantizer`) is run as
  ``surrogate(x) + (layer(x) - surrogate(x)).detach()``: its true output forward, its declared
  surrogate's gradient backward (the identity by default).
- ``loss="margin"`` (Carlini & Wagner's margin on the logits): ascend ``max_{j≠y} z_j − z_y``
  (untargeted) or ``z_t − max_{j≠t} z_j`` (targeted) instead of the cross-entropy. Its gradient
  does not vanish when the softmax saturates, which is how Galloway et al.'s model B hides
  from FGSM: the "attack the logits" adaptive evaluation.
- ``temperature=T``: the loss sees ``logits / T`` (the attacker's guess of a softmax
  temperature, as in defensive distillation; Galloway et al. 2018, Figure 5). T < 1 sharpens
  a saturated softmax back into a useful gradient direction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnnrobust.errors import BnnRobustError
from bnnrobust.nn import is_stochastic, seeded
from bnnrobust.train import check_input_shape, eval_mode

TARGET_RULES = ("second", "random", "least_likely")
LOSSES = ("ce", "margin")


class AttackError(BnnRobustError):
    """Bad attack parameters or inputs."""


@dataclass
class AttackResult:
    """What an attack returns: adversarial inputs, success, perturbation norms, time, settings.

    ``success``: the model's prediction on ``x_adv`` is the target (targeted) or differs from
    the label (untargeted). Norms are per sample, of ``x_adv - x`` flattened. ``extra`` holds
    attack-specific values (e.g. CW's success at chosen iteration counts).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    seconds: float
    settings: dict[str, Any]
    target: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of samples on which the attack succeeded."""
        return self.success.float().mean().item() if len(self.success) else 0.0


@dataclass
class _Outcome:
    """What :meth:`Attack._attack` hands to ``__call__`` and ``run`` (inputs on the model's device)."""

    x: torch.Tensor
    x_adv: torch.Tensor
    target: torch.Tensor | None
    success: torch.Tensor | None
    extra: dict[str, Any]


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Raise an AttackError unless ``value`` is a finite number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise AttackError(f"{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def check_steps(name: str, value: int) -> int:
    """Raise an AttackError unless ``value`` is an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AttackError(f"{name} must be an integer >= 1, got {value!r}.")
    return value


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


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
                return approx + (output - approx).detach()

            handles.append(module.register_forward_hook(hook))
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def non_differentiable_layers(model: nn.Module) -> list[nn.Module]:
    """Layers that declare themselves non-differentiable (candidates for BPDA)."""
    return [m for m in model.modules() if getattr(m, "non_differentiable", False)]


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


class Attack:
    """Base class: validation, targets, eval mode, EOT/BPDA gradients, result bookkeeping.

    Subclasses implement :meth:`_perturb` (and set ``name``). Keyword-only options common to
    all attacks:

    Args:
        target: ``None`` (untargeted), a rule name (``"second"``, ``"random"``,
            ``"least_likely"``) or a label tensor; a tensor passed to :meth:`run` wins.
        eot_samples: forward/backward passes averaged per gradient (1 = plain gradient).
        bpda: differentiate through non-differentiable input layers with their surrogate.
        seed: seed of the attack's random numbers (random starts, random targets, and the
            stochastic layers' samples during the attack).
        loss: ``"ce"`` (cross-entropy, default) or ``"margin"`` (on the logits; see above).
        temperature: divide the logits by this before the loss (default 1: no change).
    """

    name = "attack"
    #: the losses this attack can ascend (attacks with their own objective accept "ce" only)
    losses: tuple[str, ...] = LOSSES

    def __init__(self, model: nn.Module, *, target: str | torch.Tensor | None = None,
                 eot_samples: int = 1, bpda: bool = False, seed: int = 0,
                 loss: str = "ce", temperature: float = 1.0) -> None:
        if not isinstance(model, nn.Module):
            raise AttackError(f"model must be a torch.nn.Module returning logits, got "
                              f"{type(model).__name__}.")
        if isinstance(target, str) and target not in TARGET_RULES:
            raise AttackError(f"unknown target rule {target!r}; expected one of "
                              f"{', '.join(TARGET_RULES)} or a tensor of labels.")
        if loss not in self.losses:
            raise AttackError(f"{self.name} does not take loss={loss!r}; expected one of "
                              f"{', '.join(self.losses)}.")
        self.model = model
        self.target = target
        self.loss_kind = loss
        self.temperature = check_positive("temperature", temperature)
        if self.temperature != 1.0 and self.losses != LOSSES:
            raise AttackError(f"{self.name} optimizes its own objective and takes no "
                              f"temperature (got {temperature!r}); leave it at 1.")
        self.eot_samples = check_steps("eot_samples", eot_samples)
        self.bpda = bool(bpda)
        self.seed = int(seed)
        self.generator = torch.Generator()

    # ------------------------------------------------------------------ public API
    def __call__(self, x: torch.Tensor, y: torch.Tensor, *,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial versions of ``x`` (same device as ``x``); cheaper than :meth:`run`,
        which also measures success and norms."""
        out_device = x.device
        return self._attack(x, y, target, measure=False).x_adv.to(out_device)

    @property
    def eot_passes(self) -> int:
        """Forward passes per gradient: ``eot_samples``, or 1 when the model has no randomness
        at inference (its passes would all be the same)."""
        return self.eot_samples if is_stochastic(self.model) else 1

    @property
    def targeted(self) -> bool:
        """Whether the attack aims at a target class."""
        return self.target is not None

    def settings(self) -> dict[str, Any]:
        """The attack's name and parameters, as plain data."""
        out = {"attack": self.name, "eot_samples": self.eot_samples, "bpda": self.bpda,
               "seed": self.seed, "loss": self.loss_kind, "temperature": self.temperature,
               "target": self.target if isinstance(self.target, str) or self.target is None
               else "tensor"}
        out.update(self._params())
        return out

    def run(self, x: torch.Tensor, y: torch.Tensor, *,
            target: torch.Tensor | None = None) -> AttackResult:
        """Attack the batch ``(x, y)``; see :class:`AttackResult`."""
        start = time.perf_counter()
        out_device = x.device
        out = self._attack(x, y, target, measure=True)
        x_adv, tgt = out.x_adv, out.target
        delta = (x_adv - out.x).flatten(1)
        return AttackResult(
            x_adv=x_adv.to(out_device), success=out.success.to(out_device),
            l0=(delta.abs() > 1e-12).sum(1).to(out_device),
            l2=delta.norm(dim=1).to(out_device), linf=delta.abs().amax(1).to(out_device),
            seconds=time.perf_counter() - start, settings=self.settings(),
            target=None if tgt is None else tgt.to(out_device), extra=out.extra)

    def _attack(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
                measure: bool) -> _Outcome:
        """Validate, set the model up (eval, frozen, seeded, BPDA) and run :meth:`_perturb`."""
        x, y = self._prepare_inputs(x, y)
        with self._prepared_model():
            tgt = self._resolve_target(x, y, target if target is not None else self.target)
            x_adv, extra = self._perturb(x, y, tgt)
            x_adv = x_adv.detach().clamp(0.0, 1.0)
            success = None
            if measure:
                with torch.no_grad():
                    success = self.is_success(self.model(x_adv), y, tgt)
        return _Outcome(x, x_adv, tgt, success, extra)

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor, *,
                       target: torch.Tensor | None = None) -> torch.Tensor:
        """The input gradient the attack follows at ``x`` (its loss, temperature, EOT and
        BPDA settings; model set up as during the attack), on ``x``'s device."""
        out_device = x.device
        x, y = self._prepare_inputs(x, y)
        with self._prepared_model():
            tgt = self._resolve_target(x, y, target if target is not None else self.target)
            _, grad = self.gradient(x, y, tgt)
        return grad.to(out_device)

    def _prepare_inputs(self, x: torch.Tensor, y: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated inputs on the model's device; the attack's generator reseeded."""
        device = model_device(self.model)
        x, y = self._validate(x, y)
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return x.to(device), y.to(device)

    @contextmanager
    def _prepared_model(self) -> Iterator[None]:
        """Eval mode, frozen parameters, seeded stochastic layers and (with ``bpda``) the
        surrogate gradients, all undone afterwards."""
        with ExitStack() as stack:
            stack.enter_context(eval_mode(self.model))
            stack.enter_context(frozen(self.model))
            stack.enter_context(seeded(self.model, self.seed))
            if self.bpda:
                stack.enter_context(bpda_mode(self.model))
            yield

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def is_success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per sample: prediction == target (targeted) or != label (untargeted)."""
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y

    def loss(self, logits: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample loss the attack ascends: CE on the label, or minus CE on the target; with
        ``loss="margin"`` the logit margin of the best other class over the label (untargeted)
        or of the target over the best other class (targeted). Logits are divided by the
        temperature first."""
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.loss_kind == "margin":
            goal = target if target is not None else y
            picked = logits.gather(1, goal[:, None])[:, 0]
            others = logits.masked_fill(F.one_hot(goal, logits.shape[1]).bool(), -math.inf)
            margin = others.amax(1) - picked
            return -margin if target is not None else margin
        if target is not None:
            return -F.cross_entropy(logits, target, reduction="none")
        return F.cross_entropy(logits, y, reduction="none")

    def gradient(self, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-sample loss, input gradient)``, averaged over ``eot_samples`` passes (one
        pass when the model has no randomness at inference: the passes would be identical).

        The gradient is that of the batch-mean loss (as torchattacks and CleverHans compute it);
        its direction per input is the same as the per-sample loss's.
        """
        passes = self.eot_passes
        if passes == 1:
            xg = x.detach().requires_grad_(True)
            loss = self.loss(self.model(xg), y, target)
            (grad,) = torch.autograd.grad(loss.mean(), xg)
            return loss.detach(), grad
        total_grad = torch.zeros_like(x)
        total_loss = torch.zeros(len(x), device=x.device)
        for _ in range(passes):
            xg = x.detach().requires_grad_(True)
            loss = self.loss(self.model(xg), y, target)
            (grad,) = torch.autograd.grad(loss.mean(), xg)
            total_grad += grad
            total_loss += loss.detach()
        return total_loss / passes, total_grad / passes

    def _validate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise AttackError("x and y must be tensors (x: float inputs in [0, 1], y: labels).")
        if x.dim() < 2 or len(x) != len(y) or len(x) == 0:
            raise AttackError(f"x must be a non-empty batch with one label per input; got x of "
                              f"shape {tuple(x.shape)} and {len(y)} labels.")
        if not x.is_floating_point():
            raise AttackError(f"x must be floating point in [0, 1], got dtype {x.dtype}.")
        if x.min() < 0 or x.max() > 1:
            raise AttackError(f"inputs must lie in [0, 1] (found [{x.min().item():.3g}, "
                              f"{x.max().item():.3g}]); put normalization inside the model.")
        try:
            check_input_shape(self.model, x)
        except BnnRobustError as exc:
            raise AttackError(str(exc)) from None
        return x.float(), y.long()

    def _resolve_target(self, x: torch.Tensor, y: torch.Tensor,
                        target: str | torch.Tensor | None) -> torch.Tensor | None:
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

    # ------------------------------------------------------------------ for subclasses
    def _params(self) -> dict[str, Any]:
        return {}

    def _perturb(self, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError
