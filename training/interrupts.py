"""Ctrl-C and SIGTERM stop a run cleanly: both become KeyboardInterrupt while training, so the
loop can keep the last checkpoint, close the MLflow run as KILLED and exit 130."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def interrupts_stop_training() -> Iterator[None]:
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    # A job started in the background by a shell script inherits SIGINT ignored; Ctrl-C
    # (or `kill -INT`) must still stop it cleanly.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
