/** Assembles an agent from its config: store, drivers, API. */
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Agent } from './agent.js';
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

export async function createAgent(cfg: AgentConfig): Promise<Agent> {
  const store = new ImageStore(path.join(cfg.stateDir, 'images'));
  await store.init();
  return new Agent({
    node: cfg.node,
    store,
    drivers: await Promise.all(cfg.runtimes.map((r) => makeDriver(r, cfg))),
    criu: cfg.criu,
    ...(cfg.transferStallMs ? { transferStallMs: cfg.transferStallMs } : {}),
  });
}

export async function startAgent(cfg: AgentConfig, logger = true): Promise<{ agent: Agent; app: FastifyInstance; url: string }> {
  const agent = await createAgent(cfg);
  const app = await buildAgentApi({ agent, token: cfg.token, logger });
  const url = await app.listen({ host: cfg.host, port: cfg.port });
  return { agent, app, url };
}
