"""Graceful degradation: superseded events coalesced by `key` for a subscriber that cannot keep up
(docs/reliability.md, "Graceful degradation"). Used by both transports, on live delivery only:
replay is never coalesced, so a subscriber can always rebuild the full history from a cursor.

Among the events pending for one delivery to one subscriber, an event of a coalescible type with a
`key` that a later event of the same type and key supersedes is left out; the later one goes, with
`coalesced` counting the events it stands for. The events after a left-out one get a `prev` that
skips it, so the client's resume rule (docs/protocol.md) sees no gap and asks for no replay. An event
is left out only if the event after it (among the subscriber's types) is in the same delivery: then
every `prev` that names it is rewritten here, and no other delivery can name it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from streaming.events import Envelope
from streaming.observability import count


@dataclass(frozen=True)
class Coalescing:
    """The configured policy: which types may be coalesced, and the overload signal's threshold."""

    types: frozenset[str]  # never a must-deliver type (checked at synth and at cold start)
    above_events: int  # more events than this pending for one subscriber: it is overloaded

    def overloaded(self, pending: int) -> bool:
        return pending > self.above_events

    def apply(self, events: Sequence[Envelope], subscriber_types: frozenset[str]) -> Coalesced:
        """`events` (in seq order per stream) as they go to a subscriber to `subscriber_types`."""
        return coalesce(events, subscriber_types, self.types)


@dataclass(frozen=True)
class Coalesced:
    events: list[Envelope]  # what is sent, in the order given
    left_out: Counter[str]  # per type, the events not sent


def record(left_out: Counter[str], transport: str) -> None:
    """`EventsCoalesced` by transport and type: the events left out, as either transport counts them."""
    for event_type, events in sorted(left_out.items()):
        count("EventsCoalesced", events, transport=transport, type=event_type)


def coalesce(
    events: Sequence[Envelope], subscriber_types: frozenset[str], coalescible: frozenset[str]
) -> Coalesced:
    """The rule above, for one subscriber and one delivery."""
    prevs = [event.prev_among(subscriber_types) for event in events]
    followed = {(event.stream, prev) for event, prev in zip(events, prevs, strict=True)}  # successor here
    last_of = {(event.type, event.key): event.seq for event in events}
    skipped: dict[tuple[str, int], int] = {}  # a left-out event's position -> the prev it passes on
    waiting: Counter[tuple[str, str | None]] = Counter()  # left out, per type and key, not yet counted
    left_out: Counter[str] = Counter()
    sent: list[Envelope] = []
    for event, own_prev in zip(events, prevs, strict=True):
        prev = own_prev
        while (event.stream, prev) in skipped:
            prev = skipped[(event.stream, prev)]
        identity = (event.type, event.key)
        if (
            event.type in coalescible
            and event.key is not None
            and last_of[identity] > event.seq
            and (event.stream, event.seq) in followed
        ):
            skipped[(event.stream, event.seq)] = prev
            waiting[identity] += 1 + event.coalesced  # what it stood for itself, if coalesced before
            left_out[event.type] += 1
            continue
        stands_for = waiting.pop(identity, 0)
        if prev == own_prev and not stands_for:
            sent.append(event)
        else:
            sent.append(delivered_as(event, prev, stands_for))
    return Coalesced(sent, left_out)


def delivered_as(event: Envelope, prev: int, coalesced: int) -> Envelope:
    """The event as this subscriber gets it: `prev` fixed, whatever types it is encoded for (no type
    head can raise it again), and the count of the events it stands for."""
    return dataclasses.replace(event, prev=prev, type_heads={}, coalesced=event.coalesced + coalesced)
