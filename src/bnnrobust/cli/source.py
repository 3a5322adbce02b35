"""The model a command works on: a bnnrobust checkpoint, or the user's own network (``--model
package.module:factory [--weights PATH]`` or ``--onnx PATH``) with the options that fit it to
our contract (``--input-shape``, ``--classes``, ``--normalize``, ``--bounds``,
``--output-index``, ``--logits-from-probs``). Options are declared once here; a
model-taking command is decorated with :func:`takes_model`, takes a :class:`Source` as its first
parameter and calls :func:`load_model`."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from torch import nn

from bnnrobust.cli.options import check_checkpoint
from bnnrobust.errors import BnnRobustError
from bnnrobust.models.external import UserModel, check_outputs, from_factory, from_onnx
from bnnrobust.train import load as load_checkpoint

CheckpointOptArg = Annotated[Path | None, typer.Argument(
    help="A checkpoint written by 'bnnrobust train' (or found in the checkpoint cache); or "
         "leave it out and give your own model with --model or --onnx.", show_default=False)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Your own PyTorch model: package.module:factory, a callable that returns "
                    "an nn.Module with no arguments, imported from the current folder or an "
                    "installed package; its weights with --weights.", show_default=False)]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="State dict for --model (torch.save(model.state_dict(), PATH)); read "
                      "with weights_only=True.", show_default=False)]
OnnxOpt = Annotated[Path | None, typer.Option(
    "--onnx", help="Your own model as an ONNX file (converted by onnx2torch: the 'onnx' "
                   "extra).", show_default=False)]
InputShapeOpt = Annotated[str | None, typer.Option(
    "--input-shape", help="Shape of one input of --model/--onnx: C,H,W or D (default: the "
                          "dataset's).", show_default=False)]
ClassesOpt = Annotated[int | None, typer.Option(
    "--classes", help="Classes --model/--onnx scores (checked; default: its output's "
                      "width).", show_default=False)]
NormalizeOpt = Annotated[str | None, typer.Option(
    "--normalize", help="MEAN,STD (one value each, or one per channel: M1,M2,M3,S1,S2,S3): "
                        "the normalization --model/--onnx expects, put inside the model so "
                        "attacks still see [0, 1] inputs and budgets keep their meaning.",
    show_default=False)]
BoundsOpt = Annotated[str | None, typer.Option(
    "--bounds", help="LOW,HIGH: the input range --model/--onnx expects (default 0,1); [0, 1] "
                     "images are mapped onto it inside the model.", show_default=False)]
OutputIndexOpt = Annotated[int | None, typer.Option(
    "--output-index", help="--model/--onnx returns a tuple: the position of the logits in "
                           "it.", show_default=False)]
LogitsFromProbsOpt = Annotated[bool, typer.Option(
    "--logits-from-probs", help="--model/--onnx returns probabilities (softmax): attack "
                                "their log.")]


@dataclass(frozen=True)
class Source:
    """Where the model comes from, as the command line gave it."""

    checkpoint: Path | None = None
    factory: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    input_shape: str | None = None
    classes: int | None = None
    normalize: str | None = None
    bounds: str | None = None
    output_index: int | None = None
    logits_from_probs: bool = False

    @property
    def external(self) -> bool:
        """Whether it is the user's own model (``--model`` or ``--onnx``)."""
        return self.factory is not None or self.onnx is not None

    def check(self) -> None:
        """Refuse contradictory or malformed options before any work."""
        given = [name for name, value in (("a checkpoint", self.checkpoint),
                                          ("--model", self.factory), ("--onnx", self.onnx))
                 if value is not None]
        if len(given) != 1:
            raise BnnRobustError(
                "give the model once: a checkpoint, --model package.module:factory or --onnx "
                f"FILE ({'none given' if not given else 'got ' + ' and '.join(given)}).")
        if self.weights is not None and self.factory is None:
            raise BnnRobustError("--weights goes with --model (a checkpoint holds its weights; "
                                 "an ONNX file too).")
        if self.checkpoint is not None:
            check_checkpoint(self.checkpoint)
            fitting = {"--input-shape": self.input_shape, "--classes": self.classes,
                       "--normalize": self.normalize, "--bounds": self.bounds,
                       "--output-index": self.output_index,
                       "--logits-from-probs": self.logits_from_probs or None}
            extra = [name for name, value in fitting.items() if value is not None]
            if extra:
                raise BnnRobustError(f"{', '.join(extra)} fit --model/--onnx to bnnrobust's "
                                     "contract; a checkpoint already keeps it.")
        self.parsed()

    def parsed(self) -> dict[str, Any]:
        """The fitting options as values (an error names a malformed one)."""
        shape = _numbers("--input-shape", self.input_shape, int, "C,H,W or D, e.g. 1,28,28")
        if shape is not None and any(d < 1 for d in shape):
            raise BnnRobustError(f"--input-shape needs positive sizes, got {self.input_shape}.")
        if self.classes is not None and self.classes < 2:
            raise BnnRobustError(f"--classes must be at least 2, got {self.classes}.")
        normalize = _numbers("--normalize", self.normalize, float,
                             "MEAN,STD or M1,M2,M3,S1,S2,S3")
        if normalize is not None:
            if len(normalize) % 2:
                raise BnnRobustError(f"--normalize needs as many means as standard "
                                     f"deviations, got {len(normalize)} numbers.")
            half = len(normalize) // 2
            normalize = (normalize[:half], normalize[half:])
        bounds = _numbers("--bounds", self.bounds, float, "LOW,HIGH, e.g. 0,255")
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise BnnRobustError(f"--bounds must be LOW,HIGH with LOW < HIGH, got "
                                 f"{self.bounds}.")
        return {"input_shape": shape, "num_classes": self.classes, "normalize": normalize,
                "bounds": tuple(bounds) if bounds is not None else (0.0, 1.0),
                "output_index": self.output_index, "logits_from_probs": self.logits_from_probs}


def _numbers(option: str, text: str | None, kind: type, form: str) -> list | None:
    if text is None:
        return None
    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError:
        raise BnnRobustError(f"{option} must be {form}; got {text!r}.") from None
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise BnnRobustError(f"{option} must hold finite numbers; got {text!r}.")
    return values


@dataclass
class Loaded:
    """The model to work on, how to name it, and the dataset a checkpoint was trained on."""

    model: nn.Module
    name: str
    trained_on: str | None


def load_model(source: Source, *, device: str | torch.device,
               sample: torch.Tensor | None = None) -> Loaded:
    """The model ``source`` names, in eval mode on ``device``. The user's own model is
    wrapped (:class:`~bnnrobust.models.external.UserModel`) and run once on ``sample`` (a few
    test inputs) to refuse outputs attacks cannot use; its input shape defaults to the
    sample's."""
    source.check()
    if source.checkpoint is not None:
        ckpt = load_checkpoint(source.checkpoint, device=device)
        config = ckpt.model.config
        return Loaded(ckpt.model, f"{config['name']} {config['params']}",
                      ckpt.train_config.get("dataset"))
    options = source.parsed()
    if source.factory is not None:
        net, name = from_factory(source.factory, weights=source.weights), source.factory
    else:
        net, name = from_onnx(source.onnx), source.onnx.name
    if options["input_shape"] is None and sample is not None:
        options["input_shape"] = tuple(sample.shape[1:])
    model = UserModel(net, name=name, **options).to(device).eval()
    if sample is not None:
        check_outputs(model, sample[:8].to(device))
    return Loaded(model, f"{name} (your model: {model.config['params']})", None)


#: the command-line parameters of :class:`Source`, in its field order
_PARAMETERS: dict[str, tuple[Any, Any]] = {
    "checkpoint": (CheckpointOptArg, None), "factory": (ModelOpt, None),
    "weights": (WeightsOpt, None), "onnx": (OnnxOpt, None),
    "input_shape": (InputShapeOpt, None), "classes": (ClassesOpt, None),
    "normalize": (NormalizeOpt, None), "bounds": (BoundsOpt, None),
    "output_index": (OutputIndexOpt, None), "logits_from_probs": (LogitsFromProbsOpt, False),
}
assert list(_PARAMETERS) == [f.name for f in fields(Source)]


def takes_model(command: Callable[..., None]) -> Callable[..., None]:
    """``command(source: Source, ...)`` as a Typer command: the checkpoint argument first, the
    model options after the command's own, gathered into its ``source``."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    if not own or own[0].name != "source":
        raise TypeError(f"{command.__name__} must take source: Source first")

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        source = Source(**{name: values.pop(name) for name in _PARAMETERS})
        command(source, **values)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    added = [inspect.Parameter(name, kind, default=default, annotation=annotation)
             for name, (annotation, default) in _PARAMETERS.items()]
    parameters = [added[0], *own[1:], *added[1:]]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
