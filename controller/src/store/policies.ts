/** Policies, their runs and the checkpoints they took, in the embedded store. Records are JSON; the columns are for queries. */
import type { Policy, PolicyCheckpoint, PolicyRecovery, PolicyRun } from '../policy/types.js';
import type Database from 'better-sqlite3';
import { type Db, statementCache } from './db.js';

/** The identity a policy's checkpoints are kept by: the same container keeps its history when it moves node. */
export const policyContainerKey = (c: Pick<PolicyCheckpoint, 'runtime' | 'containerName'>) => `${c.runtime}/${c.containerName}`;

export class PolicyRepo {
  private readonly sql: (text: string) => Database.Statement;

  constructor(private readonly db: Db) {
    this.sql = statementCache(db);
  }

  save(p: Policy, nextRunAt: string | undefined): void {
    this.sql(
      `INSERT INTO policies (name, document, status, generation, next_run_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET document = excluded.document, status = excluded.status, generation = excluded.generation,
           next_run_at = excluded.next_run_at, updated_at = excluded.updated_at`,
    ).run(
      p.metadata.name,
      JSON.stringify(p),
      JSON.stringify(p.status),
      p.metadata.generation,
      nextRunAt ?? null,
      p.metadata.createdAt,
      p.metadata.updatedAt,
    );
  }

  get(name: string): Policy | undefined {
    const row = this.sql('SELECT document, status FROM policies WHERE name = ?').get(name) as
      | { document: string; status: string }
      | undefined;
    return row ? { ...(JSON.parse(row.document) as Policy), status: JSON.parse(row.status) } : undefined;
  }

  list(): Policy[] {
    const rows = this.sql('SELECT document, status FROM policies ORDER BY name').all() as { document: string; status: string }[];
    return rows.map((r) => ({ ...(JSON.parse(r.document) as Policy), status: JSON.parse(r.status) }));
  }

  /** Names and due times of the policies that are scheduled (not suspended), soonest first. */
  schedule(): { name: string; nextRunAt: string }[] {
    return this.sql('SELECT name, next_run_at AS nextRunAt FROM policies WHERE next_run_at IS NOT NULL ORDER BY next_run_at').all() as {
      name: string;
      nextRunAt: string;
    }[];
  }

  nextRunAt(name: string): string | undefined {
    const row = this.sql('SELECT next_run_at FROM policies WHERE name = ?').get(name) as { next_run_at: string | null } | undefined;
    return row?.next_run_at ?? undefined;
  }

  remove(name: string): boolean {
    return this.sql('DELETE FROM policies WHERE name = ?').run(name).changes > 0;
  }

  /** Records that a run starts and when the next one is due, in one transaction: a restart neither repeats nor skips it. */
  startRun(run: PolicyRun, p: Policy, nextRunAt: string | undefined): void {
    this.db.transaction(() => {
      this.saveRun(run);
      this.save(p, nextRunAt);
    })();
  }

  /** A finished run and its policy's status, in one commit. */
  finishRun(run: PolicyRun, p: Policy | undefined, nextRunAt: string | undefined): void {
    this.db.transaction(() => {
      this.saveRun(run);
      if (p) this.save(p, nextRunAt);
    })();
  }

  saveRun(run: PolicyRun): void {
    this.sql(
      `INSERT INTO policy_runs (id, policy, status, record, started_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record`,
    ).run(run.id, run.policy, run.status, JSON.stringify(run), run.startedAt);
  }

  /** The JSON `record` column of each row the query returns. */
  private records<T>(query: string, ...params: unknown[]): T[] {
    return (this.sql(query).all(...params) as { record: string }[]).map((r) => JSON.parse(r.record) as T);
  }

  runs(policy: string, limit = 50): PolicyRun[] {
    return this.records('SELECT record FROM policy_runs WHERE policy = ? ORDER BY started_at DESC LIMIT ?', policy, limit);
  }

  unfinishedRuns(): PolicyRun[] {
    return this.records("SELECT record FROM policy_runs WHERE status = 'running'");
  }

  saveCheckpoint(c: PolicyCheckpoint): void {
    this.sql(
      `INSERT INTO policy_checkpoints (id, policy, container_key, state, record, created_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record`,
    ).run(c.id, c.policy, policyContainerKey(c), c.state, JSON.stringify(c), c.createdAt);
  }

  /** Several checkpoint records in one transaction (one commit for a whole run). */
  saveCheckpoints(cs: PolicyCheckpoint[]): void {
    if (!cs.length) return;
    this.db.transaction(() => {
      for (const c of cs) this.saveCheckpoint(c);
    })();
  }

  /** A policy's checkpoints in the given states, oldest first; of one container when `containerKey` is given. */
  checkpoints(policy: string, states: PolicyCheckpoint['state'][], containerKey?: string): PolicyCheckpoint[] {
    const marks = states.map(() => '?').join(', ');
    return this.records(
      `SELECT record FROM policy_checkpoints WHERE policy = ? AND state IN (${marks}) ${containerKey ? 'AND container_key = ?' : ''} ORDER BY created_at`,
      policy,
      ...states,
      ...(containerKey ? [containerKey] : []),
    );
  }

  countCheckpoints(policy: string, state: PolicyCheckpoint['state']): number {
    // Memory-only bases of incremental chains are parents, not checkpoints anyone restores: not counted.
    const sql =
      "SELECT COUNT(*) AS n FROM policy_checkpoints WHERE policy = ? AND state = ? AND json_extract(record, '$.memoryOnly') IS NULL";
    return (this.sql(sql).get(policy, state) as { n: number }).n;
  }

  pendingCheckpoints(): PolicyCheckpoint[] {
    return this.records("SELECT record FROM policy_checkpoints WHERE state = 'pending'");
  }

  /** How many kept checkpoint copies each node holds: the load measure for placing new copies. */
  copiesPerNode(): Map<string, number> {
    const rows = this.sql(
      `SELECT copy.value AS node, COUNT(*) AS n FROM policy_checkpoints, json_each(policy_checkpoints.record, '$.copies') AS copy
         WHERE policy_checkpoints.state = 'complete' GROUP BY copy.value`,
    ).all() as { node: string; n: number }[];
    return new Map(rows.map((r) => [r.node, r.n]));
  }

  saveRecovery(r: PolicyRecovery): void {
    this.sql(
      `INSERT INTO policy_recoveries (id, policy, container_key, lost_node, fence, record, at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET fence = excluded.fence, record = excluded.record`,
    ).run(r.id, r.policy, policyContainerKey(r), r.lostNode, r.fence, JSON.stringify(r), r.at);
  }

  recoveries(policy: string): PolicyRecovery[] {
    return this.records('SELECT record FROM policy_recoveries WHERE policy = ? ORDER BY at', policy);
  }

  /** Recoveries whose lost copy still runs (or may) on the node that was lost. */
  pendingFences(): PolicyRecovery[] {
    return this.records("SELECT record FROM policy_recoveries WHERE fence = 'pending'");
  }
}
