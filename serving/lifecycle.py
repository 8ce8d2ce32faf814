"""What follows an appraisal's state changes, in the same database transaction.

An appraisal's state machine (`serving.appraisals.status.move`, the one place its status
changes) announces each change to a `Lifecycle`, and the review service's SLA sweep announces
breaches; benefits, the outbox and certificates listen. Listeners run inside the caller's
transaction, so a state change and everything that follows from it commit together or not at
all (a crash between "decided" and "notified" loses nothing).

Events:
- `appraisal.created`: submitted (the tier at submission decides entitlement and SLA);
- `appraisal.decided`: the model decided alone (status `decided`, path `auto`);
- `appraisal.finalized`: a final verdict: a person's (status `finalized`), or the model's when it
  decided alone (an automated decision is final unless a person later overturns it);
- `appraisal.overturned`: a final verdict changed by a later human review (`detail["previous"]`);
- `sla.breached`: a review task passed its due time (`detail["task"]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from serving import certificates
from serving.benefits.ledger import Ledger
from serving.benefits.payments import Payments
from serving.db import Appraisal
from serving.outbox import events as outbox_events

EVENTS = (
    "appraisal.created",
    "appraisal.decided",
    "appraisal.finalized",
    "appraisal.overturned",
    "sla.breached",
)
Listener = Callable[[Session, Appraisal, dict[str, Any]], None]


class Lifecycle:
    """Listeners by event, in the order they were added."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {event: [] for event in EVENTS}

    def on(self, event: str, listener: Listener) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events: {', '.join(EVENTS)}")
        self._listeners[event].append(listener)

    def emit(self, session: Session, event: str, appraisal: Appraisal, **detail: Any) -> None:
        """Run every listener of `event` in the caller's transaction; an exception rolls it
        back."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        for listener in self._listeners[event]:
            listener(session, appraisal, detail)


def standard_lifecycle(ledger: Ledger) -> Lifecycle:
    """What every state change sets off in the service: the member's benefits first (payment,
    rewards, compensation), then the event to the membership platform, then the certificate."""
    lifecycle = Lifecycle()
    payments = Payments(ledger)
    lifecycle.on("appraisal.created", payments.pay_at_submission)
    lifecycle.on("appraisal.finalized", payments.settle_final_verdict)
    lifecycle.on("appraisal.overturned", payments.compensate_overturn)
    for event in ("appraisal.decided", "appraisal.finalized", "appraisal.overturned"):
        lifecycle.on(event, outbox_events.appraisal_listener(event))
    lifecycle.on("sla.breached", outbox_events.record_sla_breach)
    lifecycle.on("appraisal.finalized", certificates.issue_on_finalized)
    lifecycle.on("appraisal.overturned", certificates.issue_on_overturned)
    return lifecycle
