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


def _json_dict(payload: dict[str, Any], key: str, path: Path, *, default: str = "{}"
               ) -> dict[str, Any]:
    """Field ``key`` of the payload: a JSON text that must hold an object."""
    text = payload.get(key, default)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError as exc:
        raise CheckpointError(f"{path}: its {key!r} field is not valid JSON ({exc}); the file "
                              "was altered.") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: its {key!r} field must be a JSON object, found "
                              f"{type(value).__name__ if value is not None else type(text).__name__}"
                              "; the file was altered.")
    return value


def _skeleton(name: str, params: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The state dict the claimed architecture needs, built on the meta device (no memory is
    allocated, however large the claim)."""
    try:
        with torch.device("meta"):
            return build(name, **params).state_dict()
    except BnnRobustError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - an absurd claim fails in many ways
        raise CheckpointError(f"{path}: its model description ({name!r}, {params}) cannot be "
                              f"built ({type(exc).__name__}); the file was altered.") from None


def _check_state(state: Any, own: dict[str, torch.Tensor], name: str, params: dict[str, Any],
                 path: Path) -> None:
    """Refuse weights that do not fit the claimed architecture (names, shapes, dtypes) or that
    are not finite."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise CheckpointError(f"{path}: has no weights (a state_dict of tensors).")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(map(str, set(state) - set(own)))
    common = sorted(set(own) & set(state))
    wrong = [k for k in common if own[k].shape != state[k].shape]
    dtype = [k for k in common if own[k].dtype != state[k].dtype]
    if missing or unexpected or wrong or dtype:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        if dtype:
            parts.append("dtype mismatch " + ", ".join(
                f"{k} {state[k].dtype} vs {own[k].dtype}" for k in dtype[:5]))
        raise CheckpointError(f"{path}: its weights do not fit a {name!r} model with parameters "
                              f"{params} ({'; '.join(parts)}); the file is from another "
                              "architecture or was altered.")
    bad = [k for k in common if state[k].is_floating_point() and not torch.isfinite(state[k]).all()]
    if bad:
        raise CheckpointError(f"{path}: weights {', '.join(bad[:5])} hold NaN or infinite values; "
                              "a model with non-finite weights is refused (its training "
                              "diverged, or the file was altered).")


def load(path: str | Path, *, expected_model: str | None = None,
         device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model stored at ``path`` (in eval mode, on ``device``).

    The claimed architecture is first built on the meta device and every stored tensor checked
    against it (names, shapes, dtypes, finite values) before anything is allocated, so a header
    cannot claim more memory than the file's weights hold. ``expected_model``: refuse a
    checkpoint of another zoo family (e.g. ``"fc-bnn"``).
    """
    path = Path(path)
    payload = _read(path)
    config = _json_dict(payload, "model", path, default="")
    name, params = config.get("name"), config.get("params")
    if not isinstance(name, str) or not isinstance(params, dict):
        raise CheckpointError(f"{path}: its model description must name a model and a dict of "
                              f"parameters, found {config!r:.200}; the file was altered.")
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{path} holds a {name!r} model, but a {expected_model!r} model "
                              "is needed here.")
    state = payload.get("state_dict")
    _check_state(state, _skeleton(name, params, path), name, params, path)
    train_config = _json_dict(payload, "train_config", path)
    metrics = _json_dict(payload, "metrics", path)
    versions = _json_dict(payload, "versions", path)
    try:
        model = build(name, **params)
        model.load_state_dict(state)
    except (BnnRobustError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    model.to(torch.device(device) if not isinstance(device, torch.device) else device).eval()
    return Checkpoint(model=model, path=path, train_config=train_config, metrics=metrics,
                      versions=versions)
