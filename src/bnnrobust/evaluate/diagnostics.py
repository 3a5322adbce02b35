"""Gradient-masking diagnostics: named flags, each with one sentence of explanation.

After Athalye et al. 2018 ("Obfuscated gradients give a false sense of security") and the
checks AutoAttack reports. A raised flag means the robustness numbers of that evaluation should
not be trusted until the matching adaptive attack (PGD on logits, EOT, BPDA, a black-box or
exact attack) has been run.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bnnrobust.attacks import PGD, non_differentiable_layers
from bnnrobust.attacks.gradient import bpda_mode, frozen, input_grad
from bnnrobust.evaluate.robustness import Row, accuracy_under_attack
from bnnrobust.nn import is_stochastic
from bnnrobust.train import eval_mode

EXPLANATIONS = {
    "iterative_weaker_than_single_step":
        "An iterative attack did worse than a single-step attack at the same ε, which only "
        "happens when the gradients the iterative attack follows are misleading (masking).",
    "no_collapse_at_large_eps":
        "Accuracy did not fall to about 0 when ε grew to 1 (where any image can be turned into "
        "any other), so the attack is failing, not the model succeeding.",
    "zero_or_nonfinite_gradients":
        "Many inputs have zero or non-finite input gradients, so gradient attacks receive no "
        "signal; use BPDA, a surrogate, or a gradient-free or exact attack.",
    "random_outputs_without_eot":
        "The model's outputs change between forward passes but the attack used a single pass "
        "per gradient; use EOT (eot_samples > 1).",
    "non_differentiable_input_without_bpda":
        "The model has a non-differentiable input layer (e.g. input quantization) and the "
        "attack did not use BPDA, so its gradients are zero through that layer.",
    "saturated_softmax":
        "Most logits are so large that the softmax saturates in float32 and the cross-entropy "
        "gradient vanishes (Galloway et al.'s explanation for model B); attack the logits "
        "directly (CW margin loss) or rescale them.",
    "adaptive_stronger_than_standard":
        "An adaptive attack (PGD on the logit margin, EOT, BPDA) brought accuracy well below the "
        "standard FGSM and PGD at the same ε: the standard attacks overstate robustness, "
        "report the adaptive numbers.",
    "exact_finds_what_gradients_miss":
        "The exact attack found adversarial examples for points on which every gradient "
        "attack failed: the gradient attacks understate this model's vulnerability.",
    "score_attack_stronger_than_white_box":
        "Square, which uses only the model's scores and no gradient, broke points every "
        "white-box gradient attack before it missed (AutoAttack's check): the gradients are "
        "misleading, trust the black-box and adaptive numbers.",
    "transfer_stronger_than_white_box":
        "A black-box transfer attack beat the white-box attack at the same ε, a classic sign "
        "that the white-box gradients are masked.",
}


@dataclass(frozen=True)
class Flag:
    """One diagnostic: its name, whether it is raised, why it matters, what was measured."""

    name: str
    raised: bool
    evidence: str

    @property
    def explanation(self) -> str:
        """One sentence on what the flag means."""
        return EXPLANATIONS[self.name]

    def as_dict(self) -> dict:
        """Plain data (for JSON)."""
        return {**asdict(self), "explanation": self.explanation}


def iterative_vs_single_step(rows: Sequence[Row], *, tolerance: float = 0.01) -> Flag | None:
    """Compare single-step (fgsm, rfgsm) and iterative (bim, pgd) rows at equal ε."""
    single = {r.eps: r.accuracy for r in rows if r.attack in ("fgsm", "rfgsm")}
    iterative = {r.eps: r.accuracy for r in rows if r.attack in ("bim", "pgd")}
    common = sorted(set(single) & set(iterative))
    if not common:
        return None
    worse = [e for e in common if iterative[e] > single[e] + tolerance]
    evidence = "; ".join(f"ε={e}: single-step {single[e]:.1%}, iterative {iterative[e]:.1%}"
                         for e in common)
    return Flag("iterative_weaker_than_single_step", bool(worse), evidence)


def input_gradient_health(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                          bpda: bool = False, threshold: float = 0.1) -> Flag:
    """Fraction of inputs whose cross-entropy input gradient is all zero or non-finite."""
    with eval_mode(model), frozen(model), (bpda_mode(model) if bpda else nullcontext()):
        xg = x.detach().clone().requires_grad_(True)
        grad = input_grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    flat = grad.flatten(1)
    bad = (flat.abs().sum(1) == 0) | ~torch.isfinite(flat).all(1)
    frac = bad.float().mean().item()
    return Flag("zero_or_nonfinite_gradients", frac > threshold,
                f"{frac:.1%} of {len(x)} inputs have a zero or non-finite gradient")


def randomness(model: nn.Module, x: torch.Tensor, *, eot_samples: int) -> Flag:
    """Whether two forward passes differ while the attack used one pass per gradient."""
    with torch.no_grad(), eval_mode(model):
        differs = not torch.equal(model(x), model(x))
    raised = differs and eot_samples <= 1
    return Flag("random_outputs_without_eot", raised,
                f"outputs {'differ' if differs else 'agree'} between passes "
                f"(stochastic layers: {is_stochastic(model)}); eot_samples={eot_samples}")


def bpda_needed(model: nn.Module, *, bpda: bool) -> Flag:
    """Whether a non-differentiable input layer was attacked without BPDA."""
    layers = non_differentiable_layers(model)
    names = ", ".join(type(m).__name__ for m in layers) or "none"
    return Flag("non_differentiable_input_without_bpda", bool(layers) and not bpda,
                f"non-differentiable layers: {names}; bpda={bpda}")


def softmax_saturation(model: nn.Module, x: torch.Tensor, *, threshold: float = 0.5) -> Flag:
    """Fraction of inputs whose top softmax probability is exactly 1.0 in float32."""
    with torch.no_grad(), eval_mode(model):
        logits = model(x).float()
    top = logits.softmax(1).amax(1)
    frac = (top == 1.0).float().mean().item()
    margin = logits.topk(2, 1).values
    median_gap = (margin[:, 0] - margin[:, 1]).median().item()
    return Flag("saturated_softmax", frac > threshold,
                f"{frac:.1%} of inputs have softmax exactly 1.0 in float32; median top-2 logit "
                f"gap {median_gap:.1f}")


def large_eps_collapse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                       eot_samples: int = 1, bpda: bool = False, steps: int = 20,
                       threshold: float = 0.1) -> Flag:
    """PGD at ε = 1 must drive accuracy to about 0."""
    row = accuracy_under_attack(model, x, y, attack=PGD, eps=[1.0], steps=steps, alpha=0.1,
                                eot_samples=eot_samples, bpda=bpda, passes=1)[0]
    return Flag("no_collapse_at_large_eps", row.accuracy > threshold,
                f"PGD-{steps} at ε=1: accuracy {row.accuracy:.1%}")


def transfer_vs_white_box(*, white_box_accuracy: float, transfer_accuracy: float, eps: float,
                          tolerance: float = 0.01) -> Flag:
    """Flag a black-box transfer attack that beats the white-box attack at the same ε."""
    raised = transfer_accuracy + tolerance < white_box_accuracy
    return Flag("transfer_stronger_than_white_box", raised,
                f"ε={eps}: white-box accuracy {white_box_accuracy:.1%}, transfer accuracy "
                f"{transfer_accuracy:.1%}")


def adaptive_vs_standard(standard: dict[float, float], adaptive: dict[float, float], *,
                         points: float = 0.05) -> Flag:
    """Flag an adaptive attack more than ``points`` (accuracy fraction) below the best
    standard attack at some ε; both map ε to accuracy."""
    worse = [e for e in standard if standard[e] - adaptive[e] > points]
    evidence = "; ".join(f"ε={e:g}: standard {standard[e]:.1%}, adaptive {adaptive[e]:.1%}"
                         for e in standard)
    return Flag("adaptive_stronger_than_standard", bool(worse), evidence)


def exact_vs_gradient(found: dict[float, int], *, points: int) -> Flag:
    """Flag points the exact attack broke although every gradient attack failed on them
    (``found``: ε -> how many, out of ``points``)."""
    evidence = "; ".join(f"ε={e:g}: {n} of {points}" for e, n in found.items())
    return Flag("exact_finds_what_gradients_miss", any(found.values()),
                f"points broken by the exact attack only: {evidence}")


def diagnose(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             rows: Sequence[Row] = (), eps: float = 0.3, eot_samples: int = 1,
             bpda: bool = False, sample: int = 256) -> list[Flag]:
    """Run every check on up to ``sample`` inputs; ``rows`` may already hold FGSM and PGD rows.

    When ``rows`` lack a single-step/iterative pair, FGSM and PGD-40 at ``eps`` are run.
    """
    xs, ys = x[:sample], y[:sample]
    options = {"eot_samples": eot_samples, "bpda": bpda, "passes": 1}
    pair = iterative_vs_single_step(rows)
    if pair is None:
        own = (accuracy_under_attack(model, xs, ys, attack="fgsm", eps=[eps], **options)
               + accuracy_under_attack(model, xs, ys, attack="pgd", eps=[eps], **options))
        pair = iterative_vs_single_step(own)
    return [
        pair,
        large_eps_collapse(model, xs, ys, eot_samples=eot_samples, bpda=bpda),
        input_gradient_health(model, xs, ys, bpda=bpda),
        randomness(model, xs, eot_samples=eot_samples),
        bpda_needed(model, bpda=bpda),
        softmax_saturation(model, xs),
    ]
