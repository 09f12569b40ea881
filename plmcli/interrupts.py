"""SIGINT and SIGTERM: stop at once, or at the next training step with a checkpoint saved.

Outside training a signal stops the command at once (what was staged is removed). While a
training loop runs inside ``graceful()``, the first signal only asks it to stop: the loop saves
one complete checkpoint at the end of the current step and the command exits 130 / 143 with
the line that resumes it. A second signal stops at once, still without leaving a partial
directory under a final name.
"""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

from plmcli.errors import Interrupted

_listening = False  # inside graceful(): a first signal is a request, not an exit
_received: Optional[int] = None  # the signal that asked the training loop to stop


def _handle(signal_number: int, frame) -> None:
    global _received
    name = signal.Signals(signal_number).name
    if _listening and _received is None:
        _received = signal_number  # the training loop says so at the end of the step (no printing here)
        return
    # Not KeyboardInterrupt, which click would turn into "Aborted!" and exit code 1.
    raise Interrupted(signal_number, name)


def install() -> None:
    """Route SIGINT and SIGTERM through plm (called once by the console script)."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def requested() -> Optional[int]:
    """The signal number that asked training to stop, or None."""
    return _received


@contextmanager
def graceful() -> Iterator[None]:
    """Within this block the first SIGINT / SIGTERM is recorded for the training loop instead of raised."""
    global _listening, _received
    _listening, _received = True, None
    try:
        yield
    finally:
        _listening = False
