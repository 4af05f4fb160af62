/** A typed client of the agent API, for the CLI and the controller. Errors come back as FerryErrors. */
import { Readable } from 'node:stream';
import { ApiClient } from './api-client.js';
import { FerryError } from './errors.js';
import type { NodeCapabilities } from './criu/probe.js';
import type { Manifest } from './store/manifest.js';
import type { ContainerInfo, RuntimeName } from './runtimes/types.js';
import type {
  CheckpointParams,
  HoldParams,
  MemoryLoadState,
  PageServerState,
  PrepareParams,
  RestoreParams,
  RestoreResult,
} from './agent.js';
import type { Hold } from './holds.js';
import type { Peer, SendResult } from './transfer.js';

export class AgentClient extends ApiClient {
  health(): Promise<{ ok: boolean; node: string }> {
    return this.json('GET', '/healthz');
  }
  node(refresh = false): Promise<NodeCapabilities> {
    return this.json('GET', `/v1/node${refresh ? '?refresh=true' : ''}`);
  }
  stats(): Promise<{ restoreMs: Partial<Record<RuntimeName, number>> }> {
    return this.json('GET', '/v1/stats');
  }
  async containers(runtime?: RuntimeName): Promise<ContainerInfo[]> {
    return (await this.json<{ containers: ContainerInfo[] }>('GET', `/v1/containers${runtime ? `?runtime=${runtime}` : ''}`)).containers;
  }
  /** Resolves when the runtime has the image; rejects with image_not_found when not. */
  assertImage(runtime: RuntimeName, ref: string): Promise<void> {
    return this.json('GET', `/v1/images/${runtime}/${encodeURIComponent(ref)}`);
  }
  /** One container, with what a twin of it needs (podman: createCommand). */
  container(runtime: RuntimeName, ref: string): Promise<ContainerInfo> {
    return this.json('GET', `/v1/containers/${runtime}/${encodeURIComponent(ref)}`);
  }
  /** A stopped twin of another node's container, to restore an in-place checkpoint into. */
  prepareContainer(runtime: RuntimeName, p: PrepareParams): Promise<ContainerInfo> {
    return this.json('POST', `/v1/containers/${runtime}/prepare`, p, true);
  }
  removeContainer(runtime: RuntimeName, ref: string): Promise<void> {
    return this.json('DELETE', `/v1/containers/${runtime}/${encodeURIComponent(ref)}`);
  }
  hold(p: HoldParams): Promise<Hold> {
    return this.json('POST', '/v1/holds', p);
  }
  /** kill: the held containers' processes are killed first and never run again. */
  releaseHold(id: string, opts: { kill?: boolean } = {}): Promise<Hold> {
    return this.json('DELETE', `/v1/holds/${encodeURIComponent(id)}${opts.kill ? '?kill=true' : ''}`);
  }
  checkpoint(p: CheckpointParams): Promise<Manifest> {
    return this.json('POST', '/v1/checkpoints', p, true);
  }
  async checkpoints(): Promise<Manifest[]> {
    return (await this.json<{ checkpoints: Manifest[] }>('GET', '/v1/checkpoints')).checkpoints;
  }
  getCheckpoint(id: string): Promise<Manifest> {
    return this.json('GET', `/v1/checkpoints/${encodeURIComponent(id)}`);
  }
  deleteCheckpoint(id: string): Promise<void> {
    return this.json('DELETE', `/v1/checkpoints/${encodeURIComponent(id)}`);
  }
  restore(id: string, p: RestoreParams = {}): Promise<RestoreResult> {
    return this.json('POST', `/v1/checkpoints/${encodeURIComponent(id)}/restore`, p, true);
  }
  /** A lazy checkpoint's page server; waits up to waitMs (at most 60 s) for it to finish. */
  pageServer(id: string, waitMs = 0): Promise<PageServerState> {
    return this.json('GET', `/v1/checkpoints/${encodeURIComponent(id)}/page-server?waitMs=${waitMs}`, undefined, waitMs > 0);
  }
  /** A lazyMemory restore's loading of the checkpoint's memory; waits up to waitMs (at most 60 s) for it to end. */
  memoryLoad(id: string, waitMs = 0): Promise<MemoryLoadState> {
    return this.json('GET', `/v1/checkpoints/${encodeURIComponent(id)}/memory?waitMs=${waitMs}`, undefined, waitMs > 0);
  }
  send(id: string, peer: Peer): Promise<SendResult> {
    return this.json('POST', `/v1/checkpoints/${encodeURIComponent(id)}/send`, { peer }, true);
  }
  async exportArchive(id: string): Promise<Readable> {
    const res = await this.call('GET', `/v1/checkpoints/${encodeURIComponent(id)}/archive`, undefined, {}, true);
    if (!res.body) throw new FerryError('internal', 'the agent sent an empty archive');
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
  }
  /** announce: the checkpoint's id, so that incoming() can follow the bytes as they arrive. */
  importArchive(archive: Readable, signal?: AbortSignal, announce?: string): Promise<Manifest> {
    return this.upload('/v1/checkpoints/import', archive, 'application/x-tar', signal, announce ? { 'x-ferry-checkpoint': announce } : {});
  }

  incoming(id: string): Promise<{ id: string; receiving: boolean; bytes: number }> {
    return this.json('GET', `/v1/incoming/${encodeURIComponent(id)}`);
  }
}
