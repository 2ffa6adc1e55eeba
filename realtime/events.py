"""What the API publishes, and when: always after the change committed (the callers run
these after their write transaction returned), never the content itself beyond a short
wake-up (docs/api/realtime.md). With no broker configured every function is a no-op.

Notifications are created deep inside other transactions (social/notify.py). `collecting()`
opens a per-request list in a context variable, `notify.add` appends to it through
`notification_created`, and the API's middleware publishes the list once the handler
returned, that is after its transaction committed; a handler that failed publishes nothing.

A write that may be rolled back while its caller goes on (a like whose COMMIT fails is
taken as a concurrent like, and the request succeeds) runs its transaction inside
`staged()`: what it records reaches the request's list only when the block ends without
an exception, that is once the transaction committed. A handler whose write committed and
which has more to do calls `publish_committed` at once (follows, likes, comments), so the
wake-up leaves at commit, not when the response is ready.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from realtime import topics
from realtime.broker import Broker

# Notifications recorded by one request, held until its handler returned.
NOTIFICATIONS_PER_REQUEST_MAX: Final = 1000


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    notification_id: int
    user_id: int
    kind: str
    actor_id: int
    post_id: int | None
    comment_id: int | None


_pending: contextvars.ContextVar[list[NotificationEvent] | None] = contextvars.ContextVar(
    "pinhole_notifications", default=None
)


def notification_created(event: NotificationEvent) -> None:
    """Called where a notification row is written; held until the request's commit."""
    pending = _pending.get()
    if pending is not None and len(pending) < NOTIFICATIONS_PER_REQUEST_MAX:
        pending.append(event)


@contextlib.contextmanager
def collecting() -> Iterator[list[NotificationEvent]]:
    pending: list[NotificationEvent] = []
    token = _pending.set(pending)
    try:
        yield pending
    finally:
        _pending.reset(token)


@contextlib.contextmanager
def staged() -> Iterator[None]:
    """Holds the notifications recorded inside the block (around one write transaction)
    apart from the request's, and hands them over only when the block ends normally: a
    transaction that rolled back publishes nothing, even if its caller catches the error
    and the request succeeds."""
    outer = _pending.get()
    if outer is None:  # no request collects (a job, a test): nothing to hold apart
        yield
        return
    held: list[NotificationEvent] = []
    token = _pending.set(held)
    try:
        yield
    finally:
        _pending.reset(token)
    outer.extend(held[: max(0, NOTIFICATIONS_PER_REQUEST_MAX - len(outer))])


def publish_committed(broker: Broker | None) -> None:
    """Publishes the notifications this request recorded so far, and forgets them: for a
    handler whose write transaction has committed and which has more to do before it
    answers (a follow's feed backfill), so the wake-up does not wait for that."""
    pending = _pending.get()
    if pending:
        publish_notifications(broker, pending)
        pending.clear()


def publish_notifications(broker: Broker | None, events: list[NotificationEvent]) -> None:
    if broker is None:
        return
    for e in events:
        broker.publish(
            topics.notifications(e.user_id),
            topics.payload(
                "notification",
                notification_id=e.notification_id,
                kind=e.kind,
                actor_id=e.actor_id,
                post_id=e.post_id,
                comment_id=e.comment_id,
            ),
        )


def message_sent(
    broker: Broker | None,
    *,
    thread_id: int,
    message_id: int,
    seq: int,
    change_seq: int,
    sender_id: int,
    recipients: tuple[int, ...],
) -> None:
    """A new message: a wake-up on each recipient's inbox topic (and the sender's other
    devices)."""
    if broker is None:
        return
    body = topics.payload(
        "message",
        thread_id=thread_id,
        message_id=message_id,
        sender_id=sender_id,
        seq=seq,
        change_seq=change_seq,
    )
    for user in (*recipients, sender_id):
        broker.publish(topics.inbox(user), body)


def thread_event(
    broker: Broker | None,
    kind: str,
    *,
    thread_id: int,
    actor_id: int,
    recipients: tuple[int, ...],
    message_id: int | None = None,
    seq: int | None = None,
    change_seq: int | None = None,
    include_actor: bool = True,
) -> None:
    """A reaction, an unsend, a read receipt or typing, on each member's thread topic."""
    if broker is None:
        return
    fields: dict[str, object] = {"thread_id": thread_id, "user_id": actor_id}
    if message_id is not None:
        fields["message_id"] = message_id
    if seq is not None:
        fields["seq"] = seq
    if change_seq is not None:
        fields["change_seq"] = change_seq
    body = topics.payload(kind, **fields)
    for user in (*recipients, *((actor_id,) if include_actor else ())):
        broker.publish(topics.thread(user, thread_id), body)
