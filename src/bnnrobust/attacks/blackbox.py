"""The black-box substitute attack of Papernot et al. (2017), as Galloway et al. ran it.

The attacker sees only an :class:`Oracle` that answers labels (argmax) and counts queries: no
logits, no gradients, no parameters. It trains a substitute on a small seed set labelled by
the oracle, growing the set by Jacobian-based augmentation, then crafts adversarial examples
on the substitute with a white-box attack and transfers them to the oracle.

Defaults are Galloway et al.'s: the first 150 test images seed the substitute and the other
9,850 form the evaluation set; substitute = MLP 784-200-200-10 (ReLU); 6 training rounds (5
augmentations, so 150·2⁵ = 4,800 oracle labels) with λ = 0.1; 10 epochs per round, Adam 1e-3,
batch 128; then FGSM ε = 0.3 on the substitute. Augmentation follows the paper:
``x + λ·sign(∂F_{O(x)}(x)/∂x)`` with F the substitute's softmax output (as in CleverHans).
Optional: Papernot's periodic sign flip of λ every ``tau`` rounds, and reservoir sampling
(each augmentation processes at most ``reservoir`` points drawn from the current set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from bnnrobust.attacks.base import (
    Attack,
    AttackError,
    AttackParams,
    Found,
    check_budget,
    check_choice,
    check_positive,
    check_steps,
    model_device,
)
from bnnrobust.attacks.catalogue import entry, names
from bnnrobust.device import global_seed, resolve_device
from bnnrobust.models import build
from bnnrobust.train import check_input_shape, eval_mode, fit, predict_logits


class Oracle:
    """Answers only the predicted label for a batch and counts every input it is asked about.

    ``target`` is a model (queried in eval mode, one forward pass per input, as deployed: a
    stochastic model is not averaged) or any function from a batch to labels.
    """

    def __init__(self, target: nn.Module | Callable[[torch.Tensor], torch.Tensor], *,
                 input_shape: tuple[int, ...] | None = None, batch_size: int = 1000,
                 device: str | torch.device = "auto") -> None:
        if not callable(target):
            raise AttackError(f"an oracle needs a model or a function, got {type(target).__name__}.")
        self._target = target
        self.input_shape = input_shape or getattr(target, "input_shape", None)
        self.batch_size = check_steps("batch_size", batch_size)
        self.device = resolve_device(device) if isinstance(target, nn.Module) else None
        self.queries = 0

    def check(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` does not have the oracle's input shape."""
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise AttackError(f"the oracle takes inputs of shape {tuple(self.input_shape)} but "
                              f"got {tuple(x.shape[1:])}; use a dataset that fits the model.")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Labels for ``x`` (int64, on the CPU); counts ``len(x)`` queries."""
        self.check(x)
        self.queries += len(x)
        if not isinstance(self._target, nn.Module):
            return torch.as_tensor(self._target(x)).long().cpu()
        labels = []
        model = self._target.to(self.device)
        with eval_mode(model):
            for start in range(0, len(x), self.batch_size):
                labels.append(model(x[start:start + self.batch_size].to(self.device))
                              .argmax(1).cpu())
        return torch.cat(labels)


def jacobian_augmentation(substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                          lmbda: float) -> torch.Tensor:
    """New points ``clip(x + λ·sign(∂softmax(F(x))_label / ∂x), 0, 1)`` (Papernot et al.)."""
    with eval_mode(substitute):
        xg = x.detach().clone().requires_grad_(True)
        probs = substitute(xg).softmax(1)
        (grad,) = torch.autograd.grad(probs.gather(1, labels[:, None]).sum(), xg)
    return (x + lmbda * grad.sign()).clamp(0, 1).detach()


@dataclass
class RoundStats:
    """One substitute training round."""

    round: int
    training_points: int
    oracle_queries: int
    substitute_agreement: float  # substitute vs oracle labels on the training set


@dataclass
class BlackBoxResult:
    """The outcome of a black-box attack on the evaluation set."""

    oracle_clean_accuracy: float
    substitute_clean_accuracy: float
    oracle_adversarial_accuracy: float
    substitute_adversarial_accuracy: float
    training_queries: int
    evaluation_queries: int
    n_eval: int
    rounds: list[RoundStats] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return asdict(self)


def train_substitute(oracle: Oracle | Callable[[torch.Tensor], torch.Tensor],
                     x_seed: torch.Tensor, substitute: nn.Module, *, rounds: int = 6,
                     lmbda: float = 0.1, epochs: int = 10, batch_size: int = 128,
                     lr: float = 1e-3, tau: int | None = None, reservoir: int | None = None,
                     seed: int = 0, device: str | torch.device = "auto",
                     progress: bool = True) -> tuple[nn.Module, list[RoundStats]]:
    """Train ``substitute`` (in place) from ``x_seed`` and the oracle's labels only."""
    rounds = check_steps("rounds", rounds)
    lmbda = check_positive("lmbda", lmbda)
    if tau is not None:
        check_steps("tau", tau)
    if reservoir is not None:
        check_steps("reservoir", reservoir)
    oracle = oracle if isinstance(oracle, Oracle) else Oracle(oracle)
    gen = torch.Generator().manual_seed(seed)
    x_train = x_seed.clone()
    y_train = oracle(x_train)
    history = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("substitute training rounds", total=rounds)
        for rho in range(rounds):
            fit(substitute, (x_train, y_train), epochs=epochs, batch_size=batch_size, lr=lr,
                seed=seed + rho, device=device, progress=False)
            agree = (predict_logits(substitute, x_train, device=device).argmax(1) == y_train)
            history.append(RoundStats(rho + 1, len(x_train), oracle.queries,
                                      agree.float().mean().item()))
            if rho < rounds - 1:
                step = lmbda * (-1) ** (rho // tau) if tau else lmbda
                pick = (torch.randperm(len(x_train), generator=gen)[:reservoir]
                        if reservoir else torch.arange(len(x_train)))
                sub_dev = next(iter(substitute.parameters())).device
                new = jacobian_augmentation(substitute, x_train[pick].to(sub_dev),
                                            y_train[pick].to(sub_dev), step).cpu()
                x_train = torch.cat([x_train, new])
                y_train = torch.cat([y_train, oracle(new)])
            bar.advance(task)
    return substitute, history


#: the catalogue attacks that can be crafted on the substitute (gradient attacks with an ε)
CRAFTING = tuple(n for n in names("gradient") if entry(n).budget is not None)


@dataclass(frozen=True, kw_only=True)
class SubstituteParams(AttackParams):
    """The substitute attack's parameters (defaults: Galloway et al.'s runs of Papernot et al.).

    Args:
        eps: L∞ budget of the attack crafted on the substitute (0.3).
        craft: the white-box attack of the catalogue crafted on the substitute (``"fgsm"``).
        holdout: inputs that seed the substitute: the first ``holdout`` of the first batch
            given to ``run`` when :meth:`SubstituteAttack.fit` was not called (150).
        substitute: zoo model of the substitute (``"mlp"``: 784-200-200-10, ReLU).
        substitute_params: its parameters (default: the input size and the model's classes).
        rounds: substitute training rounds (6). lmbda: Jacobian augmentation step λ (0.1).
        epochs, batch_size, lr: training of each round (10, 128, 1e-3, Adam).
        tau: flip the sign of λ every ``tau`` rounds (Papernot; default None: off).
        reservoir: augment at most this many points per round (default None: all).
        seed: substitute initialization, training and the crafting attack.
    """

    eps: float = 0.3
    craft: str = "fgsm"
    holdout: int = 150
    substitute: str = "mlp"
    substitute_params: dict[str, Any] | None = None
    rounds: int = 6
    lmbda: float = 0.1
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    tau: int | None = None
    reservoir: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("eps", check_budget("eps", self.eps))
        check_choice("craft", self.craft, CRAFTING)
        check_steps("holdout", self.holdout)
        if not isinstance(self.substitute, str):
            raise AttackError(f"substitute must be a zoo model name, got {self.substitute!r}.")
        if self.substitute_params is not None and not isinstance(self.substitute_params, dict):
            raise AttackError("substitute_params must be a table of model parameters.")
        for name in ("rounds", "epochs", "batch_size"):
            check_steps(name, getattr(self, name))
        self._set("lmbda", check_positive("lmbda", self.lmbda))
        self._set("lr", check_positive("lr", self.lr))
        for name in ("tau", "reservoir"):
            if getattr(self, name) is not None:
                check_steps(name, getattr(self, name))


class SubstituteAttack(Attack):
    """Papernot et al.'s black-box transfer attack against ``model``, which is queried for
    labels only (through an :class:`Oracle` that counts the queries).

    :meth:`fit` trains the substitute on seed inputs labelled by the oracle (Jacobian
    augmentation between rounds); :meth:`run` crafts the ``craft`` attack on the substitute, against
    the substitute's own predictions, and judges success by the oracle's answer. Without a
    :meth:`fit`, the first ``holdout`` inputs of the first batch seed the substitute (they are
    attacked too; leave them out of an evaluation, as :func:`blackbox_attack` does).

    Shape:
        x: ``(N, ...)`` in [0, 1]; y: ``(N,)``. ``queries``: one oracle query per input (the
        training queries are in ``extra["training_queries"]``).

    Example::

        atk = SubstituteAttack(model, eps=0.3)
        atk.fit(x_test[:150])
        result = atk.run(x_test[150:], y_test[150:])
    """

    name = "substitute"
    Params = SubstituteParams

    def __init__(self, model: nn.Module, /, **params: Any) -> None:
        super().__init__(model, **params)
        self.oracle = Oracle(model, device=model_device(model))
        self.substitute: nn.Module | None = None
        self.history: list[RoundStats] = []
        self.training_queries = 0

    def fit(self, x_seed: torch.Tensor, *, progress: bool = False) -> nn.Module:
        """Train the substitute from ``x_seed`` and the oracle's labels; returns it."""
        p = self.params
        self.oracle.check(x_seed[:1])
        device = model_device(self.model)
        in_features = int(torch.tensor(x_seed.shape[1:]).prod())
        params = dict(p.substitute_params or {})
        if p.substitute == "mlp":
            params = {"in_features": in_features,
                      "num_classes": int(getattr(self.model, "num_classes", 10)), **params}
        with global_seed(p.seed):
            substitute = build(p.substitute, **params)
        check_input_shape(substitute, x_seed[:1], what="test inputs (substitute)")
        substitute.to(device)
        before = self.oracle.queries
        self.substitute, self.history = train_substitute(
            self.oracle, x_seed, substitute, rounds=p.rounds, lmbda=p.lmbda, epochs=p.epochs,
            batch_size=p.batch_size, lr=p.lr, tau=p.tau, reservoir=p.reservoir, seed=p.seed,
            device=device, progress=progress)
        self.training_queries = self.oracle.queries - before
        return self.substitute

    def fitted(self, **crafting: Any) -> SubstituteAttack:
        """A copy with other crafting parameters (``eps``, ``craft``) that reuses this
        attack's trained substitute (e.g. one substitute, FGSM at several budgets)."""
        unknown = sorted(set(crafting) - {"eps", "craft"})
        if unknown:
            raise AttackError(f"fitted() changes eps and craft only, not {unknown[0]!r}.")
        if self.substitute is None:
            raise AttackError("the substitute is not trained: call fit(x_seed) first.")
        params = {name: getattr(self.params, name) for name in self.params.names()}
        other = SubstituteAttack(self.model, **{**params, **crafting})
        other.substitute, other.history = self.substitute, self.history
        other.training_queries = self.training_queries
        return other

    def craft(self, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
        """The crafting attack's examples for ``x`` on the (fitted) substitute, against its own
        predictions."""
        if self.substitute is None:
            raise AttackError("the substitute is not trained: call fit(x_seed) first.")
        device = model_device(self.substitute)
        labels = predict_logits(self.substitute, x, device=device).argmax(1)
        atk = entry(self.params.craft).make(self.substitute, {"eps": self.params.eps,
                                                               "seed": self.params.seed})
        return torch.cat([atk(x[i:i + batch_size].to(device),
                              labels[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(x), batch_size)])

    def _execute(self, x, y, target, *, measure: bool) -> Found:
        if target is not None:
            raise AttackError("the substitute attack is untargeted.")
        if self.substitute is None:
            if len(x) <= self.params.holdout:
                raise AttackError(f"the first batch ({len(x)} inputs) must hold more than "
                                  f"holdout={self.params.holdout} inputs to seed the "
                                  "substitute; call fit(x_seed) first or lower holdout.")
            self.fit(x[:self.params.holdout].cpu())
        x_adv = self.craft(x.cpu()).to(x.device)
        labels = self.oracle(x_adv).to(y.device)
        return Found(x, x_adv, success=labels != y,
                     queries=torch.ones(len(x), dtype=torch.long, device=x.device),
                     extra={"training_queries": self.training_queries,
                            "rounds": [asdict(r) for r in self.history]})


def blackbox_attack(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, *,
                    progress: bool = False, **params: Any) -> BlackBoxResult:
    """Galloway et al.'s protocol: the first ``holdout`` test inputs seed the substitute, the
    rest are attacked; returns clean and transferred accuracies and the query counts.
    ``params``: those of :class:`SubstituteParams`."""
    atk = SubstituteAttack(model, **params)
    p = atk.params
    atk.oracle.check(x_test[:1])
    if not 1 <= p.holdout < len(x_test):
        raise AttackError(f"holdout must be an integer in 1..{len(x_test) - 1} (the test set has "
                          f"{len(x_test)} inputs), got {p.holdout!r}.")
    atk.fit(x_test[:p.holdout], progress=progress)
    x_eval, y_eval = x_test[p.holdout:], y_test[p.holdout:]
    oracle_clean = atk.oracle(x_eval)
    result = atk.run(x_eval, y_eval)
    device = model_device(atk.substitute)
    sub_clean = predict_logits(atk.substitute, x_eval, device=device).argmax(1)
    sub_adv = predict_logits(atk.substitute, result.x_adv.cpu(), device=device).argmax(1)
    return BlackBoxResult(
        oracle_clean_accuracy=(oracle_clean == y_eval).float().mean().item(),
        substitute_clean_accuracy=(sub_clean == y_eval).float().mean().item(),
        oracle_adversarial_accuracy=(~result.success).float().mean().item(),
        substitute_adversarial_accuracy=(sub_adv == y_eval).float().mean().item(),
        training_queries=atk.training_queries,
        evaluation_queries=atk.oracle.queries - atk.training_queries,
        n_eval=len(x_eval), rounds=atk.history,
        settings={**atk.settings(), "substitute_config": getattr(atk.substitute, "config", None)})
