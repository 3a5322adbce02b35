"""The contract every attack follows (DESIGN.md §3): ``Attack(model, **params)`` and
``run(x, y) -> AttackResult`` on a batch of [0, 1] inputs.

Every attack — gradient (:mod:`.gradient`), transfer (:mod:`.transfer`), exact and
certification (:mod:`.combinatorial`) — is an :class:`Attack` subclass with a frozen,
keyword-only parameter dataclass ``Params`` (a subclass of :class:`AttackParams`). That
dataclass is the one place each parameter is validated; the constructor only builds it, so
parameters are never assigned after construction::

    atk = PGD(model, eps=0.3, alpha=0.01, steps=40)   # PGD.Params(eps=0.3, ...) validated
    x_adv = atk(x, y)                                  # adversarial inputs, in [0, 1]
    result = atk.run(x, y)                             # AttackResult (see below)
    atk.params.eps, atk.settings()                     # the parameters, plain data

Shape:
    x: ``(N, ...)`` float in [0, 1], finite (NaN refused); y: ``(N,)`` integer labels.
    The result's tensors are on ``x``'s device; per-sample fields have length N.

An attack never changes the model's mode or parameters: subclasses run the model in eval mode
and restore every submodule's mode afterwards.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import nn

from bnnrobust.errors import BnnRobustError
from bnnrobust.train import check_input_shape

#: per-sample solver / certification outcome of an exact attack
Status = Literal["optimal", "feasible", "timeout", "infeasible", "robust", "attacked", "unknown"]
STATUSES: tuple[str, ...] = get_args(Status)


class AttackError(BnnRobustError):
    """Bad attack parameters or inputs."""


# ---------------------------------------------------------------------- validation helpers
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


def check_budget(name: str, value: float, *, allow_zero: bool = False) -> float:
    """An L∞ budget on [0, 1] inputs: a finite number in (0, 1] ([0, 1] with ``allow_zero``)."""
    value = check_positive(name, value, allow_zero=allow_zero)
    if value > 1:
        raise AttackError(f"{name} must be at most 1 (inputs lie in [0, 1]), got {value!r}.")
    return value


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Raise an AttackError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise AttackError(f"unknown {name} {value!r}; expected one of "
                          f"{', '.join(map(str, choices))}.")
    return value


def check_flag(name: str, value: bool) -> bool:
    """Raise an AttackError unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise AttackError(f"{name} must be true or false, got {value!r}.")
    return value


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


# ---------------------------------------------------------------------- parameters
@dataclass(frozen=True, kw_only=True)
class AttackParams:
    """Parameters every attack takes.

    Args:
        seed: seed of the attack's random numbers (random starts and targets, stochastic
            layers' samples during the attack, solver seeds). Default 0.
    """

    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise AttackError(f"seed must be an integer, got {self.seed!r}.")

    def _set(self, name: str, value: Any) -> None:
        """Store a normalized value (``__post_init__`` only: the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def create(cls, attack: str, values: dict[str, Any]) -> AttackParams:
        """``cls(**values)``, with an unknown name reported as an error that lists the valid
        ones."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise AttackError(f"{attack} has no parameter {unknown[0]!r}; valid parameters: "
                              f"{', '.join(sorted(cls.names()))}.")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain data (a tensor-valued one as ``"tensor"``)."""
        out = {}
        for name in self.names():
            value = getattr(self, name)
            out[name] = "tensor" if isinstance(value, torch.Tensor) else \
                list(value) if isinstance(value, tuple) else value
        return out


# ---------------------------------------------------------------------- results
@dataclass(kw_only=True)
class PerSample:
    """Per-sample fields that apply only to some attacks (``None`` elsewhere): ``target``
    (the class aimed at), ``status`` (:data:`Status`), ``objective`` and ``bound`` (exact
    attacks' objective at ``x_adv`` and proven upper bound), ``queries`` (oracle queries),
    ``point_seconds`` (time per point of the attacks that work point by point); ``extra``:
    attack-specific values (e.g. CW's success at chosen iteration counts, the exact attacks'
    per-point records)."""

    target: torch.Tensor | None = None
    status: tuple[Status, ...] | None = None
    objective: torch.Tensor | None = None
    bound: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    point_seconds: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackResult(PerSample):
    """What :meth:`Attack.run` returns.

    ``success``: per sample, whether the attack reached its goal (targeted: the model predicts
    the target; untargeted: it no longer predicts the label; exact attacks: the objective
    ``f_target − f_prediction`` is > 0; certification: a counter-example was found). Norms are
    per sample, of ``x_adv − x`` flattened. ``seconds``: wall time of the whole batch. The
    other per-sample fields: see :class:`PerSample`.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    seconds: float
    settings: dict[str, Any]

    @property
    def success_rate(self) -> float:
        """Fraction of samples on which the attack succeeded."""
        return self.success.float().mean().item() if len(self.success) else 0.0


@dataclass
class Found(PerSample):
    """What :meth:`Attack._execute` hands to :meth:`Attack.run` (tensors on the model's
    device). ``success`` None: judged by the model's prediction on ``x_adv``."""

    x: torch.Tensor
    x_adv: torch.Tensor
    success: torch.Tensor | None = None


TENSOR_FIELDS = ("target", "objective", "bound", "queries", "point_seconds")


# ---------------------------------------------------------------------- the attack
class Attack:
    """Base class of every attack: the parameters, input validation and the result.

    Subclasses set ``name``, ``Params`` and implement :meth:`_execute`.
    """

    name: ClassVar[str] = "attack"
    Params: ClassVar[type[AttackParams]] = AttackParams

    def __init__(self, model: nn.Module, /, **params: Any) -> None:
        if not isinstance(model, nn.Module):
            raise AttackError(f"model must be a torch.nn.Module returning logits, got "
                              f"{type(model).__name__}.")
        self.model = model
        self.params = self.Params.create(self.name, params)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give the constructor the signature of ``Params`` (for ``help()`` and editors)."""
        super().__init_subclass__(**kwargs)
        model = inspect.Parameter("model", inspect.Parameter.POSITIONAL_ONLY,
                                  annotation=nn.Module)
        keyword = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                     annotation=f.type)
                   for f in dataclasses.fields(cls.Params)]
        cls.__signature__ = inspect.Signature([model, *keyword])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.as_dict().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ public API
    def __call__(self, x: torch.Tensor, y: torch.Tensor, *,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial versions of ``x`` (same device as ``x``); cheaper than :meth:`run`,
        which also measures success and norms."""
        out_device = x.device
        x, y = self._prepare_inputs(x, y)
        return self._execute(x, y, target, measure=False).x_adv.to(out_device)

    def run(self, x: torch.Tensor, y: torch.Tensor, *,
            target: torch.Tensor | None = None) -> AttackResult:
        """Attack the batch ``(x, y)``; see :class:`AttackResult`. ``target``: one label per
        input for a targeted attack (wins over the ``target`` parameter)."""
        start = time.perf_counter()
        out_device = x.device
        x, y = self._prepare_inputs(x, y)
        found = self._execute(x, y, target, measure=True)
        x_adv = found.x_adv
        success = found.success
        if success is None:
            with torch.no_grad():
                success = self.is_success(self.model(x_adv), y, found.target)
        delta = (x_adv - found.x).flatten(1)

        def out(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(out_device)

        return AttackResult(
            x_adv=x_adv.to(out_device), success=success.to(out_device),
            l0=(delta.abs() > 1e-12).sum(1).to(out_device),
            l2=delta.norm(dim=1).to(out_device), linf=delta.abs().amax(1).to(out_device),
            seconds=time.perf_counter() - start, settings=self.settings(),
            **{name: out(getattr(found, name)) for name in TENSOR_FIELDS},
            status=found.status, extra=found.extra)

    def settings(self) -> dict[str, Any]:
        """The attack's name and parameters, as plain data."""
        return {"attack": self.name, **self.params.as_dict()}

    @staticmethod
    def is_success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per sample: prediction == target (targeted) or != label (untargeted)."""
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y

    # ------------------------------------------------------------------ for subclasses
    def _prepare_inputs(self, x: torch.Tensor, y: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated inputs (float32, int64) on the model's device."""
        device = model_device(self.model)
        x, y = self._validate(x, y)
        return x.to(device), y.to(device)

    def _validate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise AttackError("x and y must be tensors (x: float inputs in [0, 1], y: labels).")
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or len(x) == 0:
            raise AttackError(f"x must be a non-empty batch with one label per input; got x of "
                              f"shape {tuple(x.shape)} and y of shape {tuple(y.shape)}.")
        if not x.is_floating_point():
            raise AttackError(f"x must be floating point in [0, 1], got dtype {x.dtype}.")
        if not torch.isfinite(x).all():
            raise AttackError("x holds NaN or infinite values; inputs must be finite, in "
                              "[0, 1].")
        if x.min() < 0 or x.max() > 1:
            raise AttackError(f"inputs must lie in [0, 1] (found [{x.min().item():.3g}, "
                              f"{x.max().item():.3g}]); put normalization inside the model.")
        try:
            check_input_shape(self.model, x)
        except BnnRobustError as exc:
            raise AttackError(str(exc)) from None
        return x.float(), y.long()

    def _execute(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
                 measure: bool) -> Found:
        """Attack validated inputs; ``measure``: the caller wants success and the per-sample
        fields (``__call__`` passes False)."""
        raise NotImplementedError
