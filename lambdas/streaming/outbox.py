"""Adaptive batching across publishes: events for a connection that arrive while posts to it are in
flight travel together in a later frame (docs/protocol.md, "Batching and compression").

A delivery claims the connection and posts at once while fewer than POSTS_IN_FLIGHT claimed posts to
it are in flight, so an event waits for nothing at low rates: every event goes out alone, as before.
Deliveries that find the connection at that limit leave their events in its outbox, without waiting
for a worker thread. When a claimed post is answered, its sender releases its claim, takes the
outbox and posts what it held as one frame (or as few as fit): the window is the round trip of a
post, so the busier a connection, the more each frame carries. A sender drains once only, so no
publish waits for more than one post after its own, and nothing is ever left in an outbox without a
claimed post in flight whose sender will take it.

The outboxes are per process: they fold what one process delivers concurrently (a producer that
publishes in-process from many threads, the local stack). A Lambda execution environment serves one
invocation at a time, so publish invocations never share them; docs/performance.md ("Adaptive
batching across publishes") says what batches across environments.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streaming.codec import EncodedKey
from streaming.events import Envelope

if TYPE_CHECKING:  # fanout imports this module
    from streaming.fanout import Recipient

Encoded = MutableMapping[EncodedKey, bytes]  # events already encoded, as codec.encoded_for keeps them
# Claimed posts to one connection in flight at once before events wait: 2, so that a connection
# posted to about once a round trip does not make every other event wait for the one before it.
POSTS_IN_FLIGHT = 2


@dataclass
class Held:
    """What waits for one connection while posts to it are in flight."""

    posting: int = 0  # claimed posts in flight
    events: list[Envelope] = field(default_factory=list)
    types: frozenset[str] = frozenset()  # the union of what each delivery found it subscribed to
    found_by: list[str] = field(default_factory=list)
    encoded: list[Encoded] = field(default_factory=list)  # the delivering calls' encodings, for reuse

    def ordered(self) -> list[Envelope]:
        """Each event once, in seq order per stream (as a frame carries them)."""
        unique = {(event.stream, event.seq): event for event in self.events}
        return [unique[position] for position in sorted(unique)]


class Outboxes:
    def __init__(self, posts_in_flight: int | None = POSTS_IN_FLIGHT) -> None:
        """With `posts_in_flight` None, every delivery posts for itself (as before outboxes)."""
        self._posts = posts_in_flight
        self._lock = threading.Lock()
        self._claimed: dict[str, Held] = {}  # connections with a post in flight, and what waits for them

    def claim(self, recipient: Recipient, encoded: Encoded) -> bool:
        """True: the caller posts to the connection now, and releases it afterwards. False: posts to it
        are in flight, and the recipient's events wait for the next of their senders to take them."""
        if self._posts is None:
            return True
        with self._lock:
            held = self._claimed.get(recipient.connection_id)
            if held is None:
                held = self._claimed[recipient.connection_id] = Held()
            if held.posting < self._posts:
                held.posting += 1
                return True
            held.events.extend(recipient.events)
            # The union, as FanOut.audience takes it: a `prev` too high costs a replay, too low a loss.
            held.types |= recipient.types
            held.found_by.extend(name for name in recipient.found_by if name not in held.found_by)
            if all(known is not encoded for known in held.encoded):
                held.encoded.append(encoded)
            return False

    def release(self, connection_id: str) -> Held:
        """Give up a claim on the connection and take what waits for it (maybe nothing): the caller
        posts that, or, if the connection failed, leaves it to the client's replay."""
        if self._posts is None:
            return Held()
        with self._lock:
            held = self._claimed.pop(connection_id)
            if held.posting > 1:  # the others still posting keep their claims, not what waited
                self._claimed[connection_id] = Held(posting=held.posting - 1)
            return held
