"""Commands about data and models: ``datasets``, ``models``, ``summary``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bnnrobust.cli.options import ParamOpt, RootOpt, out, parse_params
from bnnrobust.data import REGISTRY, status
from bnnrobust.models import available, build
from bnnrobust.nn import summary as model_summary
from bnnrobust.train import load as load_checkpoint


def datasets(root: RootOpt = None,
             verify: Annotated[bool, typer.Option(
                 "--verify/--no-verify",
                 help="Check each file's md5 (slower the first time; remembered after).")] = True,
             ) -> None:
    """List each dataset: verified / present / missing / corrupt, and its folder."""
    table = Table("dataset", "state", "folder", "detail")
    for name in REGISTRY:
        st = status(name, root=root, verify=verify)
        color = {"verified": "green", "present": "cyan", "missing": "yellow"}.get(st.state, "red")
        table.add_row(name, f"[{color}]{st.state}", str(st.folder), st.detail)
    out.print(table)


def models() -> None:
    """List the model zoo with every parameter, its default and allowed values."""
    for name, item in available().items():
        table = Table(title=f"{name}: {item.description}", title_justify="left")
        for col in ("parameter", "default", "allowed", "meaning"):
            table.add_column(col)
        for pname, p in item.params.items():
            allowed = ", ".join(map(str, p.choices)) if p.choices else (
                f"{p.kind.__name__} >= {p.minimum}" if p.kind is int and p.minimum is not None
                else p.kind.__name__)
            table.add_row(pname, str(p.default), allowed, p.help)
        out.print(table)


def summary(model: Annotated[str, typer.Argument(help="Zoo model name or a checkpoint path.")],
            param: ParamOpt = None) -> None:
    """Count binary and float parameters and the memory in bits of a model."""
    net = (load_checkpoint(model).model if Path(model).is_file()
           else build(model, **parse_params(param)))
    out.print(str(model_summary(net)))


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command()(datasets)
    app.command()(models)
    app.command()(summary)
