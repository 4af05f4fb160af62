/**
 * Agent-to-agent transfer: a checkpoint streams as the same archive `export` makes, straight into the
 * peer's `import`, which unpacks it aside, checks every file against the manifest and only then lists it.
 * So a byte damaged on the way is caught by the receiver, and a half-sent checkpoint never becomes visible.
 * Parents go first (oldest first) when the peer lacks them, so a pre-dump chain arrives with its layout.
 */
import type { TlsIdentity } from './tls/identity.js';
import { Transform } from 'node:stream';
import { AgentClient } from './client.js';
import { FerryError, isFerryError } from './errors.js';
import type { Manifest } from './store/manifest.js';
import type { ImageStore } from './store/store.js';
import { openTunnel, type SshRoute } from './ssh-tunnel.js';
import { watchdog } from './watchdog.js';

export interface Peer {
  /** The peer agent's URL; with `ssh`, as the peer node itself reaches it (the tunnel's far end). */
  url: string;
  token: string;
  /** Send through an SSH tunnel to the peer node instead of connecting to `url` directly. */
  ssh?: SshRoute;
}

export interface SendResult {
  checkpoint: string;
  /** The checkpoints actually sent, oldest first; parents the peer already had are skipped. */
  sent: string[];
  bytes: number;
  ms: number;
  bytesPerSecond: number;
}

export interface SendOptions {
  /** The send fails when no bytes move for this long (a cut link is silent; see watchdog.ts). */
  stallMs: number;
  /** Ends the send early, e.g. when the checkpoint is deleted (a rollback) while it is on its way. */
  signal?: AbortSignal;
  /** This agent's SSH private key, for peers reached over SSH. */
  sshKey?: Buffer;
  /** This agent's certificate, for peers served over mTLS. */
  tls?: TlsIdentity;
}

/** The peer hashes and syncs what it received before it answers; allow for that at this pace. */
const PEER_VERIFY_BYTES_PER_MS = 100_000;

export async function sendCheckpoint(store: ImageStore, id: string, peer: Peer, opts: SendOptions): Promise<SendResult> {
  // Not verified here: the receiver checks every byte against the manifest anyway, and a second full read
  // on the sender would sit in the migration's downtime.
  const chain = (await store.chain(id)).reverse();
  if (!peer.ssh) return sendChain(store, chain, peer.url, peer, opts);
  if (!opts.sshKey) {
    throw new FerryError('bad_request', 'this agent has no SSH key for peers reached over SSH', {
      hint: 'start the agent with --ssh-key FILE',
      details: { field: 'peer.ssh' },
    });
  }
  const tunnel = await openTunnel(peer.ssh, opts.sshKey, peer.url, opts.stallMs);
  try {
    return await sendChain(store, chain, tunnel.url, peer, opts);
  } finally {
    await tunnel.close();
  }
}

async function sendChain(store: ImageStore, chain: Manifest[], url: string, peer: Peer, opts: SendOptions): Promise<SendResult> {
  const id = chain.at(-1)?.id ?? '';
  const client = new AgentClient(url, peer.token, { timeouts: { quickMs: opts.stallMs }, ...(opts.tls ? { tls: opts.tls } : {}) });
  const t0 = performance.now();
  let bytes = 0;
  const sent: string[] = [];
  for (const manifest of await missingOnPeer(client, chain)) {
    opts.signal?.throwIfAborted();
    const abort = new AbortController();
    const stopOnCaller = () => abort.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', stopOnCaller, { once: true });
    const stalled = watchdog(opts.stallMs, () =>
      abort.abort(
        new FerryError('transfer_failed', `sending ${manifest.id} to ${peer.url} stalled: no progress for ${opts.stallMs} ms`, {
          hint: 'check the link between the nodes and retry; the peer keeps nothing of a failed transfer',
        }),
      ),
    );
    let sentOfThis = 0;
    let following: { stop(): void } | undefined;
    const counted = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        sentOfThis += chunk.length;
        stalled.kick();
        done(null, chunk);
      },
      flush(done) {
        // Everything is in the socket now. On a slow link megabytes can wait in socket buffers for
        // seconds while nothing moves here: from now on, progress is what the peer says it received.
        stalled.kick();
        following = followPeer(client, manifest.id, opts.stallMs, (received) => {
          if (received < sentOfThis) return stalled.kick();
          stalled.kick(opts.stallMs + sentOfThis / PEER_VERIFY_BYTES_PER_MS);
          following?.stop();
        });
        done();
      },
    });
    try {
      await client.importArchive(store.exportArchive(manifest.id).pipe(counted), abort.signal, manifest.id);
    } catch (err) {
      throw transferFailure(manifest.id, peer.url, abort.signal.aborted ? abort.signal.reason : err);
    } finally {
      following?.stop();
      stalled.stop();
      opts.signal?.removeEventListener('abort', stopOnCaller);
    }
    sent.push(manifest.id);
  }
  const ms = performance.now() - t0;
  return { checkpoint: id, sent, bytes, ms: Math.round(ms * 1000) / 1000, bytesPerSecond: ms > 0 ? Math.round((bytes / ms) * 1000) : 0 };
}

/**
 * Asks the peer how much of an announced import has arrived, a few times per stall limit, and reports
 * each increase. A peer that does not answer reports nothing: the stall watchdog then decides.
 */
function followPeer(client: AgentClient, id: string, stallMs: number, onProgress: (received: number) => void): { stop(): void } {
  let seen = -1;
  let asking = false;
  const timer = setInterval(
    () => {
      if (asking) return;
      asking = true;
      client
        .incoming(id)
        .then((p) => {
          if (p.receiving && p.bytes > seen) {
            seen = p.bytes;
            onProgress(p.bytes);
          }
        })
        .catch(() => undefined)
        .finally(() => {
          asking = false;
        });
    },
    Math.max(100, Math.min(1000, stallMs / 3)),
  );
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * The part of the chain (oldest first) the peer lacks, asked newest first: a peer that has a checkpoint
 * has its parents too (an import needs its parent there, and a parent cannot be deleted before its
 * children). A pre-copy's final dump then costs two questions rather than one per round (each one a
 * round trip inside the downtime).
 */
async function missingOnPeer(client: AgentClient, chain: Manifest[]): Promise<Manifest[]> {
  for (let i = chain.length - 1; i >= 0; i--) {
    if (await peerHas(client, chain[i] as Manifest)) return chain.slice(i + 1);
  }
  return chain;
}

/** The peer has it when it lists the same id with the same files; the same id with other files is a conflict. */
async function peerHas(client: AgentClient, m: Manifest): Promise<boolean> {
  const theirs = await client.getCheckpoint(m.id).catch((err: unknown) => {
    if (isFerryError(err) && err.code === 'checkpoint_not_found') return undefined;
    throw transferFailure(m.id, client.url, err);
  });
  if (!theirs) return false;
  const same = theirs.files.length === m.files.length && theirs.files.every((f, i) => f.sha256 === m.files[i]?.sha256);
  if (!same) {
    throw new FerryError('conflict', `the peer ${client.url} has a different checkpoint under the id ${m.id}`, {
      hint: 'delete it on the peer, or send under another id',
    });
  }
  return true;
}

function transferFailure(id: string, url: string, err: unknown): FerryError {
  if (!isFerryError(err)) {
    return new FerryError('transfer_failed', `sending ${id} to ${url} failed: ${(err as Error).message}`, {
      hint: 'check the link between the nodes and retry; the peer keeps nothing of a failed transfer',
    });
  }
  if (err.code === 'checkpoint_corrupt') {
    return new FerryError(
      'transfer_failed',
      `${id} arrived damaged at ${url} (changed in transit, or already on this node's disk): ${err.message}`,
      {
        hint: 'the peer discarded the damaged copy; retry the transfer, and if it fails again verify the checkpoint here',
        details: { ...err.details, peerCode: err.code },
      },
    );
  }
  return err.code === 'node_unreachable' || err.code === 'conflict' ? err : new FerryError(err.code, `${url}: ${err.message}`, err);
}
