// @ts-check
/**
 * The live page's list model: newest rows first, bursts clustered instead of flooding the list. Up to
 * `threshold` events of a type within `windowMs` are rows of their own; beyond that they become one row,
 * "12 new signal.created", which takes every further event of its type until the type has been quiet
 * for `windowMs`. The list is capped at `maxRows`. Pure: no DOM, so it is tested in Node; the page
 * renders the changes it returns.
 */

/** @typedef {import("../streaming.js").StreamEvent} StreamEvent */
/** @typedef {{id: number, type: string, kind: "event", event: StreamEvent, history: boolean}} EventRow */
/** @typedef {{id: number, type: string, kind: "cluster", count: number, first: StreamEvent,
 *   latest: StreamEvent, updatedAt: number}} ClusterRow */
/** @typedef {EventRow | ClusterRow} Row */
/** @typedef {{added: Row[], updated: Row[], removed: Row[]}} Changes added: newest first */

export class Clusters {
  /** @param {{threshold?: number, windowMs?: number, maxRows?: number}} [options] */
  constructor({ threshold = 5, windowMs = 2000, maxRows = 200 } = {}) {
    this.threshold = threshold;
    this.windowMs = windowMs;
    this.maxRows = maxRows;
    /** @type {Row[]} newest first */
    this.rows = [];
    /** @type {Map<string, ClusterRow>} the cluster each type's next events join, while it is open */
    this._open = new Map();
    /** @type {Map<string, number[]>} per type, when its latest rows of their own were added */
    this._recent = new Map();
    this._nextId = 1;
  }

  /**
   * One batch of events, in arrival order; what changed in the list.
   * @param {StreamEvent[]} events @param {number} now ms @param {{history?: boolean}} [options]
   *   history: the "last N" on load, shown one by one
   * @returns {Changes}
   */
  add(events, now, { history = false } = {}) {
    /** @type {Changes} */
    const changes = { added: [], updated: [], removed: [] };
    /** @type {Map<string, StreamEvent[]>} */
    const byType = new Map();
    for (const event of events) {
      if (!byType.has(event.type)) byType.set(event.type, []);
      byType.get(event.type)?.push(event);
    }
    /** @type {Row[]} oldest first */
    const added = [];
    for (const [type, group] of byType) {
      const open = this._open.get(type);
      if (!history && open && now - open.updatedAt < this.windowMs) {
        open.count += group.length;
        open.latest = group[group.length - 1];
        open.updatedAt = now;
        if (!changes.updated.includes(open)) changes.updated.push(open);
        continue;
      }
      const recent = (this._recent.get(type) ?? []).filter((at) => now - at < this.windowMs);
      const own = history ? group.length : Math.max(0, this.threshold - recent.length);
      for (const event of group.slice(0, own)) {
        added.push({ id: this._nextId++, type, kind: "event", event, history });
        if (!history) recent.push(now);
      }
      this._recent.set(type, recent);
      const rest = group.slice(own);
      if (rest.length) {
        /** @type {ClusterRow} */
        const cluster = {
          id: this._nextId++,
          type,
          kind: "cluster",
          count: rest.length,
          first: rest[0],
          latest: rest[rest.length - 1],
          updatedAt: now,
        };
        this._open.set(type, cluster);
        added.push(cluster);
      }
    }
    changes.added = added.reverse();
    this.rows = [...changes.added, ...this.rows];
    if (this.rows.length > this.maxRows) changes.removed = this.rows.splice(this.maxRows);
    for (const row of changes.removed) {
      if (row.kind === "cluster" && this._open.get(row.type) === row) this._open.delete(row.type);
    }
    return changes;
  }
}
