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

from bnnrobust.attacks.base import AttackError, check_positive, check_steps
from bnnrobust.attacks.registry import ATTACKS, EPS_FREE
from bnnrobust.device import resolve_device
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


def blackbox_attack(oracle: Oracle | Callable[[torch.Tensor], torch.Tensor],
                    x_test: torch.Tensor, y_test: torch.Tensor, *, holdout: int = 150,
                    substitute: str | nn.Module = "mlp",
                    substitute_params: dict[str, Any] | None = None, rounds: int = 6,
                    lmbda: float = 0.1, epochs: int = 10, batch_size: int = 128,
                    lr: float = 1e-3, tau: int | None = None, reservoir: int | None = None,
                    attack: str = "fgsm", attack_options: dict[str, Any] | None = None,
                    seed: int = 0, device: str | torch.device = "auto",
                    progress: bool = True) -> BlackBoxResult:
    """Papernot's substitute attack: seed set = the first ``holdout`` test inputs, evaluation
    set = the rest; returns clean and transferred accuracies and the query counts."""
    check_steps("rounds", rounds)
    check_positive("lmbda", lmbda)
    oracle = oracle if isinstance(oracle, Oracle) else Oracle(oracle)
    oracle.check(x_test[:1])
    if not isinstance(holdout, int) or not 1 <= holdout < len(x_test):
        raise AttackError(f"holdout must be an integer in 1..{len(x_test) - 1} (the test set has "
                          f"{len(x_test)} inputs), got {holdout!r}.")
    if attack not in ATTACKS:
        raise AttackError(f"unknown attack {attack!r}; expected one of {', '.join(ATTACKS)}.")
    attack_options = dict(attack_options or {})
    if attack not in EPS_FREE:
        attack_options.setdefault("eps", 0.3)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if isinstance(substitute, str):
        in_features = int(torch.tensor(x_test.shape[1:]).prod())
        params = {"in_features": in_features, **(substitute_params or {})} \
            if substitute == "mlp" else dict(substitute_params or {})
        substitute = build(substitute, **params)
    check_input_shape(substitute, x_test[:1], what="test inputs (substitute)")
    substitute.to(dev)
    x_seed, x_eval, y_eval = x_test[:holdout], x_test[holdout:], y_test[holdout:]
    substitute, history = train_substitute(
        oracle, x_seed, substitute, rounds=rounds, lmbda=lmbda, epochs=epochs,
        batch_size=batch_size, lr=lr, tau=tau, reservoir=reservoir, seed=seed, device=dev,
        progress=progress)
    training_queries = oracle.queries
    sub_pred = predict_logits(substitute, x_eval, device=dev).argmax(1)
    atk = ATTACKS[attack](substitute, seed=seed, **attack_options)
    x_adv = torch.cat([atk(x_eval[i:i + 500].to(dev), sub_pred[i:i + 500].to(dev)).cpu()
                       for i in range(0, len(x_eval), 500)])
    oracle_clean = oracle(x_eval)
    oracle_adv = oracle(x_adv)
    sub_adv = predict_logits(substitute, x_adv, device=dev).argmax(1)
    settings = {"holdout": holdout, "rounds": rounds, "lmbda": lmbda, "epochs": epochs,
                "batch_size": batch_size, "lr": lr, "tau": tau, "reservoir": reservoir,
                "seed": seed, "substitute": getattr(substitute, "config", None),
                "attack": atk.settings()}
    return BlackBoxResult(
        oracle_clean_accuracy=(oracle_clean == y_eval).float().mean().item(),
        substitute_clean_accuracy=(sub_pred == y_eval).float().mean().item(),
        oracle_adversarial_accuracy=(oracle_adv == y_eval).float().mean().item(),
        substitute_adversarial_accuracy=(sub_adv == y_eval).float().mean().item(),
        training_queries=training_queries,
        evaluation_queries=oracle.queries - training_queries,
        n_eval=len(x_eval), rounds=history, settings=settings)
