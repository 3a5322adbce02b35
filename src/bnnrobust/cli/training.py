"""Commands that train and evaluate: ``train``, ``eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bnnrobust.attacks import ADV_KINDS, AdversarialTraining
from bnnrobust.cli.options import (
    DatasetOpt,
    DeviceOpt,
    JsonOpt,
    ParamOpt,
    RootOpt,
    check_count,
    check_output_file,
    err,
    out,
    parse_params,
)
from bnnrobust.cli.source import Source, load_model, takes_model
from bnnrobust.data import load
from bnnrobust.device import resolve_device
from bnnrobust.files import atomic_write
from bnnrobust.train import TrainRequest, accuracy, save, train_cached


def train(
    model: Annotated[str, typer.Argument(help="Zoo model name (see 'bnnrobust models').")],
    dataset: DatasetOpt = "mnist",
    param: ParamOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (Galloway et al.: 15).")] = 15,
    batch_size: Annotated[int, typer.Option(help="Batch size (papers: 128).")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (papers: 1e-3).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed for initialization, shuffling and sampling.")] = 0,
    limit: Annotated[int | None, typer.Option(
        help="Train on the first N training examples only (default: all).")] = None,
    clip_weights: Annotated[bool, typer.Option(
        help="Clamp latent weights of binary layers to [-1, 1] after each step.")] = False,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="Also write the checkpoint here (it is always kept in the cache).")] = None,
    adv: Annotated[str | None, typer.Option(
        help=f"Adversarial training: {', '.join(ADV_KINDS)} (default: none). Each batch adds "
             "its adversarial version; loss = (clean + adversarial) / 2.")] = None,
    adv_eps: Annotated[float, typer.Option(
        help="Adversarial training ε (L∞; papers: 0.3 on MNIST). For fgsm-random, the "
             "largest ε of the truncated normal.")] = 0.3,
    adv_steps: Annotated[int, typer.Option(help="PGD training iterations (Galloway: 20 or 40).")] = 20,
    adv_alpha: Annotated[float, typer.Option(help="PGD training step size (0.01).")] = 0.01,
    adv_start: Annotated[int, typer.Option(
        help="First adversarial epoch, counting from 0 (papers: 10 of 15).")] = 0,
    adv_label: Annotated[str, typer.Option(
        help="Label the adversarial examples are crafted against: predicted (the model's own, "
             "no label leaking; Galloway et al.'s code) or true.")] = "predicted",
    adv_loss_label: Annotated[str, typer.Option(
        help="Label of the adversarial loss term: true (Galloway et al.'s code) or predicted "
             "(the label the example was crafted against).")] = "true",
    adv_crafting_bn: Annotated[str, typer.Option(
        help="Batch norm while crafting: batch (the batch's statistics, as Galloway et al.'s "
             "TF code) or running (inference mode).")] = "batch",
    adv_sigma: Annotated[str, typer.Option(
        help="fgsm-random's σ: code (Galloway et al.'s 38 for ε = 0.3, the printed numbers) or "
             "text (the paper's ceil(ε·255/2)/255).")] = "code",
    adv_fresh_optimizer: Annotated[bool, typer.Option(
        "--adv-fresh-optimizer/--adv-keep-optimizer",
        help="With --adv-start > 0: clear the optimizer's state (Adam's moments) when the "
             "adversarial epochs begin, as Galloway et al.'s code does (it builds a new Adam "
             "for them), or keep one state throughout.")] = True,
    adv_running_stats: Annotated[str, typer.Option(
        help="Which passes move batch norm's running statistics: loss (the loss's clean and "
             "adversarial passes, as PyTorch training does) or mnist-attack (every pass of "
             "the TF graph of Galloway et al.'s mnist_attack.py, its unused evaluation "
             "attack's included; fgsm-random and pgd only) or blackbox (every pass of the "
             "training graph of their black-box scripts: no evaluation attack; fgsm and pgd "
             "only).")] = "loss",
    adv_pgd_start: Annotated[str, typer.Option(
        help="pgd's random start: unclipped (the first gradient at x + U(-eps, eps) as "
             "drawn, as CleverHans' MadryEtAl in Galloway et al.'s code) or clipped (clipped "
             "to [0, 1] first, as Madry et al.'s code).")] = "unclipped",
    device: DeviceOpt = "auto",
    root: RootOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Train a zoo model (or fetch it from the checkpoint cache) and print its test accuracy."""
    check_output_file("--out", out_path)
    check_output_file("--json", json_path)
    resolve_device(device)
    hook = None
    if adv is not None:
        hook = AdversarialTraining(adv, eps=adv_eps, start_epoch=adv_start, steps=adv_steps,
                                   alpha=adv_alpha, label=adv_label,
                                   loss_label=adv_loss_label, crafting_bn=adv_crafting_bn,
                                   sigma=adv_sigma, fresh_optimizer=adv_fresh_optimizer,
                                   running_stats=adv_running_stats,
                                   pgd_start=adv_pgd_start, epochs=epochs, seed=seed)
    request = TrainRequest(model=model, params=parse_params(param), dataset=dataset,
                           epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                           clip_weights=clip_weights, train_limit=limit,
                           hook=hook.config() if hook else None)
    result = train_cached(request, batch_hook=hook, device=device, data_root=root, console=err)
    path = result.path
    if out_path is not None:  # written from the model itself: also when the cache was not
        save(result.model, out_path, train_config=result.train_config, metrics=result.metrics)
        path = out_path
    acc = result.metrics.get("final_test_accuracy")
    out.print(f"{'cached' if result.hit else 'trained'}: {model} {request.as_dict()['params']}")
    out.print(f"test accuracy: {acc:.2%}")
    out.print(f"checkpoint: {path if path is not None else 'not written (see the warning)'}")
    if json_path is not None:
        atomic_write(json_path, json.dumps({"checkpoint": str(path), "cache_hit": result.hit,
                                            "request": result.train_config,
                                            **result.metrics}, indent=2))


@takes_model
def evaluate(
    source: Source,
    dataset: DatasetOpt = "mnist",
    limit: Annotated[int | None, typer.Option(
        help="Evaluate on the first N test examples only.")] = None,
    passes: Annotated[int, typer.Option(
        help="Forward passes averaged for a stochastic model (fixed seeds).")] = 5,
    device: DeviceOpt = "auto",
    root: RootOpt = None,
) -> None:
    """Clean test accuracy of a checkpoint or of your own model."""
    source.check()
    check_count("--passes", passes)
    dev = resolve_device(device)
    x, y = load(dataset, "test", root=root, limit=limit)
    loaded = load_model(source, device=dev, sample=x)
    acc = accuracy(loaded.model, x, y, device=dev, passes=passes)
    out.print(loaded.name)
    out.print(f"clean accuracy on {dataset} test ({len(x)} images): {acc:.2%}")


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command()(train)
    app.command("eval")(evaluate)
