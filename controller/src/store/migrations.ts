/** Migrations and their event journal. The record is JSON; status and step are columns for queries. */
import { FerryError } from '../../../agent/src/errors.js';
import type { MigrationEvent, MigrationRecord } from '../migration/types.js';
import type Database from 'better-sqlite3';
import { type Db, statementCache } from './db.js';

export const containerKey = (m: Pick<MigrationRecord, 'source'>) => `${m.source.node}/${m.source.runtime}/${m.source.containerId}`;

export class MigrationRepo {
  private readonly sql: (text: string) => Database.Statement;

  constructor(private readonly db: Db) {
    this.sql = statementCache(db);
  }

  /** Inserts a new migration; another unfinished one of the same container is a conflict. */
  insert(m: MigrationRecord): void {
    try {
      this.sql('INSERT INTO migrations (id, container_key, status, step, record, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        m.id,
        containerKey(m),
        m.status,
        m.step,
        JSON.stringify(m),
        m.createdAt,
        m.updatedAt,
      );
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        const other = this.activeFor(containerKey(m));
        throw new FerryError(
          'conflict',
          `${m.source.containerName} on ${m.source.node} is already being migrated${other ? ` (${other})` : ''}`,
          {
            hint: other ? `follow GET /migrations/${other}, or cancel it with POST /migrations/${other}/cancel` : 'wait for it to finish',
            details: { migration: other },
          },
        );
      }
      throw err;
    }
  }

  private activeFor(key: string): string | undefined {
    const row = this.sql("SELECT id FROM migrations WHERE container_key = ? AND status = 'running'").get(key) as { id: string } | undefined;
    return row?.id;
  }

  save(m: MigrationRecord): void {
    m.updatedAt = new Date().toISOString();
    this.sql('UPDATE migrations SET status = ?, step = ?, record = ?, updated_at = ? WHERE id = ?').run(
      m.status,
      m.step,
      JSON.stringify(m),
      m.updatedAt,
      m.id,
    );
  }

  get(id: string): MigrationRecord | undefined {
    const row = this.sql('SELECT record FROM migrations WHERE id = ?').get(id) as { record: string } | undefined;
    return row ? (JSON.parse(row.record) as MigrationRecord) : undefined;
  }

  list(limit = 100): MigrationRecord[] {
    return (this.sql('SELECT record FROM migrations ORDER BY created_at DESC LIMIT ?').all(limit) as { record: string }[]).map(
      (r) => JSON.parse(r.record) as MigrationRecord,
    );
  }

  unfinished(): MigrationRecord[] {
    return (this.sql("SELECT record FROM migrations WHERE status = 'running' ORDER BY created_at").all() as { record: string }[]).map(
      (r) => JSON.parse(r.record) as MigrationRecord,
    );
  }

  /** Appends an event in the same transaction that numbers it. */
  appendEvent(id: string, e: Omit<MigrationEvent, 'seq' | 'at'>): MigrationEvent {
    return this.db.transaction(() => {
      const { next } = this.sql('SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM migration_events WHERE migration_id = ?').get(id) as {
        next: number;
      };
      const event: MigrationEvent = { seq: next, at: new Date().toISOString(), ...e };
      this.sql('INSERT INTO migration_events (migration_id, seq, at, type, step, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        id,
        event.seq,
        event.at,
        event.type,
        event.step ?? null,
        event.message,
        event.data ? JSON.stringify(event.data) : null,
      );
      return event;
    })();
  }

  events(id: string, afterSeq = 0): MigrationEvent[] {
    const rows = this.sql(
      'SELECT seq, at, type, step, message, data FROM migration_events WHERE migration_id = ? AND seq > ? ORDER BY seq',
    ).all(id, afterSeq) as {
      seq: number;
      at: string;
      type: MigrationEvent['type'];
      step: string | null;
      message: string;
      data: string | null;
    }[];
    return rows.map((r) => ({
      seq: r.seq,
      at: r.at,
      type: r.type,
      ...(r.step ? { step: r.step as MigrationEvent['step'] } : {}),
      message: r.message,
      ...(r.data ? { data: JSON.parse(r.data) as Record<string, unknown> } : {}),
    }));
  }
}
