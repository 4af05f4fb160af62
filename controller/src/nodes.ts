/**
 * The nodes the controller can migrate between. Registering probes the agent first (a node that does not
 * answer with its token is refused), and a periodic health check keeps `healthy` and capabilities fresh.
 */
import type { TlsIdentity } from '../../agent/src/tls/identity.js';
import type { ClientTimeouts } from '../../agent/src/api-client.js';
import { AgentClient } from '../../agent/src/client.js';
import { FerryError, isFerryError } from '../../agent/src/errors.js';
import type { SshRoute } from '../../agent/src/ssh-tunnel.js';
import type { Peer } from '../../agent/src/transfer.js';
import type { NodeRecord, NodeRepo } from './store/nodes.js';

export type PublicNode = Omit<NodeRecord, 'token'>;

export class NodeRegistry {
  private timer: NodeJS.Timeout | undefined;
  private readonly checkedListeners: (() => Promise<void>)[] = [];
  private checking = false;
  private round: Promise<void> = Promise.resolve();

  constructor(
    private readonly repo: NodeRepo,
    private readonly timeouts: ClientTimeouts = {},
    /** The controller's certificate, shown to agents served over mTLS. */
    private readonly tls?: TlsIdentity,
  ) {}

  private clientOptions() {
    return { timeouts: this.timeouts, ...(this.tls ? { tls: this.tls } : {}) };
  }

  async register(name: string, url: string, token: string, ssh?: SshRoute): Promise<PublicNode> {
    const client = new AgentClient(url, token, this.clientOptions());
    const capabilities = await client.node(true).catch((err: unknown) => {
      if (isFerryError(err) && err.code === 'unauthorized') {
        throw new FerryError('bad_request', `the agent at ${url} refused the token`, {
          hint: "pass the agent's FERRY_TOKEN",
          details: { field: 'token' },
        });
      }
      throw err;
    });
    return withoutToken(this.repo.upsert({ name, url, token, ...(ssh ? { ssh } : {}), capabilities }));
  }

  get(name: string, field = 'node'): NodeRecord {
    const node = this.repo.get(name);
    if (!node) {
      throw new FerryError('node_not_found', `no node named '${name}' is registered`, {
        hint: 'register it with POST /nodes {name, url, token} (ferry nodes add)',
        details: { field },
      });
    }
    return node;
  }

  /** requestId: sent as x-request-id, so the agent logs the calls of one migration under its id. */
  client(name: string, requestId?: string): AgentClient {
    const node = this.get(name);
    return new AgentClient(node.url, node.token, { ...this.clientOptions(), ...(requestId ? { requestId } : {}) });
  }

  /** How another agent sends checkpoints to this node: its URL and token, through SSH when registered so. */
  peer(name: string): Peer {
    const node = this.get(name);
    return { url: node.url, token: node.token, ...(node.ssh ? { ssh: node.ssh } : {}) };
  }

  /** Called after each round of health checks (recovery of lost nodes' workloads, fencing of returning ones). */
  onChecked(listener: () => Promise<void>): void {
    this.checkedListeners.push(listener);
  }

  list(): PublicNode[] {
    return this.repo.list().map(withoutToken);
  }

  remove(name: string): void {
    if (!this.repo.remove(name)) this.get(name);
  }

  /** One round of health checks, all nodes at once; a node that answers gets fresh capabilities. */
  async checkAll(): Promise<void> {
    await Promise.all(
      this.repo.list().map(async (n) => {
        try {
          this.repo.markHealthy(n.name, await new AgentClient(n.url, n.token, this.clientOptions()).node());
        } catch (err) {
          this.repo.markUnhealthy(n.name, (err as Error).message);
        }
      }),
    );
    for (const listener of this.checkedListeners) await listener().catch(() => undefined);
  }

  /**
   * Rounds never overlap: the next is scheduled when one ends, because a round's listeners may restore
   * containers, and two rounds recovering the same lost node would restore them twice.
   */
  startHealthChecks(everyMs: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.checking = true;
    const next = () => {
      if (!this.checking) return;
      this.timer = setTimeout(() => {
        this.round = this.checkAll().finally(next);
      }, everyMs);
      this.timer.unref();
    };
    next();
  }

  async stopHealthChecks(): Promise<void> {
    this.checking = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.round;
  }
}

function withoutToken(n: NodeRecord): PublicNode {
  const { token: _token, ...rest } = n;
  return rest;
}
