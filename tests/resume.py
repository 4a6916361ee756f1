"""An application that records what docs/protocol.md's resume rule (clients/ordering.py) hands it:
the chaos run and the property tests judge the server by it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clients.ordering import Event, Ordering


class Application(Ordering):
    def __init__(self) -> None:
        super().__init__()
        self.processed: list[dict[str, Any]] = []

    def receive(self, event: Event) -> None:
        self.processed += self.offer(event)

    def adopt(self, position: Mapping[str, int]) -> list[Event]:
        released = super().adopt(position)
        self.processed += released
        return released
