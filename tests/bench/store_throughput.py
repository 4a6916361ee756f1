"""`make bench`: publish throughput of the event store on the local moto server, by number of
concurrent publishers on one stream, against the atomic-counter alternative it was chosen over.

Prints one table; record it in docs/performance.md with the date and machine. Loopback only,
bounded by event count.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from local.aws import moto_client
from stacks.config import load
from stacks.table_layouts import EVENTS, create_table
from streaming.events import NewEvent, parse_new_event
from streaming.store import EventStore
from tests.conftest import signal

Publish = Callable[[NewEvent], int]


def head_commit(client: Any, table: str, settings: Any) -> tuple[Publish, Callable[[], int]]:
    """The store as shipped: claim, copy the previous event, commit by conditional head update, record."""
    store = EventStore(client, table, settings.streams_by_type, settings.replay_window_seconds)
    conflicts = 0

    def publish(event: NewEvent) -> int:
        nonlocal conflicts
        [result] = store.append([event], "bench")
        conflicts += result.conflicts
        return result.seq

    return publish, lambda: conflicts


def counter_append(client: Any, table: str, settings: Any) -> tuple[Publish, Callable[[], int]]:
    """The alternative: atomic counter (UpdateItem ADD), then a conditional put at the counter's value.
    Faster under contention, but a publisher dying between the two leaves a permanent hole unless
    readers detect and fill it; measured here for its placement cost only (no idempotency claim)."""

    def publish(event: NewEvent) -> int:
        response = client.update_item(
            TableName=table,
            Key={"pk": {"S": "counter#market"}, "sk": {"N": "0"}},
            UpdateExpression="ADD seq :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        seq = int(response["Attributes"]["seq"]["N"])
        client.put_item(
            TableName=table,
            Item={"pk": {"S": "counted#market"}, "sk": {"N": str(seq)}, "id": {"S": event.id}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        return seq

    return publish, lambda: 0


def run(moto_url: str, variant: Any, publishers: int, events_each: int, table: str) -> dict[str, float]:
    settings = load("dev").runtime_settings(table)
    create_table(moto_client("dynamodb", moto_url), table, EVENTS)
    batches = [
        [parse_new_event(signal(), settings.catalog, settings.max_event_bytes) for _ in range(events_each)]
        for _ in range(publishers)
    ]
    seqs: list[int] = []
    conflict_counters: list[Callable[[], int]] = []
    lock = threading.Lock()

    def worker(batch: list[NewEvent]) -> None:
        client = moto_client("dynamodb", moto_url)
        publish, conflicts = variant(client, table, settings)
        with lock:
            conflict_counters.append(conflicts)
        mine = [publish(event) for event in batch]
        with lock:
            seqs.extend(mine)

    threads = [threading.Thread(target=worker, args=(batch,)) for batch in batches]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = publishers * events_each
    assert sorted(seqs) == list(range(1, total + 1)), "sequence has holes or duplicates"
    return {
        "events_per_second": total / elapsed,
        "ms_per_event": 1000 * elapsed / total,
        "conflicts_per_event": sum(counter() for counter in conflict_counters) / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=800, help="events per run, split over the publishers")
    args = parser.parse_args()
    moto = subprocess.Popen(
        [sys.executable, "-m", "local.aws", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert moto.stdout is not None
        moto_url = moto.stdout.readline().strip()
        print("| variant | publishers | events | events/s | ms/event | lost commits/event |")
        print("|---|---|---|---|---|---|")
        for name, variant in (
            ("head commit (shipped)", head_commit),
            ("atomic counter", counter_append),
        ):
            for publishers in (1, 2, 4, 8):
                table = f"bench-{variant.__name__}-{publishers}"
                figures = run(moto_url, variant, publishers, args.events // publishers, table)
                print(
                    f"| {name} | {publishers} | {args.events} | {figures['events_per_second']:.0f} | "
                    f"{figures['ms_per_event']:.1f} | {figures['conflicts_per_event']:.2f} |",
                    flush=True,
                )
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
