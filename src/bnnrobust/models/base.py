"""The model registry: named families with validated, documented parameters.

``build(name, **params)`` returns a :class:`ZooModel` that remembers how it was built
(``model.config``), so a checkpoint can rebuild it with no other input. Every image model takes
``input_bits`` (1..8 or None): when set, an :class:`~bnnrobust.data.InputQuantizer` becomes the
first layer (Panda et al.'s input discretization).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bnnrobust.data import InputQuantizer
from bnnrobust.errors import ModelError


@dataclass(frozen=True)
class Param:
    """One model parameter: its default, type, allowed values (if a fixed set) and meaning."""

    default: Any
    help: str
    kind: type = int
    choices: tuple | None = None
    minimum: int | None = 1
    optional: bool = False

    def validate(self, model: str, name: str, value: Any) -> Any:
        """Coerce ``value`` (possibly a CLI string) and check it; raise a ModelError if bad."""
        if value is None and self.optional:
            return None
        if isinstance(value, str) and self.kind is not str:
            value = _parse(model, name, value, self.kind, self.optional)
            if value is None:
                return None
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            raise ModelError(f"model {model!r}: parameter {name!r} must be {self.kind.__name__}, "
                             f"got {value!r}. {self.help}")
        if self.choices is not None and value not in self.choices:
            raise ModelError(f"model {model!r}: parameter {name!r} = {value!r} is not valid; "
                             f"valid values: {', '.join(map(str, self.choices))}.")
        if self.kind is int and self.minimum is not None and value < self.minimum:
            raise ModelError(f"model {model!r}: parameter {name!r} must be >= {self.minimum}, "
                             f"got {value}.")
        return value


def _parse(model: str, name: str, text: str, kind: type, optional: bool) -> Any:
    if optional and text.lower() in ("none", ""):
        return None
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise ModelError(f"model {model!r}: parameter {name!r} expects {kind.__name__}, got {text!r}.")


INPUT_BITS = Param(None, "quantize inputs to this many bits (Panda et al.); None = 8-bit data as is",
                   int, choices=(1, 2, 3, 4, 5, 6, 7, 8), optional=True)


@dataclass(frozen=True)
class ModelEntry:
    """A model family in the zoo."""

    name: str
    builder: Callable[..., nn.Module]
    params: dict[str, Param]
    description: str
    input_shape: Callable[[dict], tuple[int, ...]]
    num_classes: Callable[[dict], int]
    reference: str = ""


class ZooModel(nn.Module):
    """A built zoo model: ``input_layer`` (identity or an InputQuantizer) then ``body``.

    Attributes: ``config`` (``{"name", "params"}``, enough to rebuild it), ``input_shape``
    (without the batch dimension) and ``num_classes``. ``forward`` returns logits.
    """

    def __init__(self, body: nn.Module, *, config: dict, input_shape: tuple[int, ...],
                 num_classes: int, input_bits: int | None) -> None:
        super().__init__()
        self.input_layer = InputQuantizer(input_bits) if input_bits else nn.Identity()
        self.body = body
        self.config = config
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.body(self.input_layer(x))


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add a family to the zoo (each family file registers itself)."""
    _REGISTRY[entry.name] = entry
    return entry


def available() -> dict[str, ModelEntry]:
    """The zoo: family name -> entry (parameters, description, reference)."""
    return dict(sorted(_REGISTRY.items()))


def entry(name: str) -> ModelEntry:
    """The entry for ``name`` or an error listing the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available models: "
                         f"{', '.join(sorted(_REGISTRY))}.") from None


def resolve_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """All parameters of ``name`` with defaults filled in, validated."""
    spec = entry(name)
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ModelError(f"model {name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                         f"valid parameters: {', '.join(sorted(spec.params))}.")
    full = {k: p.default for k, p in spec.params.items()}
    for key, value in params.items():
        full[key] = spec.params[key].validate(name, key, value)
    return full


def build(name: str, **params: Any) -> ZooModel:
    """Build zoo model ``name`` with ``params`` (see :func:`available` for each family's)."""
    spec = entry(name)
    full = resolve_params(name, params)
    body = spec.builder(**{k: v for k, v in full.items() if k != "input_bits"})
    return ZooModel(body, config={"name": name, "params": full},
                    input_shape=spec.input_shape(full), num_classes=spec.num_classes(full),
                    input_bits=full.get("input_bits"))
