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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from bnnrobust.attacks import CWL2, FGSM, PGD, non_differentiable_layers
from bnnrobust.attacks.base import AttackError, model_device
from bnnrobust.attacks.blackbox import Oracle, train_substitute
from bnnrobust.evaluate.diagnostics import (
    Flag,
    adaptive_vs_standard,
    diagnose,
    exact_vs_gradient,
    transfer_vs_white_box,
)
from bnnrobust.evaluate.robustness import Row, run_batched
from bnnrobust.models import build
from bnnrobust.nn import is_stochastic, seed_stochastic
from bnnrobust.train import predict_logits

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


def predictions(model: nn.Module, x: torch.Tensor, *, passes: int, seed: int = 0) -> torch.Tensor:
    """Predicted labels (CPU); a random model's are the argmax of its mean logits over
    ``passes`` seeded passes."""
    if not is_stochastic(model):
        return predict_logits(model, x, device=model_device(model)).argmax(1)
    total = None
    for i in range(passes):
        seed_stochastic(model, seed + i)
        logits = predict_logits(model, x, device=model_device(model))
        total = logits if total is None else total + logits
    seed_stochastic(model, None)
    return total.argmax(1)


def audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
          points: int = 500, holdout: int = 150, seed: int = 0, pgd_steps: int = 40,
          restarts: int = 5, eot_samples: int = 10, cw_steps: int = 100,
          transfer: bool = True, substitute_rounds: int = 6, exact_points: int = 10,
          exact_time_limit: float = 10.0, passes: int = 5, batch_size: int = 256,
          progress: bool = True) -> AuditResult:
    """Audit ``model`` on test inputs ``(x, y)`` (see the module docstring)."""
    start = time.perf_counter()
    eps = _check(eps, points, holdout, len(x))
    dev = model_device(model)
    x_seed = x[:holdout]
    x_eval, y_eval = x[holdout:holdout + points], y[holdout:holdout + points]
    random, nondiff = is_stochastic(model), bool(non_differentiable_layers(model))
    adaptive = {"eot_samples": eot_samples if random else 1, "bpda": nondiff}
    pred = predictions(model, x_eval, passes=passes, seed=seed)
    clean_ok = pred == y_eval
    robust = {e: clean_ok.clone() for e in eps}
    lines: list[AttackLine] = []

    def accuracy_of(x_adv: torch.Tensor) -> torch.Tensor:
        return predictions(model, x_adv, passes=passes, seed=seed) == y_eval

    with Progress(disable=not progress, transient=True) as bar:
        def run_line(label: str, kind: str, craft, note: str = "") -> None:
            """``craft(ε)``: the adversarial inputs (CPU) of the evaluation set."""
            line = AttackLine(label, kind, {}, note)
            task = bar.add_task(label, total=len(eps))
            for e in eps:
                ok = accuracy_of(craft(e))
                line.accuracy[e] = (clean_ok & ok).float().mean().item()
                robust[e] &= ok
                bar.advance(task)
            bar.remove_task(task)
            lines.append(line)

        def white_box(make):
            return lambda e: run_batched(make(e), x_eval, y_eval,
                                         batch_size=batch_size)["x_adv"].cpu()

        def pgd(e: float, **options: Any) -> PGD:
            return PGD(model, eps=e, alpha=2.5 * e / pgd_steps, steps=pgd_steps,
                       restarts=restarts, seed=seed, **options)

        run_line("FGSM", "standard", white_box(lambda e: FGSM(model, eps=e, seed=seed)))
        run_line(f"PGD-{pgd_steps} ×{restarts}", "standard", white_box(pgd))
        suffix = "".join([f" EOT-{eot_samples}" if random else "", " BPDA" if nondiff else ""])
        run_line(f"PGD-{pgd_steps} ×{restarts} logit margin{suffix}", "adaptive",
                 white_box(lambda e: pgd(e, loss="margin", **adaptive)))
        if random or nondiff:
            run_line(f"PGD-{pgd_steps} ×{restarts}{suffix}", "adaptive",
                     white_box(lambda e: pgd(e, **adaptive)))
            run_line(f"FGSM{suffix}", "adaptive",
                     white_box(lambda e: FGSM(model, eps=e, seed=seed, **adaptive)))
        if transfer:
            substitute = _substitute(model, x_seed, rounds=substitute_rounds, seed=seed,
                                     device=dev)
            sub_pred = predict_logits(substitute, x_eval, device=dev).argmax(1)
            run_line(TRANSFER, "transfer",
                     lambda e: _craft_on(FGSM(substitute, eps=e, seed=seed), x_eval, sub_pred,
                                         batch_size=batch_size),
                     note=f"Papernot substitute (MLP, {substitute_rounds} rounds, {holdout} "
                          "seed inputs labelled by the model; FGSM on the substitute's labels)")
        cw = CWL2.galloway(model, steps=cw_steps, seed=seed, **adaptive)
        out = run_batched(cw, x_eval, y_eval, batch_size=batch_size)
        fooled = ~accuracy_of(out["x_adv"].cpu())
        linf = (out["x_adv"].cpu() - x_eval).flatten(1).abs().amax(1)
        cw_line = AttackLine(f"CW-L2 ({cw_steps} steps), L∞ ≤ ε", "cw", {},
                             "successful CW-L2 examples whose L∞ distance is within ε")
        for e in eps:
            broken = fooled & (linf <= e + 1e-6)
            cw_line.accuracy[e] = (clean_ok & ~broken).float().mean().item()
            robust[e] &= ~broken
        lines.append(cw_line)
        l2 = out["l2"].cpu()[fooled & clean_ok]
        cw_mean_l2 = l2.mean().item() if len(l2) else None
    gradient_robust = {e: robust[e].clone() for e in eps}
    exact, exact_note = _exact(model, x_eval, y_eval, eps, robust, points=exact_points,
                               time_limit=exact_time_limit, progress=progress)
    worst = {e: robust[e].float().mean().item() for e in eps}
    flags = _flags(model, x_eval, y_eval, lines, eps, exact, gradient_robust, clean_ok,
                   exact_points=exact_points, passes=passes)
    settings = {"holdout": holdout, "seed": seed, "pgd_steps": pgd_steps, "restarts": restarts,
                "eot_samples": adaptive["eot_samples"], "bpda": nondiff, "cw_steps": cw_steps,
                "transfer": transfer, "substitute_rounds": substitute_rounds,
                "exact_points": exact_points, "exact_time_limit": exact_time_limit,
                "passes": passes, "random_at_test_time": random,
                "non_differentiable_input": nondiff}
    return AuditResult(dict(getattr(model, "config", {"name": type(model).__name__})),
                       len(x_eval), list(eps), clean_ok.float().mean().item(), lines, worst,
                       flags, exact, exact_note, settings, time.perf_counter() - start,
                       str(dev), cw_mean_l2)


def _craft_on(attack, x: torch.Tensor, labels: torch.Tensor, *, batch_size: int
              ) -> torch.Tensor:
    """``attack``'s adversarial inputs for ``x`` against ``labels``, in batches (CPU)."""
    return torch.cat([attack(x[i:i + batch_size], labels[i:i + batch_size]).cpu()
                      for i in range(0, len(x), batch_size)])


def _substitute(model: nn.Module, x_seed: torch.Tensor, *, rounds: int, seed: int,
                device) -> nn.Module:
    torch.manual_seed(seed)
    sub = build("mlp", in_features=int(torch.tensor(x_seed.shape[1:]).prod()),
                num_classes=int(getattr(model, "num_classes", 10))).to(device)
    oracle = Oracle(model, device=device)
    sub, _ = train_substitute(oracle, x_seed, sub, rounds=rounds, seed=seed, device=device,
                              progress=False)
    return sub.eval()


def _exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float],
           robust: dict[float, torch.Tensor], *, points: int, time_limit: float,
           progress: bool) -> tuple[dict[float, dict[str, int]] | None, str]:
    """Certify the first ``points`` inputs at each ε when the model is an exportable BNN."""
    if points == 0:
        return None, "exact attack skipped (--exact-points 0)."
    try:
        from bnnrobust.attacks.combinatorial import certify, export
    except ImportError as exc:
        return None, f"exact attack skipped: OR-Tools is not installed ({exc})."
    try:
        integer = export(model)
    except AttackError as exc:
        return None, f"exact attack not applicable: {exc}"
    pixels = (x[:points].flatten(1) * 255).round().numpy().astype("int64")
    out: dict[float, dict[str, int]] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("exact (CP-SAT)", total=len(eps) * len(pixels))
        for e in eps:
            counts = {"robust": 0, "attacked": 0, "unknown": 0, "found_by_exact_only": 0}
            for i, p in enumerate(pixels):
                cert = certify(integer, p, eps=e, time_limit=time_limit)
                counts[cert.status] += 1
                if cert.status == "attacked":
                    if robust[e][i]:
                        counts["found_by_exact_only"] += 1
                    robust[e][i] = False
                bar.advance(task)
            out[e] = counts
    return out, (f"CP-SAT on the first {len(pixels)} points, floor(255·ε) pixel steps, "
                 f"{time_limit:g} s per point")


def _flags(model, x, y, lines: list[AttackLine], eps: list[float], exact, gradient_robust,
           clean_ok, *, exact_points: int, passes: int) -> list[Flag]:
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


def _check(eps: Sequence[float], points: int, holdout: int, available: int) -> list[float]:
    values = sorted({float(e) for e in eps})
    if not values or any(not 0 < e <= 1 for e in values):
        raise AttackError(f"eps must be one or more budgets in (0, 1], got {list(eps)}.")
    if not isinstance(points, int) or points < 1:
        raise AttackError(f"points must be an integer >= 1, got {points!r}.")
    if not isinstance(holdout, int) or holdout < 1 or holdout + 1 > available:
        raise AttackError(f"holdout must leave test inputs to audit: {holdout} of {available}.")
    return values
