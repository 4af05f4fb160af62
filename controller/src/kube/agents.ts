/**
 * Agents found through the API instead of `ferry nodes add`: the agent DaemonSet's pods, picked by a label
 * selector in their namespace, are registered as nodes under their Kubernetes node's name, at their pod
 * address (the agents use the host network: the node's address) and the agents' port, with the agents'
 * token. A pod is registered once it is Running and Ready, again when its address changes (a new pod
 * after a rolling update). A pod that goes away is not unregistered: the health checks mark its node
 * unhealthy, and policies and migrations treat it as they treat any lost node.
 *
 * Every replica runs this, leader or not: each keeps its own node list, as its API serves it.
 */
import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { NodeRegistry } from '../nodes.js';
import { ResilientInformer } from './informer.js';

export interface AgentDiscoveryConfig {
  namespace: string;
  labelSelector: string;
  port: number;
  token: string;
  scheme: 'http' | 'https';
  /** A registration that failed (the agent not answering yet) is tried again after this long. */
  retryMs?: number;
}

export class AgentDiscovery {
  private readonly watched: ResilientInformer<V1Pod>;
  /** The URL each node was last registered at, so that an unchanged pod is not probed again. */
  private readonly registered = new Map<string, string>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(
    kubeConfig: KubeConfig,
    private readonly nodes: NodeRegistry,
    private readonly cfg: AgentDiscoveryConfig,
    private readonly log: (line: string) => void,
  ) {
    const core = kubeConfig.makeApiClient(CoreV1Api);
    this.watched = new ResilientInformer<V1Pod>(
      kubeConfig,
      `/api/v1/namespaces/${cfg.namespace}/pods`,
      () => core.listNamespacedPod({ namespace: cfg.namespace, labelSelector: cfg.labelSelector }),
      { labelSelector: cfg.labelSelector, onError: (e) => log(`agent pod informer: ${String(e)}`) },
    );
    const consider = (pod: V1Pod) => void this.consider(pod);
    this.watched.informer.on('add', consider);
    this.watched.informer.on('update', consider);
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.watched.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.retries.values()) clearTimeout(t);
    this.retries.clear();
    await this.watched.stop();
  }

  private async consider(pod: V1Pod): Promise<void> {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const node = pod.spec?.nodeName;
    const address = pod.status?.podIP;
    if (this.stopped || !node || !address || !isReady(pod)) return;
    const host = address.includes(':') ? `[${address}]` : address;
    const url = `${this.cfg.scheme}://${host}:${this.cfg.port}`;
    if (this.registered.get(node) === url) return;
    clearTimeout(this.retries.get(key));
    this.retries.delete(key);
    try {
      await this.nodes.register(node, url, this.cfg.token);
      this.registered.set(node, url);
      this.log(`node ${node} registered from agent pod ${key} at ${url}`);
    } catch (err) {
      this.log(`agent pod ${key} at ${url} not registered yet: ${(err as Error).message}`);
      if (this.stopped) return;
      const retry = setTimeout(() => {
        this.retries.delete(key);
        const current = this.watched.informer.get(pod.metadata?.name ?? '', pod.metadata?.namespace);
        if (current) void this.consider(current);
      }, this.cfg.retryMs ?? 5_000);
      retry.unref();
      this.retries.set(key, retry);
    }
  }
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.phase === 'Running' && Boolean(pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
}
