// The live page's list model (live/clusters.js): bursts become one row per type, the list is capped.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Clusters } from "../live/clusters.js";

const events = (count, type = "signal.created", from = 1) =>
  Array.from({ length: count }, (_, i) => ({ id: `${type}-${from + i}`, type, stream: "market", seq: from + i, prev: from + i - 1, data: {} }));

test("a burst of one type: the first few are rows of their own, the rest one row that says how many", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add(events(17), 0);
  assert.equal(added.length, 6);
  const [cluster, ...own] = added;
  assert.deepEqual([cluster.kind, cluster.type, cluster.count, cluster.first.seq, cluster.latest.seq], ["cluster", "signal.created", 12, 6, 17]);
  assert.deepEqual(own.map((row) => row.event.seq), [5, 4, 3, 2, 1]);
});

test("a burst that arrives over several frames clusters too", () => {
  const clusters = new Clusters({ threshold: 5, windowMs: 1000 });
  const added = [];
  for (let frame = 0; frame < 10; frame++) added.push(...clusters.add(events(2, "signal.created", 2 * frame + 1), frame * 16).added);
  assert.equal(added.filter((row) => row.kind === "event").length, 5);
  assert.equal(added.filter((row) => row.kind === "cluster").length, 1);
  assert.deepEqual([clusters.rows[0].count, clusters.rows[0].first.seq, clusters.rows[0].latest.seq], [15, 6, 20]);
});

test("a few events are rows of their own, newest first", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add(events(3), 0);
  assert.deepEqual(added.map((row) => row.kind === "event" && row.event.seq), [3, 2, 1]);
});

test("an open cluster takes the next events of its type until it has been quiet for the window", () => {
  const clusters = new Clusters({ threshold: 5, windowMs: 1000 });
  const [cluster] = clusters.add(events(10), 0).added;
  assert.equal(cluster.count, 5);
  const next = clusters.add(events(2, "signal.created", 11), 500);
  assert.deepEqual([next.added, next.updated], [[], [cluster]]);
  assert.equal(cluster.count, 7);
  const later = clusters.add(events(2, "signal.created", 13), 1600);
  assert.deepEqual(later.added.map((row) => row.kind), ["event", "event"]);
  assert.equal(cluster.count, 7);
});

test("types cluster apart: a burst of one does not swallow a single event of another", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add([...events(8), ...events(1, "risk.alert")], 0);
  assert.deepEqual(added.slice(0, 2).map((row) => [row.kind, row.type]), [["event", "risk.alert"], ["cluster", "signal.created"]]);
});

test("history (the last N on load) is shown event by event", () => {
  const clusters = new Clusters({ threshold: 5 });
  const { added } = clusters.add(events(20), 0, { history: true });
  assert.equal(added.length, 20);
  assert.ok(added.every((row) => row.kind === "event" && row.history));
  assert.equal(clusters.add(events(3, "signal.created", 21), 1).added.length, 3); // live: not a burst yet
});

test("the list is capped: the oldest rows go", () => {
  const clusters = new Clusters({ threshold: 1000, maxRows: 50 });
  for (let i = 0; i < 30; i++) clusters.add(events(3, "signal.created", 3 * i + 1), i * 10_000);
  assert.equal(clusters.rows.length, 50);
  const { removed } = clusters.add(events(1, "signal.created", 500), 400_000);
  assert.equal(removed.length, 1);
  assert.equal(clusters.rows[0].event.seq, 500);
});
