/**
 * The controller's embedded store: SQLite through better-sqlite3, one file, WAL and synchronous=FULL so
 * that a journal entry written before a migration step acts survives a crash of the controller.
 * Schema changes are numbered steps recorded in PRAGMA user_version.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;

const MIGRATIONS: string[] = [
  `CREATE TABLE nodes (
     name TEXT PRIMARY KEY,
     url TEXT NOT NULL,
     token TEXT NOT NULL,
     capabilities TEXT,
     healthy INTEGER NOT NULL DEFAULT 0,
     last_seen TEXT,
     last_error TEXT,
     registered_at TEXT NOT NULL
   );
   CREATE TABLE migrations (
     id TEXT PRIMARY KEY,
     container_key TEXT NOT NULL,
     status TEXT NOT NULL,
     step TEXT NOT NULL,
     record TEXT NOT NULL,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   -- At most one unfinished migration per container: the database, not a race, answers the second with 409.
   CREATE UNIQUE INDEX one_active_migration ON migrations (container_key) WHERE status = 'running';
   CREATE TABLE migration_events (
     migration_id TEXT NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
     seq INTEGER NOT NULL,
     at TEXT NOT NULL,
     type TEXT NOT NULL,
     step TEXT,
     message TEXT NOT NULL,
     data TEXT,
     PRIMARY KEY (migration_id, seq)
   );`,
  // A node reached over SSH for transfers between agents (agent/src/ssh-tunnel.ts): JSON SshRoute.
  `ALTER TABLE nodes ADD COLUMN ssh TEXT;`,
  // Checkpoint policies (controller/src/policy): the document, its status, when it runs next, its runs and
  // the checkpoints they took. A checkpoint row is written (pending) before the agent is asked, so a
  // controller that dies mid-run finds out on restart whether the checkpoint exists.
  `CREATE TABLE policies (
     name TEXT PRIMARY KEY,
     document TEXT NOT NULL,
     status TEXT NOT NULL,
     generation INTEGER NOT NULL,
     next_run_at TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE INDEX policies_by_next_run ON policies (next_run_at) WHERE next_run_at IS NOT NULL;
   CREATE TABLE policy_runs (
     id TEXT PRIMARY KEY,
     policy TEXT NOT NULL,
     status TEXT NOT NULL,
     record TEXT NOT NULL,
     started_at TEXT NOT NULL
   );
   CREATE INDEX policy_runs_by_policy ON policy_runs (policy, started_at);
   CREATE TABLE policy_checkpoints (
     id TEXT PRIMARY KEY,
     policy TEXT NOT NULL,
     container_key TEXT NOT NULL,
     state TEXT NOT NULL,
     record TEXT NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE INDEX policy_checkpoints_by_container ON policy_checkpoints (policy, container_key, state);`,
  // Containers restored elsewhere after their node was lost, and whether the lost copy is fenced yet.
  `CREATE TABLE policy_recoveries (
     id TEXT PRIMARY KEY,
     policy TEXT NOT NULL,
     container_key TEXT NOT NULL,
     lost_node TEXT NOT NULL,
     fence TEXT NOT NULL,
     record TEXT NOT NULL,
     at TEXT NOT NULL
   );
   CREATE INDEX policy_recoveries_by_fence ON policy_recoveries (fence, lost_node);`,
];

/**
 * Statements prepared once per text and reused: under load, preparing on every call cost more than
 * running the statements.
 */
export function statementCache(db: Db): (sql: string) => Database.Statement {
  const cache = new Map<string, Database.Statement>();
  return (sql) => {
    let st = cache.get(sql);
    if (!st) {
      st = db.prepare(sql);
      cache.set(sql, st);
    }
    return st;
  };
}

export function openDatabase(file: string): Db {
  if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  const current = db.pragma('user_version', { simple: true }) as number;
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v] as string);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return db;
}
