"""What the commands share: option declarations (defined once), checks of values and output
paths that run before any work, and the console streams."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bnnrobust.data import REGISTRY
from bnnrobust.errors import BnnRobustError

out = Console()
err = Console(stderr=True)

DeviceOpt = Annotated[str, typer.Option(
    "--device", help="Where to compute: auto (CUDA if present, else CPU), cpu or cuda.")]
DatasetOpt = Annotated[str, typer.Option(
    "--dataset", help=f"Dataset: {', '.join(REGISTRY)}. Files are looked up under "
                      "$BNNROBUST_DATA/<name>/ (default ~/.cache/bnnrobust/data).")]
RootOpt = Annotated[Path | None, typer.Option(
    "--root", help="Datasets folder (overrides $BNNROBUST_DATA).")]
EpsListOpt = Annotated[list[float] | None, typer.Option(
    "--eps", help="L∞ budgets on [0, 1] inputs, each in (0, 1]: --eps 0.1 0.2 0.3 (or --eps "
                  "0.1 --eps 0.2).")]
WorkersOpt = Annotated[int, typer.Option(
    "--workers", help="Work items computed in parallel (local: worker processes; ray: CPUs "
                      "of a local instance).")]
ExecutorOpt = Annotated[str, typer.Option(
    "--executor", help="local (processes on this machine) or ray.")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local "
                      "instance.")]
StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="Results store (SQLite); default $BNNROBUST_CACHE/results.sqlite or "
                    "~/.cache/bnnrobust/results.sqlite.")]
JsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Also write the results as JSON to this file.")]
RecordsOpt = Annotated[Path | None, typer.Option(
    "--records", help="Also write per-sample records (ε, point, label, clean prediction, per "
                      "attack: success, L0/L2/L∞, queries, seconds, status) to this .jsonl or "
                      ".csv file.", show_default=False)]
SaveAdvOpt = Annotated[Path | None, typer.Option(
    "--save-adv", help="Also keep the adversarial inputs in this .npz file (per ε).",
    show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the attack's random numbers.")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", help="Model parameter key=value, repeatable, e.g. --param precision=binary "
                    "--param width=64 (see 'bnnrobust models').")]
CheckpointArg = Annotated[Path, typer.Argument(
    help="A checkpoint written by 'bnnrobust train' (or found in the checkpoint cache).",
    show_default=False)]


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``["width=64", ...]`` as a dict; a pair without ``=`` is an error."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BnnRobustError(f"--param expects key=value, got {pair!r} (e.g. --param "
                                 "width=64).")
        params[key.strip()] = value.strip()
    return params


def check_eps(values: list[float] | None, default: list[float] | None = None) -> list[float]:
    """The ``--eps`` budgets (``default`` when none given), each finite and in (0, 1]."""
    values = list(values) if values else list(default or [])
    for value in values:
        if not math.isfinite(value) or not 0 < value <= 1:
            raise BnnRobustError(f"--eps {value:g} is not a budget: each ε must be a number in "
                                 "(0, 1] (inputs lie in [0, 1]; e.g. --eps 0.1 or --eps "
                                 "0.03137 for 8/255).")
    return values


def check_count(option: str, value: int, low: int = 1) -> int:
    """An integer option that must be >= ``low``."""
    if value < low:
        raise BnnRobustError(f"{option} must be >= {low}, got {value}.")
    return value


def check_seconds(option: str, value: float) -> float:
    """A time option: a finite number of seconds > 0."""
    if not math.isfinite(value) or value <= 0:
        raise BnnRobustError(f"{option} must be a finite number of seconds > 0, got {value:g}.")
    return value


def check_checkpoint(path: Path) -> Path:
    """An existing checkpoint file (the loader checks its content)."""
    if not path.exists():
        raise BnnRobustError(f"checkpoint {path} does not exist; train one with 'bnnrobust "
                             "train MODEL --out FILE'.")
    if path.is_dir():
        raise BnnRobustError(f"checkpoint {path} is a folder; give the .pt file.")
    return path


def check_output_file(option: str, path: Path | None) -> Path | None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a path
    whose parent is a file or not writable."""
    if path is None:
        return None
    if path.is_dir():
        raise BnnRobustError(f"{option} {path} is a folder; give a file path.")
    return _writable_parent(option, path)


def check_keep_options(records: Path | None, save_adv: Path | None) -> None:
    """Refuse, before any work, a ``--records`` path that is not .jsonl or .csv or a
    ``--save-adv`` path that is not .npz, or either where it cannot be written."""
    if records is not None and records.suffix not in (".jsonl", ".csv"):
        raise BnnRobustError(f"--records {records} must end in .jsonl (JSON lines) or .csv.")
    if save_adv is not None and save_adv.suffix != ".npz":
        raise BnnRobustError(f"--save-adv {save_adv} must end in .npz.")
    check_output_file("--records", records)
    check_output_file("--save-adv", save_adv)


def check_output_dir(option: str, path: Path | None) -> Path | None:
    """Refuse, before any work, an output folder that is a file or cannot be created."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise BnnRobustError(f"{option} {path} is a file; give a folder.")
    return _writable_parent(option, path)


def _writable_parent(option: str, path: Path) -> Path:
    """``path``, after checking that its deepest existing ancestor is a writable folder."""
    parent = path.parent.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BnnRobustError(f"{option} {path}: {parent} is a file, not a folder.")
    if not os.access(parent, os.W_OK):
        raise BnnRobustError(f"{option} {path}: cannot write in {parent} (permission denied).")
    return path


def print_flags(flags: list) -> None:
    """Each gradient-masking flag on a line (raised ones with their explanation)."""
    for flag in flags:
        mark = "[red]FLAG[/red]" if flag.raised else "[green]ok[/green]  "
        out.print(f"{mark} {flag.name}: {flag.evidence}")
        if flag.raised:
            out.print(f"      {flag.explanation}")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (``kill PID``, a batch scheduler's time limit) stops like
    Ctrl-C: finished units are kept and exported, running ones end, the command exits 130.
    Also where Ctrl-C cannot reach (a job started in the background ignores SIGINT)."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
