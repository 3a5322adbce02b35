"""Training that survives a kill: the state after a finished epoch, saved atomically and
restored.

A paper-profile run trains for hours; :func:`bnnrobust.train.fit` with ``resume=PATH`` writes,
after a finished epoch (at most every ``save_every`` seconds, see :func:`~bnnrobust.train.fit`),
everything the next epoch depends on — the weights, the
optimizer's state (its moments and the scheduled learning rate), the shuffling generator, the
global generator (dropout), every stochastic layer's generator, the batch hook's state
(adversarial training draws its ε and seeds from its own generator) and the metrics so far —
to ``PATH`` through :func:`bnnrobust.files.atomic_path`, so a kill at any moment leaves the last
finished epoch's state whole. Started again with the same ``PATH``, ``fit`` restores it and
continues with the next epoch; on CPU the final weights equal an uninterrupted run's bit for
bit. A state written under other training options is refused, never mixed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnrobust.errors import TrainingError
from bnnrobust.files import atomic_path
from bnnrobust.nn import binary_layers

#: version of the saved state's layout
STATE_FORMAT = 1


def _stochastic_layers(model: nn.Module) -> list[nn.Module]:
    return [layer for layer in binary_layers(model) if layer.stochastic]


def save_state(path: Path, *, options: dict[str, Any], epoch: int, model: nn.Module,
               optimizer: torch.optim.Optimizer, generator: torch.Generator,
               hook_state: dict[str, Any] | None, history: list[dict[str, Any]]) -> None:
    """Write the state after (1-based) ``epoch`` to ``path`` atomically. ``options``: the
    training options the state belongs to (checked on restore)."""
    layers = _stochastic_layers(model)
    state = {
        "format": STATE_FORMAT,
        "options": options,
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "global": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "stochastic": [layer.generator_state() for layer in layers],
        "hook": hook_state,
        "history": history,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, *, options: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved at ``path`` (None when there is none); an unreadable file or one written
    under other ``options`` is a :class:`TrainingError` that says what to do."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise TrainingError(f"{path}: cannot read the saved training state ({exc}); delete it "
                            "to train from the first epoch.") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not a training state of this version of bnnrobust; delete "
                            "it to train from the first epoch.")
    if state["options"] != options:
        differ = sorted(k for k in set(options) | set(state["options"])
                        if options.get(k) != state["options"].get(k))
        raise TrainingError(f"{path}: the saved training state belongs to other training "
                            f"options (differing: {', '.join(differ)}); pass another resume "
                            "path, or delete it to train from the first epoch.")
    return state


def restore_state(state: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                  generator: torch.Generator, device: torch.device) -> None:
    """Put ``state`` (from :func:`load_state`) back into the model, optimizer and generators
    (the batch hook's state is the caller's to restore)."""
    model.load_state_dict(state["model"])
    model.to(device)
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["global"])
    for i, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, i)
    layers = _stochastic_layers(model)
    for layer, saved in zip(layers, state["stochastic"], strict=True):
        if saved is not None:
            layer.load_generator_state(saved)
