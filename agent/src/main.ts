/** Assembles an agent from its config: store, drivers, API. */
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Agent } from './agent.js';
import { buildAgentApi } from './api/server.js';
import type { AgentConfig } from './config.js';
import { DockerDriver } from './runtimes/docker.js';
import { PodmanDriver } from './runtimes/podman.js';
import { RuncDriver } from './runtimes/runc.js';
import type { RuntimeDriver, RuntimeName } from './runtimes/types.js';
import { ImageStore } from './store/store.js';

function makeDriver(name: RuntimeName, cfg: AgentConfig): RuntimeDriver {
  switch (name) {
    case 'runc':
      return new RuncDriver({
        bundlesDir: path.join(cfg.stateDir, 'bundles'),
        criu: cfg.criu,
        ...(cfg.runcRoot ? { root: cfg.runcRoot } : {}),
      });
    case 'podman':
      return new PodmanDriver();
    case 'docker':
      return new DockerDriver(cfg.dockerSocket ? { socketPath: cfg.dockerSocket } : {});
  }
}

export async function createAgent(cfg: AgentConfig): Promise<Agent> {
  const store = new ImageStore(path.join(cfg.stateDir, 'images'));
  await store.init();
  return new Agent({ node: cfg.node, store, drivers: cfg.runtimes.map((r) => makeDriver(r, cfg)), criu: cfg.criu });
}

export async function startAgent(cfg: AgentConfig, logger = true): Promise<{ agent: Agent; app: FastifyInstance; url: string }> {
  const agent = await createAgent(cfg);
  const app = await buildAgentApi({ agent, token: cfg.token, logger });
  const url = await app.listen({ host: cfg.host, port: cfg.port });
  return { agent, app, url };
}
