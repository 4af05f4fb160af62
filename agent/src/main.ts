/** Assembles an agent from its config: store, drivers, API. */
import { checkPlainHttp, loadTlsIdentity, type TlsIdentity } from './tls/identity.js';
import { loadImageKey } from './store/encoding.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Agent } from './agent.js';
import { FerryError } from './errors.js';
import { buildAgentApi } from './api/server.js';
import type { AgentConfig } from './config.js';
import type { RuntimeDriver, RuntimeName } from './runtimes/types.js';
import { ImageStore } from './store/store.js';

/** Drivers load on demand: an agent that only runs runc never loads dockerode. */
async function makeDriver(name: RuntimeName, cfg: AgentConfig): Promise<RuntimeDriver> {
  switch (name) {
    case 'runc': {
      const { RuncDriver } = await import('./runtimes/runc.js');
      return new RuncDriver({
        bundlesDir: path.join(cfg.stateDir, 'bundles'),
        criu: cfg.criu,
        ...(cfg.runcRoot ? { root: cfg.runcRoot } : {}),
        ...(cfg.tls ? { tls: cfg.tls } : {}),
      });
    }
    case 'podman': {
      const { PodmanDriver, podmanStoreArgs } = await import('./runtimes/podman.js');
      return new PodmanDriver(cfg.podmanRoot ? { extraArgs: podmanStoreArgs(cfg.podmanRoot, cfg.podmanRunroot) } : {});
    }
    case 'docker': {
      const { DockerDriver } = await import('./runtimes/docker.js');
      return new DockerDriver(cfg.dockerSocket ? { socketPath: cfg.dockerSocket } : {});
    }
  }
}

/** Read once at start-up, so a missing or unreadable key is reported before any transfer needs it. */
async function readSshKey(file: string): Promise<Buffer> {
  return readFile(file).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError('bad_request', `--ssh-key ${file} cannot be read: ${err.code ?? err.message}`, {
      hint: 'give the private key file (e.g. made with ssh-keygen -t ed25519)',
      details: { field: '--ssh-key' },
    });
  });
}

export async function createAgent(cfg: AgentConfig, tls?: TlsIdentity): Promise<Agent> {
  const key = cfg.imageKeyPath ? await loadImageKey(cfg.imageKeyPath) : undefined;
  const store = new ImageStore(path.join(cfg.stateDir, 'images'), { compression: cfg.compression ?? 'none', ...(key ? { key } : {}) });
  await store.init();
  const agent = new Agent({
    node: cfg.node,
    store,
    holdsFile: path.join(cfg.stateDir, 'holds.json'),
    drivers: await Promise.all(cfg.runtimes.map((r) => makeDriver(r, cfg))),
    criu: cfg.criu,
    ...(cfg.transferStallMs ? { transferStallMs: cfg.transferStallMs } : {}),
    ...(cfg.sshKeyPath ? { sshKey: await readSshKey(cfg.sshKeyPath) } : {}),
    ...(tls ? { tls } : {}),
  });
  await Promise.all([agent.recoverHolds(), agent.clearMerges()]);
  return agent;
}

export async function startAgent(
  cfg: AgentConfig,
  logger = true,
): Promise<{ agent: Agent; app: FastifyInstance; url: string; warning?: string }> {
  const warning = checkPlainHttp(cfg.host, cfg.tls, cfg.allowPlainHttp, 'agent');
  const tls = cfg.tls ? await loadTlsIdentity(cfg.tls) : undefined;
  const agent = await createAgent(cfg, tls);
  const app = await buildAgentApi({ agent, token: cfg.token, logger, ...(tls ? { tls } : {}) });
  const url = await app.listen({ host: cfg.host, port: cfg.port });
  return { agent, app, url, ...(warning ? { warning } : {}) };
}
