/** A typed client of the controller API, for the CLI, the demo and tests. */
import type { TlsIdentity } from '../../agent/src/tls/identity.js';
import type { SshRoute } from '../../agent/src/ssh-tunnel.js';
import { ApiClient } from '../../agent/src/api-client.js';
import type { RuntimeName } from '../../agent/src/runtimes/types.js';
import type { MigrationEvent, MigrationRecord, MigrationRequest } from './migration/types.js';
import type { PublicNode } from './nodes.js';
import type { PolicyEvent } from './policy/events.js';
import type { Policy, PolicyCheckpoint, PolicyDocument, PolicyRecovery, PolicyRun } from './policy/types.js';

export type MigrateParams = Pick<MigrationRequest, 'container' | 'targetNode'> &
  Partial<Omit<MigrationRequest, 'container' | 'targetNode'>>;

export class ControllerClient extends ApiClient {
  constructor(url: string, token: string, tls?: TlsIdentity) {
    super(url, token, {
      what: 'the controller',
      startHint: 'start it with `ferry controller` or pass --controller URL',
      ...(tls ? { tls } : {}),
    });
  }

  registerNode(name: string, url: string, token: string, ssh?: SshRoute): Promise<PublicNode> {
    return this.json('POST', '/nodes', { name, url, token, ...(ssh ? { ssh } : {}) });
  }
  removeNode(name: string): Promise<void> {
    return this.json('DELETE', `/nodes/${encodeURIComponent(name)}`);
  }
  async nodes(): Promise<PublicNode[]> {
    return (await this.json<{ nodes: PublicNode[] }>('GET', '/nodes')).nodes;
  }
  async migrate(p: MigrateParams): Promise<MigrationRecord> {
    return (await this.json<{ id: string; migration: MigrationRecord }>('POST', '/migrate', p)).migration;
  }
  /** Kubernetes mode, on the replica holding the Lease: a pod's containers move together. */
  async migratePod(p: { pod: { namespace: string; name: string }; targetNode: string; readyTimeoutMs?: number }): Promise<MigrationRecord> {
    return (await this.json<{ id: string; migration: MigrationRecord }>('POST', '/migrate', p)).migration;
  }
  migration(id: string): Promise<MigrationRecord> {
    return this.json('GET', `/migrations/${encodeURIComponent(id)}`);
  }
  async migrations(): Promise<MigrationRecord[]> {
    return (await this.json<{ migrations: MigrationRecord[] }>('GET', '/migrations')).migrations;
  }
  cancel(id: string): Promise<MigrationRecord> {
    return this.json('POST', `/migrations/${encodeURIComponent(id)}/cancel`);
  }
  async nodeContainers(node: string, runtime?: RuntimeName): Promise<unknown[]> {
    return (await this.json<{ containers: unknown[] }>('GET', `/nodes/${node}/containers${runtime ? `?runtime=${runtime}` : ''}`))
      .containers;
  }

  applyPolicy(doc: PolicyDocument): Promise<Policy> {
    return this.json('POST', '/policies', doc);
  }
  async policies(): Promise<Policy[]> {
    return (await this.json<{ policies: Policy[] }>('GET', '/policies')).policies;
  }
  policy(name: string): Promise<Policy> {
    return this.json('GET', `/policies/${encodeURIComponent(name)}`);
  }
  deletePolicy(name: string): Promise<{ deleted: string[]; left: { id: string; node: string; error: string }[] }> {
    return this.json('DELETE', `/policies/${encodeURIComponent(name)}`, undefined, true);
  }
  runPolicy(name: string): Promise<PolicyRun> {
    return this.json('POST', `/policies/${encodeURIComponent(name)}/run`, undefined, true);
  }
  async policyRuns(name: string): Promise<PolicyRun[]> {
    return (await this.json<{ runs: PolicyRun[] }>('GET', `/policies/${encodeURIComponent(name)}/runs`)).runs;
  }
  async policyCheckpoints(name: string): Promise<PolicyCheckpoint[]> {
    return (await this.json<{ checkpoints: PolicyCheckpoint[] }>('GET', `/policies/${encodeURIComponent(name)}/checkpoints`)).checkpoints;
  }
  async policyRecoveries(name: string): Promise<PolicyRecovery[]> {
    return (await this.json<{ recoveries: PolicyRecovery[] }>('GET', `/policies/${encodeURIComponent(name)}/recoveries`)).recoveries;
  }

  /** The migration's server-sent events, from the first, until it finishes. */
  events(id: string): AsyncGenerator<MigrationEvent> {
    return this.serverSentEvents<MigrationEvent>(`/migrations/${encodeURIComponent(id)}/events`);
  }

  /** A policy's events as they happen, until the caller stops reading. */
  policyEvents(name: string): AsyncGenerator<PolicyEvent> {
    return this.serverSentEvents<PolicyEvent>(`/policies/${encodeURIComponent(name)}/events`);
  }

  private async *serverSentEvents<T>(path: string): AsyncGenerator<T> {
    const res = await this.call('GET', path, undefined, { headers: { accept: 'text/event-stream' } });
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = frame
          .split('\n')
          .filter((l) => l.startsWith('data: '))
          .map((l) => l.slice(6))
          .join('\n');
        if (data) yield JSON.parse(data) as T;
      }
    }
  }
}
