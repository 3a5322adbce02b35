"""Checkpoints: atomic save, safe load (``weights_only=True``), rebuild with no other input.

A checkpoint holds the model's zoo name and parameters, its weights, the training
configuration, metrics and library versions. Loading never runs code: ``torch.load`` with
``weights_only=True`` and plain-data (JSON) configuration. A missing, truncated or foreign file,
or one whose weights do not fit the model it names, is refused with an error that says why.
"""

from __future__ import annotations

import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bnnrobust
from bnnrobust.errors import BnnRobustError, CheckpointError
from bnnrobust.files import atomic_write
from bnnrobust.models import ZooModel, build

FORMAT = "bnnrobust-checkpoint"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine a trained model."""
    return {"bnnrobust": bnnrobust.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and what was stored beside it."""

    model: ZooModel
    path: Path
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def save(model: nn.Module, path: str | Path, *, train_config: dict[str, Any] | None = None,
         metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a zoo model) to ``path`` atomically; returns the path."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise CheckpointError("only models built with bnnrobust.models.build can be saved "
                              "(the checkpoint must know how to rebuild the model).")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": json.dumps(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_config": json.dumps(train_config or {}),
        "metrics": json.dumps(metrics or {}),
        "versions": json.dumps(library_versions()),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    atomic_write(path, buf.getvalue())
    return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt file written by "
                              "'bnnrobust train' or bnnrobust.train.save).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types: zip, pickle, EOF, runtime errors
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{path} is not a readable bnnrobust checkpoint: it is truncated, "
                              "corrupt, another kind of file, or holds objects that are not "
                              f"plain data ({type(exc).__name__}: {first[:200]}).") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bnnrobust checkpoint (no '{FORMAT}' marker); "
                              "train one with 'bnnrobust train'.")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version "
                              f"{payload.get('format_version')!r}; this bnnrobust reads "
                              f"version {FORMAT_VERSION}.")
    return payload


def load(path: str | Path, *, expected_model: str | None = None,
         device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model stored at ``path`` (in eval mode, on ``device``).

    ``expected_model``: refuse a checkpoint of another zoo family (e.g. ``"fc-bnn"``).
    """
    path = Path(path)
    payload = _read(path)
    try:
        config = json.loads(payload["model"])
        name, params = config["name"], config["params"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model description is damaged ({exc}).") from exc
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{path} holds a {name!r} model, but a {expected_model!r} model "
                              "is needed here.")
    try:
        model = build(name, **params)
    except BnnRobustError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: has no weights (state_dict).")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        raise CheckpointError(f"{path}: its weights do not fit a {name!r} model with parameters "
                              f"{params} ({'; '.join(parts)}); the file is from another "
                              "architecture or was altered.")
    model.load_state_dict(state)
    model.to(torch.device(device) if not isinstance(device, torch.device) else device).eval()
    return Checkpoint(model=model, path=path,
                      train_config=json.loads(payload.get("train_config", "{}")),
                      metrics=json.loads(payload.get("metrics", "{}")),
                      versions=json.loads(payload.get("versions", "{}")))
