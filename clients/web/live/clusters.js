// @ts-check
/**
 * The live page's list model: newest rows first, bursts clustered instead of flooding the list. Events of
 * one type that arrive together (`threshold` or more in one batch), or while a cluster of their type is
 * still open (updated within `windowMs`), become one row: "12 new signal.created". The list is capped at
 * `maxRows`. Pure: no DOM, so it is tested in Node; the page renders the changes it returns.
 */

/** @typedef {import("../streaming.js").StreamEvent} StreamEvent */
/** @typedef {{id: number, type: string, kind: "event", event: StreamEvent, history: boolean}} EventRow */
/** @typedef {{id: number, type: string, kind: "cluster", count: number, latest: StreamEvent,
 *   updatedAt: number}} ClusterRow */
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
      } else if (!history && group.length >= this.threshold) {
        /** @type {ClusterRow} */
        const cluster = {
          id: this._nextId++,
          type,
          kind: "cluster",
          count: group.length,
          latest: group[group.length - 1],
          updatedAt: now,
        };
        this._open.set(type, cluster);
        added.push(cluster);
      } else {
        for (const event of group) added.push({ id: this._nextId++, type, kind: "event", event, history });
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
