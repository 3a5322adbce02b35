"""Accuracy under attack over a list of ε (Foolbox style), worst case per sample over several
attacks (AutoAttack style), and CW-L2 accuracy as a function of iterations (Galloway Fig. 2).

Accuracy is measured on the adversarial inputs; for a model with randomness at inference it is
the mean over ``passes`` forward passes with fixed seeds (:func:`bnnrobust.train.accuracy`,
the one definition).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from bnnrobust.attacks import CWL2, Attack, AttackError, AttackResult
from bnnrobust.attacks.base import TENSOR_FIELDS, check_steps, model_device
from bnnrobust.attacks.catalogue import CATALOGUE, entry, names
from bnnrobust.progress import tracked
from bnnrobust.train import accuracy, correct, correct_fraction, predict_logits


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
    """The batched attack of the catalogue named ``name`` (a gradient or score attack: fgsm,
    bim, pgd, rfgsm, apgd, apgd-t, fab-t, square, cw, jsma)."""
    if name not in names("gradient", "score"):
        raise AttackError(f"unknown attack {name!r}; expected one of "
                          f"{', '.join(names('gradient', 'score'))}.")
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
                progress: Progress | None = None, description: str = "") -> AttackResult:
    """Run ``attack`` over ``x`` in batches; one :class:`AttackResult` for all of ``x``
    (see :func:`concatenate`)."""
    check_steps("batch_size", batch_size)
    parts: list[AttackResult] = []
    task = progress.add_task(description, total=len(x)) if progress is not None else None
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        parts.append(attack.run(x[sl], y[sl], target=None if target is None else target[sl]))
        if progress is not None:
            progress.advance(task, len(parts[-1].x_adv))
    if progress is not None:
        progress.remove_task(task)
    return concatenate(parts)


def concatenate(parts: Sequence[AttackResult]) -> AttackResult:
    """One result from the results of consecutive batches: per-sample fields concatenated,
    ``seconds`` summed; ``extra`` holds each batch's ``extra`` under ``"batches"`` and, when
    every batch has per-point records (``"points"``: the exact attacks), all of them."""
    if len(parts) == 1:
        return parts[0]
    extra: dict[str, Any] = {"batches": [p.extra for p in parts]}
    if all("points" in p.extra for p in parts):
        extra["points"] = [r for p in parts for r in p.extra["points"]]

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else torch.cat(values)

    status = None if any(p.status is None for p in parts) else \
        tuple(s for p in parts for s in p.status)
    return AttackResult(
        x_adv=cat("x_adv"), success=cat("success"), l0=cat("l0"), l2=cat("l2"),
        linf=cat("linf"), seconds=sum(p.seconds for p in parts), settings=parts[0].settings,
        target=cat("target"), status=status, objective=cat("objective"), bound=cat("bound"),
        queries=cat("queries"), point_seconds=cat("point_seconds"), extra=extra)


def accuracy_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                          attack: str | type[Attack], eps: Sequence[float | None] = (0.3,),
                          batch_size: int = 256, passes: int = 5, all_targets: bool = False,
                          progress: bool = False,
                          on_result: Callable[[float | None, AttackResult], None] | None = None,
                          **options: Any) -> list[Row]:
    """One row per ε: accuracy on the adversarial inputs, attack success rate, mean L2 of the
    successful perturbations. ``options`` go to the attack (e.g. ``steps``, ``eot_samples``,
    ``bpda``, ``target``). ``all_targets``: attack each input towards every other class.
    ``on_result(eps, result)``: called with each ε's per-sample result (records)."""
    cls = attack_class(attack) if isinstance(attack, str) else attack
    rows = []
    if all_targets:
        x, y, target = expand_targets(x, y, getattr(model, "num_classes", 10))
    else:
        target = None
    with Progress(disable=not progress, transient=True) as bar, \
            tracked(cls.name, len(eps), enabled=progress) as tracker:
        for e in eps:
            kwargs = dict(options)
            budget = entry(cls.name).budget
            if budget is not None:
                kwargs[budget] = e
            atk = cls(model, **kwargs)
            out = run_batched(atk, x, y, target=target, batch_size=batch_size, progress=bar,
                              description=f"{cls.name} eps={e}")
            if on_result is not None:
                on_result(e, out)
            acc = accuracy(model, out.x_adv, y, passes=passes, device=model_device(model))
            ok = out.success
            rows.append(Row(cls.name, e if budget is not None else None, acc,
                            ok.float().mean().item(),
                            out.l2[ok].mean().item() if ok.any() else None,
                            len(x), out.seconds, atk.settings()))
            tracker.advance(f"ε={e}: accuracy {acc:.2%}, {out.seconds:.1f} s")
    return rows


@dataclass(frozen=True)
class WorstCase:
    """Per-sample worst case over several attacks (AutoAttack's): a sample is robust only if
    it is classified correctly on its clean input and every attack failed on it.

    ``robust``: per sample, the fraction of forward passes correct under its worst attack (0
    or 1 for a deterministic model; see :func:`bnnrobust.train.correct_fraction`);
    ``clean``: the same on the clean inputs; ``after``: per attack label, in the order run,
    the per-sample robustness after that attack and every earlier one; ``per_attack``: per
    attack label, the per-sample fraction correct under that attack alone (clean mistakes
    included; empty for a cascade, where an attack does not see every sample); ``results``:
    each attack's result, on the samples of ``attacked``; ``attacked``: per attack label, the
    indices of the samples it ran on (all of them, unless a cascade skipped the broken ones);
    ``seconds``: the attacks' time.
    """

    robust: torch.Tensor
    clean: torch.Tensor
    per_attack: dict[str, torch.Tensor]
    results: dict[str, AttackResult]
    seconds: float
    after: dict[str, torch.Tensor] = field(default_factory=dict)
    attacked: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Robust accuracy: the mean over samples of :attr:`robust`."""
        return self.robust.mean().item()

    @property
    def per_attack_accuracy(self) -> dict[str, float]:
        """Accuracy under each attack alone (empty for a cascade)."""
        return {k: v.mean().item() for k, v in self.per_attack.items()}

    @property
    def accuracy_after(self) -> dict[str, float]:
        """Robust accuracy after each attack and every earlier one, in the order run."""
        return {k: v.mean().item() for k, v in self.after.items()}


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               attacks: Mapping[str, Attack | AttackResult] | Sequence[Attack], *,
               budget: float | None = None, passes: int = 5, seed: int = 0,
               batch_size: int = 256, cascade: bool = False,
               start: torch.Tensor | None = None,
               limits: Mapping[str, int] | None = None,
               on_attack: Callable[[str, WorstCase], None] | None = None) -> WorstCase:
    """Attack every sample with every attack and keep, per sample, the worst outcome.

    ``attacks``: attacks by label (a sequence is labelled ``"<i>:<name>"``), or results
    already computed on ``(x, y)`` (e.g. one CW-L2 run shared by several budgets). An
    adversarial input counts only where it lies within ``budget`` in L∞ (when given). A
    counter-example proven by an exact attack or certification (its ``success``) counts as
    broken even where the model's own tie-break still predicts the label.

    ``cascade``: as AutoAttack runs its ensemble, each attack runs only on the samples every
    earlier attack failed on (the robust accuracy is the same, the cost lower; cheapest
    attacks first pays most). ``start``: per-sample robustness already established (e.g. by an
    earlier cascade, or at a smaller ε: an adversarial input within a smaller budget lies
    within this one), instead of the clean inputs' alone. ``limits``: attack label -> run that
    attack on the first N samples only (an exact attack's budget of points). ``on_attack(label,
    so_far)``: called after each attack with the worst case so far (progress).
    """
    if not isinstance(attacks, Mapping):
        attacks = {f"{i}:{atk.name}": atk for i, atk in enumerate(attacks)}
    began = time.perf_counter()
    dev = model_device(model)
    clean = correct_fraction(model, x, y, passes=passes, seed=seed, device=dev)
    robust = clean.clone() if start is None else torch.minimum(clean, start.cpu())
    per_attack, results, after, attacked = {}, {}, {}, {}
    for label, item in attacks.items():
        where = (robust > 0).nonzero().flatten() if cascade else torch.arange(len(x))
        if limits and label in limits:
            where = where[where < limits[label]]
        if isinstance(item, AttackResult):
            if len(item.x_adv) != len(x):
                raise AttackError(f"the result for {label!r} has {len(item.x_adv)} samples; "
                                  f"expected {len(x)}.")
            out = item if len(where) == len(x) else _subset(item, where)
        elif len(where):
            out = run_batched(item, x[where], y[where], batch_size=batch_size)
        else:
            out = None
        ok = torch.ones(len(x))
        if out is not None:
            ok[where] = _correct_under(model, out, y[where], budget=budget, passes=passes,
                                       seed=seed)
            results[label] = out
        attacked[label] = where
        if not cascade:
            per_attack[label] = torch.minimum(clean, ok)
        robust = torch.minimum(robust, ok)
        after[label] = robust.clone()
        if on_attack is not None:
            on_attack(label, WorstCase(robust, clean, per_attack, results,
                                       time.perf_counter() - began, after, attacked))
    return WorstCase(robust=robust, clean=clean, per_attack=per_attack, results=results,
                     seconds=time.perf_counter() - began, after=after, attacked=attacked)


def _correct_under(model: nn.Module, out: AttackResult, y: torch.Tensor, *,
                   budget: float | None, passes: int, seed: int) -> torch.Tensor:
    """Per sample of ``out``, the fraction of passes still correct on its adversarial input
    (1 where the input leaves the ``budget``; 0 where an exact attack proved a
    counter-example)."""
    ok = correct_fraction(model, out.x_adv.cpu(), y, passes=passes, seed=seed,
                          device=model_device(model))
    if budget is not None:
        ok = torch.where(out.linf.cpu() <= budget + 1e-6, ok, torch.ones_like(ok))
    name = out.settings.get("attack")
    if name in CATALOGUE and CATALOGUE[name].kind in ("exact", "certify"):
        ok = torch.where(out.success.cpu(), torch.zeros_like(ok), ok)
    return ok


def _subset(out: AttackResult, where: torch.Tensor) -> AttackResult:
    """The per-sample fields of ``out`` at the samples ``where``."""
    def pick(t):
        return None if t is None else t[where.to(t.device)]

    return AttackResult(
        x_adv=pick(out.x_adv), success=pick(out.success), l0=pick(out.l0), l2=pick(out.l2),
        linf=pick(out.linf), seconds=out.seconds, settings=out.settings,
        status=None if out.status is None else tuple(out.status[i] for i in where.tolist()),
        **{name: pick(getattr(out, name)) for name in TENSOR_FIELDS}, extra=out.extra)


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
    batches = out.extra.get("batches", [out.extra])
    curve = []
    for it in iters:
        fooled = torch.cat([e["success_at"][it] for e in batches])
        curve.append({"iterations": it, "accuracy": (clean_ok & ~fooled).float().mean().item(),
                      "success_rate": fooled.float().mean().item()})
    return curve
