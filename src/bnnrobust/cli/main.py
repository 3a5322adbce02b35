"""The ``bnnrobust`` application: its commands, the command line as people type it, and errors.

Options may come before or after positional arguments; an option that takes several values
(``--eps 0.1 0.2 0.3``) takes the value after it and then every following argument that is a
number, so ``certify --eps 0.01 CKPT`` reads one budget and the checkpoint. A single-value
option given twice, an unknown command or option, a value of the wrong type or a missing
argument is a usage error: one paragraph on stderr, exit status 2, never a traceback. So is
every bad input the library refuses (a :class:`~bnnrobust.errors.BnnRobustError`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from bnnrobust import progress
from bnnrobust.cli import attacks, data, exact, experiments, training
from bnnrobust.cli import audit as audit_commands
from bnnrobust.cli.options import err
from bnnrobust.errors import BnnRobustError

try:  # typer >= 0.24 bundles its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on the public click
    from click.exceptions import ClickException, NoArgsIsHelpError

app = typer.Typer(
    help="How robust are binarized and low-precision neural networks? Train the papers' "
         "models, attack them, defend them, and reproduce the papers' tables. Long commands "
         "log their progress as plain lines when stderr is not a terminal; the global option "
         "--log-file PATH (anywhere on the line) also appends them to PATH.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (data, training, attacks, exact, experiments, audit_commands):
    module.register(app)


class UsageError(BnnRobustError):
    """A command line that cannot be read."""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def normalize(argv: list[str]) -> list[str]:
    """Rewrite ``argv`` for the parser (see the module doc): ``--opt=a`` → ``--opt a``;
    ``--multi a b c`` → ``--multi a --multi b --multi c``; a repeated single-value option is
    a :class:`UsageError`."""
    command = typer.main.get_command(app)
    name = next((a for a in argv if not a.startswith("-")), None)
    sub = getattr(command, "commands", {}).get(name) if name else None
    if sub is None:
        return list(argv)
    multi, single = set(), set()
    for param in sub.params:
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "is_flag", False):
            continue
        (multi if param.multiple else single).update(param.opts)
    out: list[str] = []
    current: str | None = None
    seen: set[str] = set()
    args = iter(argv)
    for arg in args:
        if arg == "--":
            out.append(arg)
            out.extend(args)
            break
        option, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if option in multi:
            current = option
            out.append(option)
            if eq:
                out.append(value)
            else:
                following = next(args, None)
                if following is not None:
                    out.append(following)
            continue
        if current is not None and _is_number(arg):
            out += [current, arg]
            continue
        current = None
        if option in single:
            if option in seen:
                raise UsageError(f"{option} takes one value and was given more than once; "
                                 f"give it once (see 'bnnrobust {name} --help').")
            seen.add(option)
            out.append(option)
            if eq:
                out.append(value)
            continue
        out.append(arg)
    return out


def log_file_option(argv: list[str]) -> tuple[list[str], Path | None]:
    """``argv`` without the global ``--log-file PATH`` (anywhere on the line), and PATH."""
    rest, path = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest.append(arg)
            rest.extend(args)
            break
        if arg == "--log-file" or arg.startswith("--log-file="):
            if path is not None:
                raise UsageError("--log-file takes one value and was given more than once.")
            value = arg.partition("=")[2] if "=" in arg else next(args, None)
            if not value:
                raise UsageError("--log-file needs a file path (e.g. --log-file run.log).")
            path = Path(value)
            if path.is_dir():
                raise UsageError(f"--log-file {path} is a folder; give a file path.")
            continue
        rest.append(arg)
    return rest, path


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; bad input and usage errors end in one message and exit 2.
    Progress lines go to stderr when it is not a terminal, and to ``--log-file PATH`` (a
    global option, anywhere on the line) when given."""
    args = sys.argv[1:] if argv is None else argv
    try:
        args, log_file = log_file_option(args)
        progress.configure(log_file=log_file, stream=sys.stderr)
        code = app(args=normalize(args), prog_name="bnnrobust", standalone_mode=False)
    except BnnRobustError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(0)
    except ClickException as exc:  # usage errors: one paragraph, like every other error
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "bnnrobust"
        message = exc.format_message().rstrip(".")
        err.print(f"[red]error:[/red] {escape(message)} (see '{where} --help').",
                  highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
