"""Adversarial training as a batch hook of :func:`bnnrobust.train.fit`.

From ``start_epoch`` on, each batch ``(x, y)`` becomes ``[(x, y), (x_adv, y_loss)]`` so the
loop minimizes ``(clean CE + adversarial CE) / 2`` (Goodfellow et al.; Kurakin et al. 2017;
Galloway et al. train clean for 10 epochs and adversarially for the last 5). The defaults follow
Galloway et al.'s code (AngusG/cleverhans-attacking-bnns, ``utils_tf.model_train`` and
``mnist_attack.py``):

- ``label="predicted"``: the example is crafted against the model's own prediction (CleverHans
  ``get_or_guess_labels``, "to avoid the label leaking effect"); ``"true"``: against the label.
- ``loss_label="true"``: the adversarial cross-entropy uses the true label, as the clean one
  does (``(model_loss(y, preds) + model_loss(y, preds_adv)) / 2``); ``"predicted"``: the
  label the example was crafted against (the other reading of the paper's text).
- ``crafting_bn="batch"``: batch norm normalizes with the batch's statistics while the example
  is crafted, as the code does (the adversarial graph is built in training mode).
  ``"running"``: the running statistics (inference mode).
- ``running_stats``: which forward passes move batch norm's running statistics (what the model
  uses at test time). ``"loss"`` (default): the two of the loss (clean and adversarial
  batch), as any PyTorch training does. ``"mnist-attack"``: every pass of the TF graph of
  Galloway et al.'s ``mnist_attack.py`` (its update ops run at each training step, in training
  mode): the crafting passes (CleverHans guesses the label with a pass of its own, FGSM then
  takes the gradient at the clean input, ``MadryEtAl`` guesses the label a second time and
  passes each of its iterates), and the passes of the evaluation attack the script builds beside
  the training one and whose examples training never uses (FGSM at ε, or ``MadryEtAl`` with its
  defaults: 40 steps of 0.01 from a random start; its label guesses and iterates, and the
  forward pass of its result). For ``pgd`` that attack's 43 passes are made in the last epoch
  only (``epochs`` is then required): with about 67 updates a step at momentum 0.001, the
  statistics from before that epoch weigh 0.999^(67·469) ≈ 2e-14 at the end of an MNIST
  epoch. For ``fgsm-random`` they are made in every adversarial epoch (7 updates a step).
  Only ``fgsm-random`` and ``pgd`` (the script's two trainings) and ``crafting_bn="batch"``.
  ``"blackbox"``: every pass of the training graph of the black-box scripts
  (``mnist_blackbox.py``, ``cifar10_blackbox.py``): the same crafting passes, and no
  evaluation attack (they build none). Only ``fgsm`` (fixed ε, ``cifar10_blackbox.py``) and
  ``pgd`` (``mnist_blackbox.py``'s ``MadryEtAl``). Those scripts build the adversarial graph
  before the clean epochs, so TF makes its passes then too; they are not made here: at
  momentum 0.001 with at least 4 updates a step, what the clean epochs leave weighs
  0.999^(4·469·5) ≈ 1e-4 after five adversarial MNIST epochs.
- ``fresh_optimizer=True``: with ``start_epoch`` > 0 the optimizer's state is cleared when the
  adversarial epochs begin (:func:`bnnrobust.train.fit`'s ``restart_optimizer_at``), as the
  code does: ``mnist_attack.py`` calls ``model_train`` once for the clean epochs and again for
  the adversarial ones, and each call builds a new Adam. ``False`` keeps one optimizer state.

Kinds:

- ``fgsm``: FGSM with fixed ``eps``.
- ``fgsm-random``: FGSM with per-example ε = |truncated normal(0, σ)| (cut at ±2σ). ``sigma``:
  ``"code"`` (default; the authors' ``int(ceil((eps·255) // 2))`` = 38 for eps = 0.3, on [0, 1]
  inputs, so almost every example saturates to 0 or 1 along the gradient's sign: the printed
  numbers come from this) or ``"text"`` (the paper's σ = ceil(eps·255/2)/255 ≈ 0.15, Kurakin et
  al. 2017).
- ``pgd``: PGD (Madry et al.), ``steps`` of ``alpha`` with random start (Galloway: ε 0.3, step
  0.01, 20 or 40 iterations). ``pgd_start``: ``"unclipped"`` (default) takes the first
  gradient at x + U(−ε, ε) as drawn, as CleverHans' ``MadryEtAl`` in Galloway et al.'s code
  does (its iterates are clipped to [0, 1] from the first step on); ``"clipped"`` clips the
  start to [0, 1] first, as Madry et al.'s code and :class:`~bnnrobust.attacks.PGD` do.
- ``rfgsm``: R-FGSM with α = ε/2 (Panda et al.: ε = 0.3 on MNIST, 8/255 on CIFAR).

A model with an input quantizer (Panda et al.'s k-bit inputs) is trained by the protocol of
the paper's attack: the batch is discretized first, the examples are crafted there with the
gradient with respect to the network's discretized input (BPDA through the quantizer; without
it the quantizer's zero gradient leaves only R-FGSM's random step), and the model discretizes
them again.

This lives in the attacks layer because it is built from attacks; the training loop only sees
the hook contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import AttackError, check_budget, check_positive, check_steps
from bnnrobust.attacks.fgsm import FGSM
from bnnrobust.attacks.pgd import PGD
from bnnrobust.attacks.rfgsm import RFGSM
from bnnrobust.data import discretize_like, input_quantizers
from bnnrobust.train import batch_statistics, eval_mode

ADV_KINDS = ("fgsm", "fgsm-random", "pgd", "rfgsm")
LABELS = ("predicted", "true")
SIGMAS = ("code", "text")
CRAFTING_BN = ("batch", "running")
PGD_STARTS = ("unclipped", "clipped")
RUNNING_STATS = ("loss", "mnist-attack", "blackbox")
#: the TF scripts a copied graph comes from, and the trainings each builds
GRAPHS = {"mnist-attack": ("mnist_attack.py", ("fgsm-random", "pgd")),
          "blackbox": ("mnist_blackbox.py and cifar10_blackbox.py", ("fgsm", "pgd"))}
#: the evaluation attack ``mnist_attack.py`` builds beside a PGD training attack: CleverHans
#: ``MadryEtAl``'s defaults
EVAL_PGD_STEPS, EVAL_PGD_ALPHA = 40, 0.01

Passes = list[tuple[nn.modules.batchnorm._BatchNorm, torch.Tensor, torch.Tensor]]


@contextmanager
def recorded_batch_statistics(model: nn.Module, *, record: bool = True) -> Iterator[Passes]:
    """As :func:`bnnrobust.train.batch_statistics` (every batch norm normalizes with the
    statistics of the batch it sees, its running statistics untouched), and the list it yields
    collects, pass after pass, each batch norm's per-channel mean and unbiased variance of its
    input (what PyTorch's own update uses) for :func:`update_running_statistics`; with
    ``record=False`` the list stays empty (nothing is computed)."""
    passes: Passes = []

    def record_pass(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach()
        dims = [0, *range(2, x.dim())]
        passes.append((module, x.mean(dims), x.var(dims, unbiased=True)))

    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    handles = [m.register_forward_pre_hook(record_pass) for m in norms] if record else []
    try:
        with batch_statistics(model):
            yield passes
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def update_running_statistics(passes: Passes) -> None:
    """Move each batch norm's running statistics by its recorded passes, in order, as that many
    training-mode forward passes would (``momentum``; None: the cumulative average)."""
    for module, mean, var in passes:
        module.num_batches_tracked += 1
        rate = module.momentum if module.momentum is not None \
            else 1.0 / float(module.num_batches_tracked)
        module.running_mean.lerp_(mean, rate)
        module.running_var.lerp_(var, rate)


def random_eps(n: int, eps_max: float, generator: torch.Generator, *,
               sigma: str = "code") -> torch.Tensor:
    """Per-example ε: |N(0, σ)| truncated at ±2σ; σ = ``int(ceil((eps_max·255) // 2))``
    (``"code"``: Galloway et al.'s, 38 for 0.3) or ``ceil(eps_max·255/2)/255`` (``"text"``).
    Draws above 1 are capped at 1: on [0, 1] inputs FGSM with any ε >= 1 moves every pixel with
    a non-zero gradient to 0 or 1, exactly as ε = 1 does, so the examples are the same."""
    sigma = float(math.ceil((eps_max * 255) // 2)) if sigma == "code" \
        else math.ceil(eps_max * 255 / 2) / 255
    eps = torch.empty(n)
    torch.nn.init.trunc_normal_(eps, std=sigma, a=-2 * sigma, b=2 * sigma, generator=generator)
    return eps.abs().clamp(max=1.0)


def predicted(model: nn.Module, x: torch.Tensor, *, passes: int = 1) -> torch.Tensor:
    """The model's predicted labels (CleverHans' label guess), from the last of ``passes``
    identical forward passes (a copied TF graph that guesses twice makes two)."""
    with torch.no_grad(), eval_mode(model):
        for _ in range(passes):
            labels = model(x).argmax(1)
    return labels


class UnclippedStartPGD(PGD):
    """L∞ PGD whose random start x + U(−ε, ε) is not clipped to [0, 1] before the first
    gradient: CleverHans 2.0 ``MadryEtAl`` (``attack``: ``eta = U(−ε, ε)``, then each step
    takes the gradient at ``x + eta`` and clips the new iterate to [0, 1] and the ε-ball),
    which Galloway et al.'s code trains with. Everything else is :class:`PGD`'s."""

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.params.random_start:
            return x.clone()
        if self.params.norm != "linf":
            raise AttackError("UnclippedStartPGD is CleverHans' L∞ MadryEtAl; use PGD for l2.")
        noise = torch.rand(x.shape, generator=self.generator, device=x.device) * 2 - 1
        return x + noise * self.params.eps


class AdversarialTraining:
    """Batch hook that adds adversarial examples to each batch from ``start_epoch`` on."""

    def __init__(self, kind: str, *, eps: float = 0.3, start_epoch: int = 0, steps: int = 20,
                 alpha: float = 0.01, random_start: bool = True, label: str = "predicted",
                 loss_label: str = "true", crafting_bn: str = "batch", sigma: str = "code",
                 fresh_optimizer: bool = True, running_stats: str = "loss",
                 pgd_start: str = "unclipped", epochs: int | None = None,
                 seed: int = 0) -> None:
        if kind not in ADV_KINDS:
            raise AttackError(f"unknown adversarial training {kind!r}; expected one of "
                              f"{', '.join(ADV_KINDS)}.")
        for name, value, choices in (("label", label, LABELS), ("loss_label", loss_label, LABELS),
                                     ("crafting_bn", crafting_bn, CRAFTING_BN),
                                     ("sigma", sigma, SIGMAS),
                                     ("running_stats", running_stats, RUNNING_STATS),
                                     ("pgd_start", pgd_start, PGD_STARTS)):
            if value not in choices:
                raise AttackError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise AttackError(f"start_epoch must be an integer >= 0, got {start_epoch!r}.")
        self.kind = kind
        self.eps = check_budget("eps", eps)
        self.start_epoch = start_epoch
        self.steps = check_steps("steps", steps)
        self.alpha = check_positive("alpha", alpha)
        self.random_start, self.pgd_start = bool(random_start), pgd_start
        self.label, self.loss_label = label, loss_label
        self.crafting_bn, self.sigma = crafting_bn, sigma
        if not isinstance(fresh_optimizer, bool):
            raise AttackError(f"fresh_optimizer must be true or false, got {fresh_optimizer!r}.")
        self.fresh_optimizer = fresh_optimizer
        self.running_stats, self.epochs = running_stats, epochs
        if running_stats != "loss":
            self._check_graph()
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _check_graph(self) -> None:
        script, kinds = GRAPHS[self.running_stats]
        if self.kind not in kinds or self.crafting_bn != "batch" or self.label != "predicted":
            raise AttackError(f"running_stats = {self.running_stats!r} copies the TF graph of "
                              f"{script}, which trains with {' or '.join(kinds)} and "
                              f"crafts against the predicted label with the batch's "
                              f"statistics; got kind {self.kind!r}, crafting_bn "
                              f"{self.crafting_bn!r}, label {self.label!r}. Use "
                              f"running_stats = 'loss'.")
        if self.running_stats == "mnist-attack" and self.kind == "pgd" and not (
                isinstance(self.epochs, int) and self.epochs > self.start_epoch):
            raise AttackError(f"running_stats = 'mnist-attack' with pgd needs the number of "
                              f"training epochs (above start_epoch = {self.start_epoch}), to "
                              f"make the evaluation attack's passes in the last one; got "
                              f"epochs = {self.epochs!r}.")

    def config(self) -> dict[str, Any]:
        """Plain data that identifies this schedule (part of the checkpoint-cache key); with
        a fresh optimizer, ``restart_optimizer_at`` tells the training loop when."""
        cfg: dict[str, Any] = {"adv": self.kind, "eps": self.eps, "start_epoch": self.start_epoch,
                               "label": self.label, "loss_label": self.loss_label,
                               "crafting_bn": self.crafting_bn, "seed": self.seed}
        if self.fresh_optimizer and self.start_epoch > 0:
            cfg["restart_optimizer_at"] = self.start_epoch
        if self.running_stats != "loss":
            cfg["running_stats"] = self.running_stats
            if self.running_stats == "mnist-attack" and self.kind == "pgd":
                cfg["epochs"] = self.epochs
        if self.kind == "fgsm-random":
            cfg["sigma"] = self.sigma
        if self.kind == "pgd":
            cfg.update(steps=self.steps, alpha=self.alpha, random_start=self.random_start,
                       pgd_start=self.pgd_start)
        return cfg

    def state_dict(self) -> dict[str, Any]:
        """The generator that draws each batch's ε and attack seed (for resumable training)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the draws from a :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def _attack(self, model: nn.Module, n: int, *, bpda: bool):
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        if self.kind == "fgsm":
            return FGSM(model, eps=self.eps, seed=seed, bpda=bpda)
        if self.kind == "fgsm-random":
            return FGSM(model, eps=random_eps(n, self.eps, self.generator, sigma=self.sigma),
                        seed=seed, bpda=bpda)
        if self.kind == "rfgsm":
            return RFGSM(model, eps=self.eps, seed=seed, bpda=bpda)
        return self._pgd(model, alpha=self.alpha, steps=self.steps,
                         random_start=self.random_start, seed=seed, bpda=bpda)

    def _pgd(self, model: nn.Module, **options: Any) -> PGD:
        attack = UnclippedStartPGD if self.pgd_start == "unclipped" else PGD
        return attack(model, eps=self.eps, **options)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(x, y)]`` before ``start_epoch``; ``[(x, y), (x_adv, y_loss)]`` from then on."""
        if epoch < self.start_epoch:
            return [(x, y)]
        quantized = bool(input_quantizers(model))
        x_in = discretize_like(model, x) if quantized else x
        graph = self.running_stats != "loss"
        evaluation = self.running_stats == "mnist-attack" and (
            self.kind == "fgsm-random" or epoch == self.epochs - 1)
        with recorded_batch_statistics(model, record=graph) if self.crafting_bn == "batch" \
                else nullcontext([]) as passes:
            labels = y if self.label != "predicted" else \
                predicted(model, x, passes=2 if graph and self.kind == "pgd" else 1)
            x_adv = self._attack(model, len(x), bpda=quantized)(x_in, labels)
            if evaluation and passes:
                self._evaluation_attack(model, x, x_in, bpda=quantized)  # (none without BN)
        if graph:
            update_running_statistics(passes)
        return [(x, y), (x_adv, y if self.loss_label == "true" else labels)]

    def _evaluation_attack(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, *,
                           bpda: bool) -> None:
        """The passes of ``mnist_attack.py``'s evaluation attack (see ``running_stats``): its
        label guesses, its crafting and the forward pass of its examples; the examples
        themselves are dropped, as the script's training never uses them."""
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        if self.kind == "pgd":
            labels = predicted(model, x, passes=2)
            attack = self._pgd(model, alpha=EVAL_PGD_ALPHA, steps=EVAL_PGD_STEPS,
                               random_start=True, seed=seed, bpda=bpda)
        else:
            labels = predicted(model, x)
            attack = FGSM(model, eps=self.eps, seed=seed, bpda=bpda)
        x_eval = attack(x_in, labels)
        with torch.no_grad(), eval_mode(model):
            model(x_eval)
