"""What follows an appraisal's state changes, in the same database transaction.

The appraisal and review services announce each change here; benefits, the outbox and
certificates listen. Listeners run inside the caller's transaction, so a state change and
everything that follows from it commit together or not at all (a crash between "decided" and
"notified" loses nothing).

Events:
- `appraisal.created`: submitted (the tier at submission decides entitlement and SLA);
- `appraisal.decided`: the model decided alone (status `decided`, path `auto`);
- `appraisal.finalized`: a final verdict: a person's (status `finalized`), or the model's when it
  decided alone (an automated decision is final unless a person later overturns it);
- `appraisal.overturned`: a final verdict changed by a later human review (`detail["previous"]`);
- `sla.breached`: a review task passed its due time (`detail["task"]`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from serving.db import Appraisal

EVENTS = (
    "appraisal.created",
    "appraisal.decided",
    "appraisal.finalized",
    "appraisal.overturned",
    "sla.breached",
)
Listener = Callable[[Session, Appraisal, dict[str, Any]], None]
_listeners: dict[str, list[Listener]] = defaultdict(list)


def on(event: str) -> Callable[[Listener], Listener]:
    """Register a listener: `@on("appraisal.finalized") def grant(session, appraisal, detail)`."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; events: {', '.join(EVENTS)}")

    def register(listener: Listener) -> Listener:
        if listener not in _listeners[event]:
            _listeners[event].append(listener)
        return listener

    return register


def emit(session: Session, event: str, appraisal: Appraisal, **detail: Any) -> None:
    """Run every listener of `event` in the caller's transaction; an exception rolls it back."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    for listener in list(_listeners[event]):
        listener(session, appraisal, detail)
