/** Starts a real agent (real HTTP on loopback, real runtimes) for a test, and tears it down after. */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentClient } from '../../agent/src/client.js';
import type { AgentConfig } from '../../agent/src/config.js';
import { startAgent } from '../../agent/src/main.js';
import type { RuntimeName } from '../../agent/src/runtimes/types.js';

export interface TestAgent {
  client: AgentClient;
  url: string;
  token: string;
  stateDir: string;
  stop(): Promise<void>;
}

export async function startTestAgent(runtimes: RuntimeName[], extra: Partial<AgentConfig> = {}): Promise<TestAgent> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-agent-'));
  const token = randomBytes(16).toString('hex');
  const cfg: AgentConfig = { host: '127.0.0.1', port: 0, token, node: 'test-node', stateDir, runtimes, criu: 'criu', ...extra };
  const { app, url } = await startAgent(cfg, false);
  return {
    client: new AgentClient(url, token),
    url,
    token,
    stateDir,
    stop: async () => {
      await app.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}
