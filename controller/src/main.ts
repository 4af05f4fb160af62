/** Assembles the controller: embedded store, node registry, orchestrator and policy scheduler (each recovering what a previous run left), API. */
import type { Logging } from '../../agent/src/api/base.js';
import { checkPlainHttp, loadTlsIdentity } from '../../agent/src/tls/identity.js';
import type { FastifyInstance } from 'fastify';
import { buildControllerApi } from './api/server.js';
import type { ControllerConfig } from './config.js';
import { createControllerMetrics } from './metrics.js';
import { Orchestrator } from './migration/orchestrator.js';
import { NodeRegistry } from './nodes.js';
import { type Db, openDatabase } from './store/db.js';
import { MigrationRepo } from './store/migrations.js';
import { NodeRepo } from './store/nodes.js';
import { PolicyRepo } from './store/policies.js';
import { PolicyEvents } from './policy/events.js';
import { PolicyPlacement } from './policy/recovery.js';
import { PolicyScheduler } from './policy/scheduler.js';
import type { KubeMode } from './kube/mode.js';

export interface RunningController {
  app: FastifyInstance;
  url: string;
  orchestrator: Orchestrator;
  nodes: NodeRegistry;
  policies: PolicyScheduler;
  /** Kubernetes mode, when configured: whether this replica leads. */
  kube?: KubeMode;
  /** Ids of migrations found unfinished at start and being settled. */
  recovered: string[];
  /** Said at start when serving plain HTTP. */
  warning?: string;
  close(): Promise<void>;
}

export async function startController(cfg: ControllerConfig, logger: Logging = true): Promise<RunningController> {
  const warning = checkPlainHttp(cfg.host, cfg.tls, cfg.allowPlainHttp, 'controller');
  const tls = cfg.tls ? await loadTlsIdentity(cfg.tls) : undefined;
  const db: Db = openDatabase(cfg.database);
  const nodes = new NodeRegistry(new NodeRepo(db), cfg.agentTimeouts, tls);
  const orchestrator = new Orchestrator(new MigrationRepo(db), nodes);
  const recovered = orchestrator.recover();
  const policyRepo = new PolicyRepo(db);
  const policyEvents = new PolicyEvents();
  const placement = new PolicyPlacement(policyRepo, nodes, policyEvents);
  const policies = new PolicyScheduler(policyRepo, nodes, placement, policyEvents);
  nodes.onChecked(() => placement.afterHealthCheck());
  const metrics = createControllerMetrics({ orchestrator, policyEvents, nodes });
  const app = await buildControllerApi({ orchestrator, nodes, policies, token: cfg.token, metrics, logger, ...(tls ? { tls } : {}) });
  const url = await app.listen({ host: cfg.host, port: cfg.port });
  // One JSON line per migration step, round and outcome, and per policy event, each with its id, in the
  // same log as the requests (with theirs): a migration can be followed by grepping for its id.
  if (logger) {
    orchestrator.onEvent((id, e) =>
      app.log.info({ migration: id, step: e.step, event: e.type, ...(e.data ? { data: e.data } : {}) }, e.message),
    );
    policyEvents.subscribeAll((e) => app.log.info({ policy: e.policy, event: e.type }, e.message));
  }
  nodes.startHealthChecks(cfg.healthCheckMs);
  // In Kubernetes mode only the replica holding the lease schedules; standalone, this one always does.
  // The Kubernetes client is loaded only then: importing it costs every start 0.4 s here, seconds in the lab VM.
  const kube: KubeMode | undefined = cfg.kube
    ? (await import('./kube/mode.js')).startKubeMode(cfg.kube, {
        policies,
        events: policyEvents,
        nodes,
        orchestrator,
        log: (l) => (logger ? app.log.info(l) : console.error(l)),
      })
    : undefined;
  if (!kube) policies.start();
  return {
    app,
    url,
    orchestrator,
    nodes,
    policies,
    ...(kube ? { kube } : {}),
    recovered,
    ...(warning ? { warning } : {}),
    close: async () => {
      await kube?.stop();
      await nodes.stopHealthChecks();
      await policies.stop();
      await app.close();
      await orchestrator.drain();
      db.close();
    },
  };
}
