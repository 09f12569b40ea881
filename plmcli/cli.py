"""The plm command line: one registration line per command, the root options, and main().

main() turns a PlmError into one ``Error: ...`` line on stderr and its exit code (2 bad input,
1 runtime or I/O failure); ``--debug`` shows the traceback instead. This module and the command
modules import only the standard library and typer, so ``plm --help`` answers at once.
"""

import sys
import warnings
from typing import Annotated

import typer

from plmcli import __version__, console, interrupts
from plmcli.commands import audit, check, evaluate, export, fill_mask, finetune, predict, pretrain, serve, tune
from plmcli.errors import RUNTIME_FAILURE, Interrupted, PlmError

app = typer.Typer(
    name="plm",
    help="Take a BERT-style model through its life on your data: pretrain, finetune, tune, predict, evaluate, "
    "serve, audit.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("pretrain", no_args_is_help=True)(pretrain.pretrain)
app.command("finetune", no_args_is_help=True)(finetune.finetune)
app.command("predict")(predict.predict)
app.command("evaluate", no_args_is_help=True)(evaluate.evaluate)
app.command("check", no_args_is_help=True)(check.check)
app.command("fill-mask", no_args_is_help=True)(fill_mask.fill_mask)
app.command("serve")(serve.serve)
app.command("audit", no_args_is_help=True)(audit.audit)
app.command("tune", no_args_is_help=True)(tune.tune)
app.command("export", no_args_is_help=True)(export.export)

_debug = False


def _show_version(value: bool) -> None:
    if value:
        console.out(f"plm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    """Take a BERT-style model through its life on your data: pretrain, finetune, tune, predict, evaluate."""
    global _debug
    _debug = debug


def main() -> None:
    """Console-script entry point: run the app, turning plm's errors into one line and an exit code."""
    interrupts.install()
    warnings.showwarning = console.one_line_warning
    try:
        sys.exit(app(standalone_mode=False, prog_name="plm"))
    except (PlmError, Interrupted) as error:
        if _debug:
            raise
        console.error(str(error))
        sys.exit(error.exit_code)
    except OSError as error:  # disk full, permission denied, a file vanishing mid-run
        if _debug:
            raise
        console.error(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
        sys.exit(RUNTIME_FAILURE)
    except Exception as error:
        if not _is_usage_error(error):
            raise
        message = error.format_message()
        if "\n" in message:  # a command given without arguments: its help
            print(message, file=sys.stderr)
        else:
            console.error(message)
        sys.exit(error.exit_code)


def _is_usage_error(error: Exception) -> bool:
    """A bad option or argument, as typer reports it (an unknown option, a value out of range, ...)."""
    return hasattr(error, "format_message") and isinstance(getattr(error, "exit_code", None), int)
