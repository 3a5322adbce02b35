"""The robustness audit of one model: the standard attack suite, the adaptive attacks its
defenses call for, the transfer attack, the exact attack where the model allows it, per-ε
worst-case robust accuracy, and the gradient-masking flags (``bnnrobust audit``).

The suite, at every ε (L∞, inputs in [0, 1]):

- standard: FGSM, and PGD with ``pgd_steps`` steps of 2.5·ε/steps (Madry et al.) and
  ``restarts`` random restarts, both on the cross-entropy;
- adaptive (Athalye et al. 2018): PGD on the logit margin (Carlini & Wagner's loss; defeats a
  saturated softmax), with EOT over ``eot_samples`` passes when the model is random at test
  time, with BPDA when it has a non-differentiable input layer; when EOT or BPDA applies, also
  PGD and FGSM on the cross-entropy with them;
- transfer: Papernot et al.'s black-box substitute (an MLP trained on ``holdout`` test inputs
  labelled by the model, Jacobian augmentation), FGSM crafted on it;
- CW-L2 (Galloway's settings, untargeted), run once: at each ε it counts where its example
  succeeded with an L∞ distance within ε;
- exact (fully connected BNNs only, needs OR-Tools): :func:`~bnnrobust.attacks.combinatorial.
  certify` on the first ``exact_points`` points (CP-SAT on the 1/255 pixel grid,
  floor(255·ε) steps, ``exact_time_limit`` seconds per point): robust, attacked or unknown.

A point is robust at ε when the model classifies it correctly and every attack fails on it
(AutoAttack's per-sample worst case); the exact attack's "attacked" points count as broken.
The evaluation set is the ``points`` test inputs after the substitute's ``holdout`` seed set.
Defaults: ε = 0.1, 0.2, 0.3 on 28×28 data (Galloway et al.) and 2/255, 4/255, 8/255
otherwise (CIFAR); 500 points; PGD 40 steps × 5 restarts; EOT 10 passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from bnnrobust.attacks import AttackResult, non_differentiable_layers
from bnnrobust.attacks.base import AttackError, check_positive, check_steps, model_device
from bnnrobust.attacks.catalogue import entry
from bnnrobust.evaluate.diagnostics import (
    Flag,
    adaptive_vs_standard,
    diagnose,
    exact_vs_gradient,
    transfer_vs_white_box,
)
from bnnrobust.evaluate.robustness import Row, run_batched, worst_case
from bnnrobust.nn import is_stochastic
from bnnrobust.train import correct_fraction

MNIST_EPS = (0.1, 0.2, 0.3)
TRANSFER = "transfer (substitute, FGSM)"
CIFAR_EPS = (2 / 255, 4 / 255, 8 / 255)


def default_eps(input_shape: Sequence[int]) -> tuple[float, ...]:
    """The papers' budgets: Galloway's for 28×28 inputs, 2-8/255 for larger images."""
    return MNIST_EPS if tuple(input_shape)[-2:] == (28, 28) else CIFAR_EPS


@dataclass
class AttackLine:
    """One attack of the suite: accuracy per ε (``None`` where it does not apply)."""

    label: str
    kind: str  # "standard", "adaptive", "transfer", "cw", "exact"
    accuracy: dict[float, float | None]
    note: str = ""


@dataclass
class AuditResult:
    """What :func:`audit` measured; ``worst``: per-ε worst-case robust accuracy."""

    model: dict[str, Any]
    points: int
    eps: list[float]
    clean_accuracy: float
    lines: list[AttackLine]
    worst: dict[float, float]
    flags: list[Flag]
    exact: dict[float, dict[str, int]] | None
    exact_note: str
    settings: dict[str, Any]
    seconds: float
    device: str
    cw_mean_l2: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON); ε keys as strings."""
        return {"model": self.model, "points": self.points, "eps": self.eps,
                "clean_accuracy": self.clean_accuracy,
                "lines": [{"label": a.label, "kind": a.kind, "note": a.note,
                           "accuracy": {str(e): v for e, v in a.accuracy.items()}}
                          for a in self.lines],
                "worst": {str(e): v for e, v in self.worst.items()},
                "flags": [f.as_dict() for f in self.flags],
                "exact": None if self.exact is None else {str(e): v for e, v in self.exact.items()},
                "exact_note": self.exact_note, "settings": self.settings,
                "seconds": self.seconds, "device": self.device, "cw_mean_l2": self.cw_mean_l2,
                **self.extra}


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of the audit's suite: a catalogue entry and its parameters at each ε.

    ``shared``: run once (at the largest ε's parameters) and counted at every ε where its
    example lies within ε in L∞ (CW-L2). ``points``: attack only the first N points (the
    exact attack); the others count as not attacked.
    """

    label: str
    kind: str  # "standard", "adaptive", "transfer", "cw", "exact"
    attack: str
    params: Callable[[float], dict[str, Any]]
    note: str = ""
    shared: bool = False
    points: int | None = None


def suite(model: nn.Module, *, seed: int = 0, pgd_steps: int = 40, restarts: int = 5,
          eot_samples: int = 10, cw_steps: int = 100, transfer: bool = True,
          substitute_rounds: int = 6, holdout: int = 150, exact_points: int = 10,
          exact_time_limit: float = 10.0) -> tuple[list[SuiteAttack], str]:
    """The attacks :func:`audit` runs on ``model`` (see the module doc), and a note on the
    exact attack (why it is skipped, or how it runs)."""
    random, nondiff = is_stochastic(model), bool(non_differentiable_layers(model))
    adaptive = {"eot_samples": eot_samples if random else 1, "bpda": nondiff}

    def pgd(**options: Any) -> Callable[[float], dict[str, Any]]:
        return lambda e: {"eps": e, "alpha": 2.5 * e / pgd_steps, "steps": pgd_steps,
                          "restarts": restarts, "seed": seed, **options}

    def fgsm(**options: Any) -> Callable[[float], dict[str, Any]]:
        return lambda e: {"eps": e, "seed": seed, **options}

    pgd_label = f"PGD-{pgd_steps} ×{restarts}"
    suffix = "".join([f" EOT-{eot_samples}" if random else "", " BPDA" if nondiff else ""])
    attacks = [SuiteAttack("FGSM", "standard", "fgsm", fgsm()),
               SuiteAttack(pgd_label, "standard", "pgd", pgd()),
               SuiteAttack(f"{pgd_label} logit margin{suffix}", "adaptive", "pgd",
                           pgd(loss="margin", **adaptive))]
    if random or nondiff:
        attacks += [SuiteAttack(f"{pgd_label}{suffix}", "adaptive", "pgd", pgd(**adaptive)),
                    SuiteAttack(f"FGSM{suffix}", "adaptive", "fgsm", fgsm(**adaptive))]
    if transfer:
        attacks.append(SuiteAttack(
            TRANSFER, "transfer", "substitute",
            lambda e: {"eps": e, "holdout": holdout, "rounds": substitute_rounds,
                       "seed": seed},
            note=f"Papernot substitute (MLP, {substitute_rounds} rounds, {holdout} seed inputs "
                 "labelled by the model; FGSM on the substitute's labels)"))
    attacks.append(SuiteAttack(
        f"CW-L2 ({cw_steps} steps), L∞ ≤ ε", "cw", "cw",
        lambda e: {**entry("cw").papers_settings(), "steps": cw_steps, "seed": seed, **adaptive},
        note="successful CW-L2 examples whose L∞ distance is within ε", shared=True))
    backend, note = _exact_backend(model, exact_points)
    if backend is not None:
        attacks.append(SuiteAttack(
            "exact (CP-SAT)", "exact", "certify",
            lambda e: {"eps": e, "time_limit": exact_time_limit, "seed": seed,
                       "backend": backend},
            points=exact_points))
        where = "floor(255·ε) pixel steps" if backend == "cpsat" else \
            "the continuous box |p| <= ε (pattern decomposition, LP reachability)"
        note = f"CP-SAT on the first {exact_points} points, {where}, {exact_time_limit:g} s per point"
    return attacks, note


def _exact_backend(model: nn.Module, points: int) -> tuple[str | None, str | None]:
    """The certification backend for ``model`` (the pixel grid where its integer form is
    integer arithmetic on 8-bit inputs, else the continuous box), or None and why not."""
    if points == 0:
        return None, "exact attack skipped (--exact-points 0)."
    try:
        from bnnrobust.attacks.combinatorial import export
    except ImportError as exc:
        return None, f"exact attack skipped: OR-Tools is not installed ({exc})."
    try:
        integer = export(model)
    except AttackError as exc:
        return None, f"exact attack not applicable: {exc}"
    return ("cpsat" if integer.grid_exact else "cpsat-lp"), None


def audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
          points: int = 500, holdout: int = 150, seed: int = 0, pgd_steps: int = 40,
          restarts: int = 5, eot_samples: int = 10, cw_steps: int = 100,
          transfer: bool = True, substitute_rounds: int = 6, exact_points: int = 10,
          exact_time_limit: float = 10.0, passes: int = 5, batch_size: int = 256,
          progress: bool = True) -> AuditResult:
    """Audit ``model`` on test inputs ``(x, y)`` (see the module docstring)."""
    start = time.perf_counter()
    if not torch.isfinite(x).all():
        raise AttackError("the audited inputs hold NaN or infinite values; inputs must be "
                          "finite, in [0, 1].")
    eps = check_options(eps, points=points, holdout=holdout, available=len(x),
                        pgd_steps=pgd_steps, restarts=restarts, eot_samples=eot_samples,
                        cw_steps=cw_steps, substitute_rounds=substitute_rounds,
                        exact_points=exact_points, exact_time_limit=exact_time_limit,
                        passes=passes, batch_size=batch_size)
    dev = model_device(model)
    x_seed = x[:holdout]
    x_eval, y_eval = x[holdout:holdout + points], y[holdout:holdout + points]
    attacks, exact_note = suite(model, seed=seed, pgd_steps=pgd_steps, restarts=restarts,
                                eot_samples=eot_samples, cw_steps=cw_steps, transfer=transfer,
                                substitute_rounds=substitute_rounds, holdout=holdout,
                                exact_points=exact_points, exact_time_limit=exact_time_limit)
    lines = [AttackLine(a.label, a.kind, {}, a.note) for a in attacks]
    shared: dict[str, AttackResult] = {}
    substitute = None
    worst: dict[float, float] = {}
    exact: dict[float, dict[str, int]] | None = None
    gradient_robust: dict[float, torch.Tensor] = {}
    clean = None
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("audit", total=len(eps) * len(attacks))
        for e in eps:
            results: dict[str, AttackResult] = {}
            for a in attacks:
                if a.shared and a.label in shared:
                    results[a.label] = shared[a.label]
                elif a.attack == "substitute":
                    atk = entry("substitute").make(model, a.params(e)) if substitute is None \
                        else substitute.fitted(eps=e)
                    if substitute is None:
                        atk.fit(x_seed)
                        substitute = atk
                    results[a.label] = run_batched(atk, x_eval, y_eval, batch_size=batch_size)
                else:
                    params = a.params(max(eps) if a.shared else e)
                    n = len(x_eval) if a.points is None else min(a.points, len(x_eval))
                    out = run_batched(entry(a.attack).make(model, params), x_eval[:n],
                                      y_eval[:n], batch_size=batch_size)
                    results[a.label] = out if n == len(x_eval) else \
                        _padded(out, x_eval, n)
                    if a.shared:
                        shared[a.label] = results[a.label]
                bar.advance(task)
            wc = worst_case(model, x_eval, y_eval, results, budget=e, passes=passes, seed=seed,
                            batch_size=batch_size)
            clean = wc.clean
            for line in lines:
                line.accuracy[e] = wc.per_attack[line.label].mean().item()
            worst[e] = wc.accuracy
            gradient = [wc.per_attack[a.label] for a in attacks if a.kind != "exact"]
            gradient_robust[e] = torch.stack([clean, *gradient]).amin(0)
            exact_line = next((a for a in attacks if a.kind == "exact"), None)
            if exact_line is not None:
                exact = exact or {}
                exact[e] = _exact_counts(results[exact_line.label], gradient_robust[e],
                                         min(exact_points, len(x_eval)))
    lines = [line for line in lines if line.kind != "exact"]
    cw = next(a.label for a in attacks if a.kind == "cw")
    cw_out = shared[cw]
    fooled = correct_fraction(model, cw_out.x_adv.cpu(), y_eval, passes=passes, seed=seed,
                              device=dev) < 1
    l2 = cw_out.l2.cpu()[fooled & (clean > 0)]
    flags = _flags(model, x_eval, y_eval, lines, eps, exact, exact_points=exact_points)
    random, nondiff = is_stochastic(model), bool(non_differentiable_layers(model))
    settings = {"holdout": holdout, "seed": seed, "pgd_steps": pgd_steps, "restarts": restarts,
                "eot_samples": eot_samples if random else 1, "bpda": nondiff,
                "cw_steps": cw_steps, "transfer": transfer,
                "substitute_rounds": substitute_rounds, "exact_points": exact_points,
                "exact_time_limit": exact_time_limit, "passes": passes,
                "random_at_test_time": random, "non_differentiable_input": nondiff}
    return AuditResult(dict(getattr(model, "config", {"name": type(model).__name__})),
                       len(x_eval), list(eps), clean.mean().item(), lines, worst, flags,
                       exact, exact_note, settings, time.perf_counter() - start, str(dev),
                       l2.mean().item() if len(l2) else None)


def _padded(out: AttackResult, x: torch.Tensor, n: int) -> AttackResult:
    """``out`` (on the first ``n`` of ``x``) extended to all of ``x``: the other points are
    not attacked (``x_adv = x``, no success, status ``unknown``)."""
    rest = len(x) - n
    device = out.x_adv.device

    def pad(t: torch.Tensor | None, fill) -> torch.Tensor | None:
        if t is None:
            return None
        return torch.cat([t, torch.full((rest, *t.shape[1:]), fill, dtype=t.dtype,
                                        device=t.device)])

    return AttackResult(
        x_adv=torch.cat([out.x_adv, x[n:].to(device)]), success=pad(out.success, False),
        l0=pad(out.l0, 0), l2=pad(out.l2, 0.0), linf=pad(out.linf, 0.0), seconds=out.seconds,
        settings=out.settings, status=None if out.status is None else
        (*out.status, *(["unknown"] * rest)), point_seconds=pad(out.point_seconds, 0.0),
        extra=out.extra)


def _exact_counts(result: AttackResult, gradient_robust: torch.Tensor,
                  n: int) -> dict[str, int]:
    """Robust / attacked / unknown among the first ``n`` points, and how many of the attacked
    ones every other attack had missed."""
    status = list(result.status[:n])
    found = sum(s == "attacked" and bool(gradient_robust[i] > 0) for i, s in enumerate(status))
    return {"robust": status.count("robust"), "attacked": status.count("attacked"),
            "unknown": status.count("unknown"), "found_by_exact_only": found}


def _flags(model, x, y, lines: list[AttackLine], eps: list[float], exact, *,
           exact_points: int) -> list[Flag]:
    by = {line.label: line for line in lines}
    fgsm, pgd = lines[0], lines[1]
    rows = [Row("fgsm", e, fgsm.accuracy[e], 0.0, None, len(x), 0.0, {}) for e in eps] + \
        [Row("pgd", e, pgd.accuracy[e], 0.0, None, len(x), 0.0, {}) for e in eps]
    flags = diagnose(model, x, y, rows=rows, eps=max(eps), eot_samples=1, bpda=False)
    standard = {e: min(fgsm.accuracy[e], pgd.accuracy[e]) for e in eps}
    adaptive = [line for line in lines if line.kind == "adaptive"]
    if adaptive:
        flags.append(adaptive_vs_standard(
            {e: standard[e] for e in eps},
            {e: min(line.accuracy[e] for line in adaptive) for e in eps}))
    transfer = by.get(TRANSFER)
    if transfer is not None:
        e = max(eps)
        flags.append(transfer_vs_white_box(white_box_accuracy=standard[e],
                                           transfer_accuracy=transfer.accuracy[e], eps=e))
    if exact is not None:
        flags.append(exact_vs_gradient({e: exact[e]["found_by_exact_only"] for e in eps},
                                       points=min(exact_points, len(x))))
    return [f for f in flags if f is not None]


def check_options(eps: Sequence[float], *, points: int, holdout: int, available: int,
                  **counts: Any) -> list[float]:
    """Validate every audit option before any work; the sorted budgets."""
    values = sorted({float(e) for e in eps})
    if not values or any(not 0 < e <= 1 for e in values):
        raise AttackError(f"eps must be one or more budgets in (0, 1], got {list(eps)}.")
    if not isinstance(points, int) or points < 1:
        raise AttackError(f"points must be an integer >= 1, got {points!r}.")
    for name in ("pgd_steps", "restarts", "eot_samples", "cw_steps", "substitute_rounds",
                 "passes", "batch_size"):
        check_steps(name, counts[name])
    if not isinstance(counts["exact_points"], int) or counts["exact_points"] < 0:
        raise AttackError(f"exact_points must be an integer >= 0, got "
                          f"{counts['exact_points']!r}.")
    check_positive("exact_time_limit", counts["exact_time_limit"])
    if not isinstance(holdout, int) or holdout < 1 or holdout + 1 > available:
        raise AttackError(f"holdout must leave test inputs to audit: {holdout} of {available}.")
    return values
