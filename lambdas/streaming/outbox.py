"""Adaptive batching across publishes: events for a connection that arrive while a post to it is in
flight travel together in the next frame (docs/protocol.md, "Batching and compression").

The first delivery to a connection claims it and posts at once, so an event that finds the connection
idle waits for nothing: at low rates every event goes out alone, as before. Deliveries that find it
claimed leave their events in its outbox and return. When the post in flight is answered, its sender
takes the outbox, releases the connection and posts what it held as one frame (or as few as fit): the
window is the round trip of one post, so the busier a connection, the more each frame carries. A
sender drains its connection once only, so no publish waits for more than one post after its own; a
delivery that comes during that last post claims the connection anew.

The outboxes are per process: they fold what one process delivers concurrently (in-process
publishers on many threads, several invocations an execution environment serves at once, the local
stack). Across Lambda execution environments, events committed together by the store's group commit
travel together because they are delivered together (docs/performance.md, "Adaptive batching").
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


@dataclass
class Held:
    """What waits for one connection while a post to it is in flight."""

    events: list[Envelope] = field(default_factory=list)
    types: frozenset[str] = frozenset()  # the union of what each delivery found it subscribed to
    found_by: list[str] = field(default_factory=list)
    encoded: list[Encoded] = field(default_factory=list)  # the delivering calls' encodings, for reuse

    def ordered(self) -> list[Envelope]:
        """Each event once, in seq order per stream (as a frame carries them)."""
        unique = {(event.stream, event.seq): event for event in self.events}
        return [unique[position] for position in sorted(unique)]


class Outboxes:
    def __init__(self, fold: bool = True) -> None:
        """Without `fold`, every delivery posts for itself (as before outboxes, for comparison)."""
        self._fold = fold
        self._lock = threading.Lock()
        self._claimed: dict[str, Held] = {}  # connections with a post in flight, and what waits for them

    def claim(self, recipient: Recipient, encoded: Encoded) -> bool:
        """True: the connection is the caller's to post to now, and to release afterwards. False: a
        post to it is in flight, and the recipient's events wait for that sender's next frame."""
        if not self._fold:
            return True
        with self._lock:
            held = self._claimed.get(recipient.connection_id)
            if held is None:
                self._claimed[recipient.connection_id] = Held()
                return True
            held.events.extend(recipient.events)
            # The union, as FanOut.audience takes it: a `prev` too high costs a replay, too low a loss.
            held.types |= recipient.types
            held.found_by.extend(name for name in recipient.found_by if name not in held.found_by)
            if all(known is not encoded for known in held.encoded):
                held.encoded.append(encoded)
            return False

    def release(self, connection_id: str) -> Held:
        """Give the connection up and take what waits for it (maybe nothing): the caller posts that,
        or, if the connection failed, leaves it to the client's replay."""
        if not self._fold:
            return Held()
        with self._lock:
            return self._claimed.pop(connection_id)
