// The live page's list model (live/clusters.js): bursts become one row per type, the list is capped.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Clusters } from "../live/clusters.js";

const events = (count, type = "signal.created", from = 1) =>
  Array.from({ length: count }, (_, i) => ({ id: `${type}-${from + i}`, type, stream: "market", seq: from + i, prev: from + i - 1, data: {} }));

test("a burst of one type is one row that says how many", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add(events(12), 0);
  assert.equal(added.length, 1);
  assert.deepEqual([added[0].kind, added[0].type, added[0].count, added[0].latest.seq], ["cluster", "signal.created", 12, 12]);
});

test("a few events are rows of their own, newest first", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add(events(3), 0);
  assert.deepEqual(added.map((row) => row.kind === "event" && row.event.seq), [3, 2, 1]);
});

test("an open cluster takes the next events of its type until it has been quiet for the window", () => {
  const clusters = new Clusters({ threshold: 5, windowMs: 1000 });
  const [cluster] = clusters.add(events(10), 0).added;
  const next = clusters.add(events(2, "signal.created", 11), 500);
  assert.deepEqual([next.added, next.updated], [[], [cluster]]);
  assert.equal(cluster.count, 12);
  const later = clusters.add(events(2, "signal.created", 13), 1600);
  assert.equal(later.added.length, 2);
  assert.equal(cluster.count, 12);
});

test("types cluster apart: a burst of one does not swallow a single event of another", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add([...events(8), ...events(1, "risk.alert")], 0);
  assert.deepEqual(added.map((row) => [row.kind, row.type]), [["event", "risk.alert"], ["cluster", "signal.created"]]);
});

test("history (the last N on load) is shown event by event", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add(events(20), 0, { history: true });
  assert.equal(added.length, 20);
  assert.ok(added.every((row) => row.kind === "event" && row.history));
});

test("the list is capped: the oldest rows go", () => {
  const clusters = new Clusters({ threshold: 1000, maxRows: 50 });
  for (let i = 0; i < 30; i++) clusters.add(events(3, "signal.created", 3 * i + 1), i * 10_000);
  assert.equal(clusters.rows.length, 50);
  const { removed } = clusters.add(events(1, "signal.created", 500), 400_000);
  assert.equal(removed.length, 1);
  assert.equal(clusters.rows[0].event.seq, 500);
});
