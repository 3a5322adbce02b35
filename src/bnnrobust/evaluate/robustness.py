"""Accuracy under attack over a list of ε (Foolbox style), worst case per sample over several
attacks (AutoAttack style), and CW-L2 accuracy as a function of iterations (Galloway Fig. 2).

Accuracy is measured on the adversarial inputs; for a model with randomness at inference it is
the mean over ``passes`` forward passes with fixed seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from bnnrobust.attacks import CWL2, Attack, AttackError
from bnnrobust.attacks.base import check_steps, model_device
from bnnrobust.attacks.catalogue import entry, names
from bnnrobust.train import accuracy, correct, predict_logits


@dataclass(frozen=True)
class Row:
    """One line of the robustness table."""

    attack: str
    eps: float | None
    accuracy: float
    success_rate: float
    mean_l2: float | None
    n: int
    seconds: float
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return asdict(self)


def attack_class(name: str) -> type[Attack]:
    """The gradient attack of the catalogue named ``name`` (fgsm, bim, pgd, rfgsm, cw, jsma)."""
    if name not in names("gradient"):
        raise AttackError(f"unknown attack {name!r}; expected one of "
                          f"{', '.join(names('gradient'))}.")
    return entry(name).attack


def expand_targets(x: torch.Tensor, y: torch.Tensor,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each input once per other class: ``(x repeated, y repeated, target)`` — the paper's
    targeted CW evaluation (9 targets per MNIST image)."""
    offsets = torch.arange(1, num_classes)
    target = (y[:, None] + offsets[None, :]) % num_classes
    k = num_classes - 1
    return x.repeat_interleave(k, 0), y.repeat_interleave(k), target.flatten()


def run_batched(attack: Attack, x: torch.Tensor, y: torch.Tensor, *,
                target: torch.Tensor | None = None, batch_size: int = 256,
                progress: Progress | None = None, description: str = "") -> dict[str, Any]:
    """Run ``attack`` over ``x`` in batches; concatenated x_adv, success, l2 and seconds."""
    check_steps("batch_size", batch_size)
    parts: dict[str, list] = {"x_adv": [], "success": [], "l2": [], "extra": []}
    seconds = 0.0
    task = progress.add_task(description, total=len(x)) if progress is not None else None
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        result = attack.run(x[sl], y[sl], target=None if target is None else target[sl])
        parts["x_adv"].append(result.x_adv)
        parts["success"].append(result.success)
        parts["l2"].append(result.l2)
        parts["extra"].append(result.extra)
        seconds += result.seconds
        if progress is not None:
            progress.advance(task, len(result.x_adv))
    if progress is not None:
        progress.remove_task(task)
    return {"x_adv": torch.cat(parts["x_adv"]), "success": torch.cat(parts["success"]),
            "l2": torch.cat(parts["l2"]), "extra": parts["extra"], "seconds": seconds}


def accuracy_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                          attack: str | type[Attack], eps: Sequence[float | None] = (0.3,),
                          batch_size: int = 256, passes: int = 5, all_targets: bool = False,
                          progress: bool = False, **options: Any) -> list[Row]:
    """One row per ε: accuracy on the adversarial inputs, attack success rate, mean L2 of the
    successful perturbations. ``options`` go to the attack (e.g. ``steps``, ``eot_samples``,
    ``bpda``, ``target``). ``all_targets``: attack each input towards every other class."""
    cls = attack_class(attack) if isinstance(attack, str) else attack
    rows = []
    if all_targets:
        x, y, target = expand_targets(x, y, getattr(model, "num_classes", 10))
    else:
        target = None
    with Progress(disable=not progress, transient=True) as bar:
        for e in eps:
            kwargs = dict(options)
            budget = entry(cls.name).budget
            if budget is not None:
                kwargs[budget] = e
            atk = cls(model, **kwargs)
            out = run_batched(atk, x, y, target=target, batch_size=batch_size, progress=bar,
                              description=f"{cls.name} eps={e}")
            acc = accuracy(model, out["x_adv"], y, passes=passes, device=model_device(model))
            ok = out["success"]
            rows.append(Row(cls.name, e if budget is not None else None, acc,
                            ok.float().mean().item(),
                            out["l2"][ok].mean().item() if ok.any() else None,
                            len(x), out["seconds"], atk.settings()))
    return rows


@dataclass(frozen=True)
class WorstCase:
    """Per-sample worst case over several attacks: robust only if every attack failed."""

    robust: torch.Tensor
    per_attack_accuracy: dict[str, float]

    @property
    def accuracy(self) -> float:
        """Robust accuracy: the fraction of samples that survive every attack."""
        return self.robust.float().mean().item()


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               attacks: Sequence[Attack], *, batch_size: int = 256) -> WorstCase:
    """Attack every sample with every attack; a sample is robust if it is classified correctly
    on its clean input and on every attack's adversarial input (AutoAttack's worst case)."""
    robust = correct(predict_logits(model, x, device=model_device(model)), y)
    per_attack = {}
    for i, atk in enumerate(attacks):
        out = run_batched(atk, x, y, batch_size=batch_size)
        ok = correct(predict_logits(model, out["x_adv"], device=model_device(model)), y)
        per_attack[f"{i}:{atk.name}"] = ok.float().mean().item()
        robust &= ok
    return WorstCase(robust=robust, per_attack_accuracy=per_attack)


def cw_accuracy_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      iterations: Sequence[int] = (10, 25, 50, 100), all_targets: bool = True,
                      batch_size: int = 256, cw: Callable[..., CWL2] = CWL2.galloway,
                      **options: Any) -> list[dict[str, float]]:
    """CW-L2 accuracy after each of ``iterations`` in one run (Galloway Figure 2).

    An input counts as fooled at iteration i if the attack had found a successful example by
    then; otherwise the original input stands (as CleverHans returns it).
    """
    iters = sorted(set(iterations))
    atk = cw(model, steps=iters[-1], record_at=iters, **options)
    target = None
    if all_targets:
        x, y, target = expand_targets(x, y, getattr(model, "num_classes", 10))
    clean_ok = correct(predict_logits(model, x, device=model_device(model)), y)
    out = run_batched(atk, x, y, target=target, batch_size=batch_size)
    curve = []
    for it in iters:
        fooled = torch.cat([e["success_at"][it] for e in out["extra"]])
        curve.append({"iterations": it, "accuracy": (clean_ok & ~fooled).float().mean().item(),
                      "success_rate": fooled.float().mean().item()})
    return curve
