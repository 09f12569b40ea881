"""PlmError: a failure whose message is fit to show a user as is.

Raised where the context is known ("missing column 'label' in reviews.csv; found: text, stars.
Use --label-column to pick one."), turned into one ``Error: ...`` line and an exit code by
``plmcli.cli.main``. Anything else that escapes is a bug and keeps its traceback.
"""

BAD_INPUT = 2  # a file, column, label or option the user must fix
RUNTIME_FAILURE = 1  # disk full, a broken model file, a failed download


class PlmError(Exception):
    """A user-facing failure; ``exit_code`` is 2 for bad input, 1 for a runtime or I/O failure."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run stops, removes what it had not finished, exits 128 + signal.

    The message says what was kept: a training run names its checkpoint and the command that resumes it.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signal_number: int, signal_name: str, message: str = "") -> None:
        super().__init__(message or f"interrupted by {signal_name}; unfinished output was removed.")
        self.exit_code = 128 + signal_number


def undecodable(name: str, raw: bytes, encoding: str, hint: str) -> PlmError:
    """The one-line error for bytes that are not ``encoding`` text: the file, the line, the reason, a fix."""
    try:
        raw.decode(encoding)
        start, reason = 0, "undecodable"
    except UnicodeDecodeError as exc:
        start, reason = exc.start, exc.reason
    line = raw.count(b"\n", 0, start) + 1
    shown = "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf-8-sig", "utf8") else encoding
    return PlmError(f"{name} line {line} is not {shown} text ({reason}); {hint}")
