/** Registered nodes: where each agent answers, its token, and what it last reported it can do. */
import type { NodeCapabilities } from '../../../agent/src/criu/probe.js';
import type { SshRoute } from '../../../agent/src/ssh-tunnel.js';
import type Database from 'better-sqlite3';
import { type Db, statementCache } from './db.js';

export interface NodeRecord {
  name: string;
  url: string;
  token: string;
  /** Checkpoints are sent to this node through SSH rather than to its URL directly. */
  ssh?: SshRoute;
  capabilities?: NodeCapabilities;
  healthy: boolean;
  lastSeen?: string;
  lastError?: string;
  registeredAt: string;
}

interface Row {
  name: string;
  url: string;
  token: string;
  capabilities: string | null;
  ssh: string | null;
  healthy: number;
  last_seen: string | null;
  last_error: string | null;
  registered_at: string;
}

const fromRow = (r: Row): NodeRecord => ({
  name: r.name,
  url: r.url,
  token: r.token,
  ...(r.ssh ? { ssh: JSON.parse(r.ssh) as SshRoute } : {}),
  ...(r.capabilities ? { capabilities: JSON.parse(r.capabilities) as NodeCapabilities } : {}),
  healthy: r.healthy === 1,
  ...(r.last_seen ? { lastSeen: r.last_seen } : {}),
  ...(r.last_error ? { lastError: r.last_error } : {}),
  registeredAt: r.registered_at,
});

export class NodeRepo {
  private readonly sql: (text: string) => Database.Statement;

  constructor(db: Db) {
    this.sql = statementCache(db);
  }

  upsert(n: { name: string; url: string; token: string; ssh?: SshRoute; capabilities: NodeCapabilities }): NodeRecord {
    const now = new Date().toISOString();
    this.sql(
      `INSERT INTO nodes (name, url, token, ssh, capabilities, healthy, last_seen, registered_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)
         ON CONFLICT (name) DO UPDATE SET url = excluded.url, token = excluded.token, ssh = excluded.ssh,
           capabilities = excluded.capabilities, healthy = 1, last_seen = excluded.last_seen, last_error = NULL`,
    ).run(n.name, n.url, n.token, n.ssh ? JSON.stringify(n.ssh) : null, JSON.stringify(n.capabilities), now, now);
    return this.get(n.name) as NodeRecord;
  }

  get(name: string): NodeRecord | undefined {
    const row = this.sql('SELECT * FROM nodes WHERE name = ?').get(name) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  list(): NodeRecord[] {
    return (this.sql('SELECT * FROM nodes ORDER BY name').all() as Row[]).map(fromRow);
  }

  remove(name: string): boolean {
    return this.sql('DELETE FROM nodes WHERE name = ?').run(name).changes > 0;
  }

  markHealthy(name: string, capabilities?: NodeCapabilities): void {
    this.sql('UPDATE nodes SET healthy = 1, last_seen = ?, last_error = NULL, capabilities = COALESCE(?, capabilities) WHERE name = ?').run(
      new Date().toISOString(),
      capabilities ? JSON.stringify(capabilities) : null,
      name,
    );
  }

  markUnhealthy(name: string, error: string): void {
    this.sql('UPDATE nodes SET healthy = 0, last_error = ? WHERE name = ?').run(error, name);
  }
}
