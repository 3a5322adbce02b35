"""The robustness audit of one model: AutoAttack's standard ensemble, our adaptive attacks, the
transfer attack, CW-L2 and the exact attack where the model allows it, the per-point worst case
over all of them at every ε, AutoAttack's own robust accuracy beside it, and the
gradient-masking flags (``bnnrobust audit``).

The suites (``suite=``), at every ε (L∞, inputs in [0, 1]):

- ``"autoattack"``: AutoAttack's standard version (Croce & Hein 2020; :mod:`.autoattack`):
  APGD-CE, APGD-T, FAB-T (``aa_steps`` steps) and Square (``aa_queries`` queries); its
  gradient attacks with EOT over ``eot_samples`` passes when the model is random at test time
  and BPDA when it has a non-differentiable input layer;
- ``"bnnrobust"``: FGSM; PGD with ``pgd_steps`` steps of 2.5·ε/steps (Madry et al.) and
  ``restarts`` random restarts, on the cross-entropy; the adaptive attacks (Athalye et al.
  2018): PGD on the logit margin (Carlini & Wagner's loss; defeats a saturated softmax), with
  EOT and BPDA where they apply, and then PGD and FGSM on the cross-entropy with them; the
  transfer attack (Papernot et al.'s substitute, an MLP trained on ``holdout`` test inputs
  labelled by the model, FGSM crafted on it); CW-L2 (Galloway's settings, untargeted; it
  counts where its example lies within ε); the exact attack (fully connected BNNs and
  Galloway's B model, OR-Tools): certification on the first ``exact_points`` points,
  ``exact_time_limit`` seconds per point;
- ``"both"`` (default): AutoAttack's ensemble first (so its own robust accuracy is measured
  exactly as AutoAttack reports it), then ours.

The worst case runs as a cascade (AutoAttack's): each attack only on the points every earlier
one failed on, so robust accuracy costs what the strongest attacks need, and the budgets are
taken smallest first, a point broken at ε counting as broken at every larger ε (its
adversarial input lies in the larger ball too). Each attack's line then reads the robust
accuracy after it and every earlier one, and how many points it alone broke.
``per_attack=True`` runs every attack on every point instead, and the lines also read each
attack's accuracy alone (the cost of the suite's every attack on every point).

A point is robust at ε when the model classifies it correctly and every attack fails on it;
the exact attack's "attacked" points count as broken. For a model with randomness at
inference a point's robustness is the fraction of ``passes`` seeded passes that classify it
correctly. The evaluation set is the ``points`` test inputs after the substitute's
``holdout`` seed set. Defaults: ε = 0.1, 0.2, 0.3 on 28×28 data (Galloway et al.) and 2/255,
4/255, 8/255 otherwise (CIFAR); 500 points; PGD 40 steps × 5 restarts; EOT 10 passes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks import AttackResult, non_differentiable_layers
from bnnrobust.attacks.base import (
    AttackError,
    check_choice,
    check_positive,
    check_steps,
    model_device,
)
from bnnrobust.attacks.catalogue import entry
from bnnrobust.evaluate.autoattack import autoattack_suite
from bnnrobust.evaluate.diagnostics import Flag, diagnose, exact_vs_gradient
from bnnrobust.evaluate.robustness import Row, WorstCase, run_batched, worst_case
from bnnrobust.nn import is_stochastic
from bnnrobust.progress import Tracker, tracked
from bnnrobust.train import correct_fraction, eval_mode

MNIST_EPS = (0.1, 0.2, 0.3)
CIFAR_EPS = (2 / 255, 4 / 255, 8 / 255)
TRANSFER = "transfer (substitute, FGSM)"
SUITES = ("both", "autoattack", "bnnrobust")
#: AutoAttack's tolerance for Square lowering the robust accuracy (fra31's checks: 0.2 %)
SQUARE_ALPHA = 0.002


def default_eps(input_shape: Sequence[int]) -> tuple[float, ...]:
    """The papers' budgets: Galloway's for 28×28 inputs, 2-8/255 for larger images."""
    return MNIST_EPS if tuple(input_shape)[-2:] == (28, 28) else CIFAR_EPS


@dataclass
class AttackLine:
    """One attack of the suite, per ε: ``after``, the robust accuracy after it and every earlier
    attack; ``broken``, the points it broke that every earlier attack had missed; ``accuracy``,
    the accuracy under it alone (``per_attack`` audits only, else ``None``); ``seconds``, its
    time; ``points``, how many points it ran on."""

    label: str
    kind: str  # "autoattack", "score", "standard", "adaptive", "transfer", "cw", "exact"
    after: dict[float, float] = field(default_factory=dict)
    broken: dict[float, int] = field(default_factory=dict)
    accuracy: dict[float, float | None] = field(default_factory=dict)
    seconds: dict[float, float] = field(default_factory=dict)
    points: dict[float, int] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain data (ε keys as strings)."""
        def keyed(d: dict) -> dict[str, Any]:
            return {str(e): v for e, v in d.items()}

        return {"label": self.label, "kind": self.kind, "note": self.note,
                "after": keyed(self.after), "broken": keyed(self.broken),
                "accuracy": keyed(self.accuracy), "seconds": keyed(self.seconds),
                "points": keyed(self.points)}


@dataclass
class AuditResult:
    """What :func:`audit` measured; ``worst``: per-ε worst-case robust accuracy;
    ``autoattack``: per-ε robust accuracy under AutoAttack's ensemble alone (None without it);
    ``cases``: per ε, the cascade's :class:`~bnnrobust.evaluate.robustness.WorstCase` (every
    attack's per-point result, for the records)."""

    model: dict[str, Any]
    points: int
    eps: list[float]
    clean_accuracy: float
    lines: list[AttackLine]
    worst: dict[float, float]
    autoattack: dict[float, float] | None
    flags: list[Flag]
    exact: dict[float, dict[str, int]] | None
    exact_note: str
    settings: dict[str, Any]
    seconds: float
    device: str
    cw_mean_l2: float | None = None
    cases: dict[float, WorstCase] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON); ε keys as strings."""
        return {"model": self.model, "points": self.points, "eps": self.eps,
                "clean_accuracy": self.clean_accuracy,
                "lines": [a.as_dict() for a in self.lines],
                "worst": {str(e): v for e, v in self.worst.items()},
                "autoattack": None if self.autoattack is None else
                {str(e): v for e, v in self.autoattack.items()},
                "flags": [f.as_dict() for f in self.flags],
                "exact": None if self.exact is None else {str(e): v for e, v in self.exact.items()},
                "exact_note": self.exact_note, "settings": self.settings,
                "seconds": self.seconds, "device": self.device, "cw_mean_l2": self.cw_mean_l2}


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of the audit's suite: a catalogue entry and its parameters at each ε.

    ``shared``: in a per-attack audit, run once (at the largest ε's parameters) and counted at
    every ε where its example lies within ε in L∞ (CW-L2). ``points``: attack only the first N
    points (the exact attack).
    """

    label: str
    kind: str
    attack: str
    params: Callable[[float], dict[str, Any]]
    note: str = ""
    shared: bool = False
    points: int | None = None


def suite(model: nn.Module, *, which: str = "both", seed: int = 0, pgd_steps: int = 40,
          restarts: int = 5, eot_samples: int = 10, cw_steps: int = 100,
          transfer: bool = True, substitute_rounds: int = 6, holdout: int = 150,
          exact_points: int = 10, exact_time_limit: float = 10.0, aa_steps: int = 100,
          aa_queries: int = 5000, num_classes: int = 10) -> tuple[list[SuiteAttack], str]:
    """The attacks :func:`audit` runs on ``model``, in cascade order (see the module doc), and
    a note on the exact attack (why it is skipped, or how it runs)."""
    check_choice("suite", which, SUITES)
    random, nondiff = is_stochastic(model), bool(non_differentiable_layers(model))
    adaptive = {"eot_samples": eot_samples if random else 1, "bpda": nondiff}
    suffix = "".join([f" EOT-{eot_samples}" if random else "", " BPDA" if nondiff else ""])
    attacks: list[SuiteAttack] = []
    if which in ("both", "autoattack"):
        attacks += _autoattack_part(model, seed=seed, adaptive=adaptive, suffix=suffix,
                                    steps=aa_steps, queries=aa_queries,
                                    num_classes=num_classes)
    if which == "autoattack":
        return attacks, "exact attack not in the autoattack suite."

    def pgd(**options: Any) -> Callable[[float], dict[str, Any]]:
        return lambda e: {"eps": e, "alpha": 2.5 * e / pgd_steps, "steps": pgd_steps,
                          "restarts": restarts, "seed": seed, **options}

    def fgsm(**options: Any) -> Callable[[float], dict[str, Any]]:
        return lambda e: {"eps": e, "seed": seed, **options}

    pgd_label = f"PGD-{pgd_steps} ×{restarts}"
    attacks += [SuiteAttack("FGSM", "standard", "fgsm", fgsm()),
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


def _autoattack_part(model: nn.Module, *, seed: int, adaptive: dict[str, Any], suffix: str,
                     steps: int, queries: int, num_classes: int) -> list[SuiteAttack]:
    """AutoAttack's standard ensemble as suite attacks (labels as AutoAttack prints them)."""
    made = autoattack_suite(model, eps=0.1, seed=seed, steps=steps, queries=queries,
                            num_classes=num_classes, **adaptive)
    attacks = []
    for label, atk in made.items():
        values = {name: getattr(atk.params, name) for name in atk.params.names()}
        kind = "score" if entry(atk.name).kind == "score" else "autoattack"
        attacks.append(SuiteAttack(
            label + ("" if kind == "score" else suffix), kind, atk.name,
            lambda e, values=values: {**values, "eps": e},
            note=f"AutoAttack standard ({steps} steps, Square {queries} queries)"))
    return attacks


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
          points: int = 500, holdout: int = 150, seed: int = 0, suite_name: str = "both",
          per_attack: bool = False, pgd_steps: int = 40, restarts: int = 5,
          eot_samples: int = 10, cw_steps: int = 100, transfer: bool = True,
          substitute_rounds: int = 6, exact_points: int = 10, exact_time_limit: float = 10.0,
          aa_steps: int = 100, aa_queries: int = 5000, passes: int = 5,
          batch_size: int = 256, progress: bool = True) -> AuditResult:
    """Audit ``model`` on test inputs ``(x, y)`` (see the module docstring); with ``progress``,
    a bar on a terminal and a line per attack and ε (:mod:`bnnrobust.progress`)."""
    start = time.perf_counter()
    if not torch.isfinite(x).all():
        raise AttackError("the audited inputs hold NaN or infinite values; inputs must be "
                          "finite, in [0, 1].")
    eps = check_options(eps, points=points, holdout=holdout, available=len(x),
                        pgd_steps=pgd_steps, restarts=restarts, eot_samples=eot_samples,
                        cw_steps=cw_steps, substitute_rounds=substitute_rounds,
                        exact_points=exact_points, exact_time_limit=exact_time_limit,
                        passes=passes, batch_size=batch_size, aa_steps=aa_steps,
                        aa_queries=aa_queries)
    dev = model_device(model)
    x_seed = x[:holdout]
    x_eval, y_eval = x[holdout:holdout + points], y[holdout:holdout + points]
    attacks, exact_note = suite(model, which=suite_name, seed=seed, pgd_steps=pgd_steps,
                                restarts=restarts, eot_samples=eot_samples, cw_steps=cw_steps,
                                transfer=transfer, substitute_rounds=substitute_rounds,
                                holdout=holdout, exact_points=exact_points,
                                exact_time_limit=exact_time_limit, aa_steps=aa_steps,
                                aa_queries=aa_queries,
                                num_classes=_classes(model, x_eval[:1]))
    lines = {a.label: AttackLine(a.label, a.kind, note=a.note) for a in attacks}
    limits = {a.label: a.points for a in attacks if a.points is not None}
    shared: dict[str, AttackResult] = {}
    substitute = None
    cases: dict[float, WorstCase] = {}
    robust = None
    with tracked("audit", len(eps) * len(attacks), enabled=progress) as tracker:
        for e in eps:
            items: dict[str, Any] = {}
            for a in attacks:
                if a.attack == "substitute":
                    atk = entry("substitute").make(model, a.params(e)) if substitute is None \
                        else substitute.fitted(eps=e)
                    if substitute is None:
                        atk.fit(x_seed)
                        substitute = atk
                    items[a.label] = atk
                elif a.shared and per_attack:
                    if a.label not in shared:
                        shared[a.label] = _run_all(model, a, max(eps), x_eval, y_eval,
                                                   batch_size)
                    items[a.label] = shared[a.label]
                else:
                    items[a.label] = entry(a.attack).make(model, a.params(e))
            case = worst_case(model, x_eval, y_eval, items, budget=e, passes=passes, seed=seed,
                              batch_size=batch_size, cascade=not per_attack, start=robust,
                              limits=limits, on_attack=functools.partial(
                                  _progress, tracker, e))
            _record(lines, case, e, start=robust, per_attack=per_attack)
            robust, cases[e] = case.robust, case
    return _result(model, x_eval, y_eval, eps, attacks, lines, cases, exact_note,
                   per_attack=per_attack, exact_points=exact_points, passes=passes, seed=seed,
                   settings={"suite": suite_name, "per_attack": per_attack,
                             "eot_samples": eot_samples,
                             "holdout": holdout, "seed": seed, "pgd_steps": pgd_steps,
                             "restarts": restarts, "cw_steps": cw_steps, "transfer": transfer,
                             "substitute_rounds": substitute_rounds,
                             "exact_points": exact_points, "exact_time_limit": exact_time_limit,
                             "aa_steps": aa_steps, "aa_queries": aa_queries, "passes": passes},
                   start=start, device=str(dev))


def _classes(model: nn.Module, x: torch.Tensor) -> int:
    """How many classes ``model`` scores (its output's width on one input)."""
    with torch.no_grad(), eval_mode(model):
        return int(model(x.to(model_device(model))).shape[1])


def _run_all(model: nn.Module, a: SuiteAttack, e: float, x: torch.Tensor, y: torch.Tensor,
             batch_size: int) -> AttackResult:
    """``a`` at budget ``e`` on every point (a shared attack of a per-attack audit)."""
    return run_batched(entry(a.attack).make(model, a.params(e)), x, y, batch_size=batch_size)


def _progress(tracker: Tracker, e: float, label: str, so_far: WorstCase) -> None:
    """One progress line: an attack finished at budget ``e``."""
    out = so_far.results.get(label)
    tracker.advance(f"ε={e:g} {label}: {len(so_far.attacked[label])} points, robust accuracy "
                    f"after it {100 * so_far.after[label].mean().item():.1f} %, "
                    f"{0.0 if out is None else out.seconds:.1f} s")


def _record(lines: dict[str, AttackLine], case: WorstCase, e: float, *,
            start: torch.Tensor | None, per_attack: bool) -> None:
    """Fill each line's figures at ``e`` from the cascade's ``case`` (``start``: the
    robustness carried from the smaller budgets)."""
    before = case.clean if start is None else torch.minimum(case.clean, start)
    for label, line in lines.items():
        after = case.after[label]
        line.after[e] = after.mean().item()
        line.broken[e] = int((after < before).sum())
        line.accuracy[e] = case.per_attack[label].mean().item() if per_attack else None
        result = case.results.get(label)
        line.seconds[e] = 0.0 if result is None else result.seconds
        line.points[e] = len(case.attacked[label])
        before = after


def _result(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float],
            attacks: list[SuiteAttack], lines: dict[str, AttackLine],
            cases: dict[float, WorstCase], exact_note: str, *, per_attack: bool,
            exact_points: int, passes: int, seed: int, settings: dict[str, Any], start: float,
            device: str) -> AuditResult:
    """The audit's result: worst case, AutoAttack's accuracy, exact counts, flags."""
    clean = cases[eps[0]].clean
    worst = {e: cases[e].accuracy for e in eps}
    aa = [a.label for a in attacks if a.kind in ("autoattack", "score")]
    autoattack = {e: lines[aa[-1]].after[e] for e in eps} if aa else None
    exact_line = next((a for a in attacks if a.kind == "exact"), None)
    exact = None
    if exact_line is not None:
        n = min(exact_points, len(x))
        exact = {e: _exact_counts(cases[e], exact_line.label, n) for e in eps}
    cw_mean_l2 = None
    cw = next((a.label for a in attacks if a.kind == "cw"), None)
    if cw is not None and per_attack:
        out = cases[eps[-1]].results[cw]
        fooled = correct_fraction(model, out.x_adv.cpu(), y, passes=passes, seed=seed,
                                  device=model_device(model)) < 1
        l2 = out.l2.cpu()[fooled & (clean > 0)]
        cw_mean_l2 = l2.mean().item() if len(l2) else None
    shown = [line for a, line in zip(attacks, lines.values(), strict=True) if a.kind != "exact"]
    flags = _flags(model, x, y, attacks, lines, eps, exact, per_attack=per_attack,
                   exact_points=exact_points)
    random, nondiff = is_stochastic(model), bool(non_differentiable_layers(model))
    settings = {**settings, "eot_samples": settings["eot_samples"] if random else 1,
                "random_at_test_time": random, "non_differentiable_input": nondiff,
                "bpda": nondiff}
    return AuditResult(dict(getattr(model, "config", {"name": type(model).__name__})),
                       len(x), list(eps), clean.mean().item(), shown, worst, autoattack,
                       flags, exact, exact_note, settings, time.perf_counter() - start, device,
                       cw_mean_l2, cases)


def _exact_counts(case: WorstCase, label: str, n: int) -> dict[str, int]:
    """Robust / attacked / unknown among the first ``n`` points, those the cascade left to the
    exact attack ("skipped": broken earlier), and how many of the attacked ones every other
    attack had missed."""
    where = case.attacked[label].tolist()
    result = case.results.get(label)
    status = {i: result.status[k] for k, i in enumerate(where)} if result is not None else {}
    counts = {s: sum(v == s for v in status.values()) for s in ("robust", "attacked", "unknown")}
    order = list(case.after)
    position = order.index(label)
    alive = case.after[order[position - 1]] if position > 0 else case.clean
    counts["found_by_exact_only"] = sum(v == "attacked" and bool(alive[i] > 0)
                                        for i, v in status.items())
    counts["skipped"] = n - len(where)
    return counts


def _drop(lines: dict[str, AttackLine], labels: list[str], eps: list[float]
          ) -> dict[float, int]:
    """Per ε, the points the attacks ``labels`` broke that every attack before them missed."""
    return {e: sum(lines[label].broken[e] for label in labels) for e in eps}


def _flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list[SuiteAttack],
           lines: dict[str, AttackLine], eps: list[float], exact, *, per_attack: bool,
           exact_points: int) -> list[Flag]:
    """The generic checks (:func:`~bnnrobust.evaluate.diagnostics.diagnose`), and the
    cascade's: an adaptive, transfer, score-based or exact attack that broke points every
    attack before it missed."""
    n = len(x)
    by_kind = {k: [a.label for a in attacks if a.kind == k]
               for k in ("standard", "adaptive", "transfer", "score")}
    rows = []
    if per_attack and by_kind["standard"]:
        fgsm, pgd = (lines[label] for label in by_kind["standard"])
        rows = [Row("fgsm", e, fgsm.accuracy[e], 0.0, None, n, 0.0, {}) for e in eps] + \
            [Row("pgd", e, pgd.accuracy[e], 0.0, None, n, 0.0, {}) for e in eps]
    flags = diagnose(model, x, y, rows=rows, eps=max(eps), eot_samples=1, bpda=False)

    def evidence(drop: dict[float, int], what: str) -> str:
        return "; ".join(f"ε={e:g}: {k} of {n} points ({100 * k / n:.1f} %)"
                         for e, k in drop.items()) + f" broken by {what} that every attack " \
            "before it missed"

    checks = [("adaptive", "adaptive_stronger_than_standard", 0.05, "the adaptive attacks"),
              ("transfer", "transfer_stronger_than_white_box", 0.01, "the transfer attack"),
              ("score", "score_attack_stronger_than_white_box", SQUARE_ALPHA,
               "Square (scores only, no gradients)")]
    for kind, name, tolerance, what in checks:
        if by_kind[kind]:
            drop = _drop(lines, by_kind[kind], eps)
            flags.append(Flag(name, any(k / n > tolerance for k in drop.values()),
                              evidence(drop, what)))
    if exact is not None:
        flags.append(exact_vs_gradient({e: exact[e]["found_by_exact_only"] for e in eps},
                                       points=min(exact_points, n)))
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
                 "passes", "batch_size", "aa_steps", "aa_queries"):
        check_steps(name, counts[name])
    if not isinstance(counts["exact_points"], int) or counts["exact_points"] < 0:
        raise AttackError(f"exact_points must be an integer >= 0, got "
                          f"{counts['exact_points']!r}.")
    check_positive("exact_time_limit", counts["exact_time_limit"])
    if not isinstance(holdout, int) or holdout < 1 or holdout + 1 > available:
        raise AttackError(f"holdout must leave test inputs to audit: {holdout} of {available}.")
    return values
