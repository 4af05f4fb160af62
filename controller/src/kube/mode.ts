/**
 * The controller's Kubernetes mode: of the replicas, the one holding the Lease runs the policy scheduler
 * and reconciles CheckpointPolicy objects; the others wait. Becoming leader starts both, losing the lease
 * stops both before anything else happens, one transition at a time.
 */
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import type { Orchestrator } from '../migration/orchestrator.js';
import type { NodeRegistry } from '../nodes.js';
import type { PolicyEvents } from '../policy/events.js';
import type { PolicyScheduler } from '../policy/scheduler.js';
import { AgentDiscovery, type AgentDiscoveryConfig } from './agents.js';
import { CheckpointRecords } from './checkpoint-records.js';
import { LeaderElector } from './leader.js';
import { MigrationRecords } from './migration-records.js';
import { PodMover } from './pod-mover.js';
import { PodDirectory } from './pods.js';
import { PolicySync } from './policy-sync.js';

export interface KubeModeConfig {
  /** A kubeconfig file; without one, the pod's service account (in-cluster), else $KUBECONFIG or ~/.kube/config. */
  kubeconfig?: string;
  leaseNamespace: string;
  leaseName: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  /** Register the agent pods this picks as nodes (agents.ts); without it, nodes are added by hand. */
  agents?: AgentDiscoveryConfig;
  /** The RuntimeClass whose handler runs ferry-runc: replacement pods of a migration use it. */
  runtimeClass: string;
}

export interface KubeMode {
  isLeader(): boolean;
  stop(): Promise<void>;
}

export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kc;
}

export function startKubeMode(
  cfg: KubeModeConfig,
  deps: {
    policies: PolicyScheduler;
    events: PolicyEvents;
    nodes: NodeRegistry;
    orchestrator: Orchestrator;
    log: (line: string) => void;
  },
): KubeMode {
  const kc = loadKubeConfig(cfg.kubeconfig);
  // Until this replica leads, pod migrations are answered "not the leader" rather than "not Kubernetes mode".
  deps.orchestrator.usePods(undefined);
  const agents = cfg.agents ? new AgentDiscovery(kc, deps.nodes, cfg.agents, deps.log) : undefined;
  agents?.start().catch((e: unknown) => deps.log(`agent pods: ${String(e)}; trying again`));
  let sync: PolicySync | undefined;
  let pods: PodDirectory | undefined;
  let stopRecords: (() => void) | undefined;
  let stopCheckpointRecords: (() => void) | undefined;
  let transitions = Promise.resolve();
  const then = (step: () => Promise<void>) => {
    transitions = transitions.then(step).catch((err: unknown) => deps.log(`kubernetes mode: ${String(err)}`));
  };
  const elector = new LeaderElector(kc.makeApiClient(CoordinationV1Api), {
    namespace: cfg.leaseNamespace,
    name: cfg.leaseName,
    identity: cfg.identity,
    leaseDurationMs: cfg.leaseDurationMs,
    renewDeadlineMs: cfg.renewDeadlineMs,
    retryPeriodMs: cfg.retryPeriodMs,
    onStartedLeading: () =>
      then(async () => {
        deps.log(`${cfg.identity} leads (lease ${cfg.leaseNamespace}/${cfg.leaseName}): scheduling and reconciling policies`);
        // Pods first: the first runs select by pod labels.
        pods = new PodDirectory(kc, (e) => deps.log(`pod informer: ${String(e)}`));
        await pods
          .start()
          .catch((e: unknown) => deps.log(`pod informer: ${String(e)}; selectors by pod label match nothing until it lists`));
        deps.policies.usePodLabels(pods.labelsOf);
        deps.policies.start();
        // Pod migrations as Migration objects; those the previous leader left running are taken over first.
        const records = new MigrationRecords(kc, deps.log);
        stopRecords = deps.orchestrator.onPodRecord((m) => void records.write(m));
        const left = await records.unfinished().catch((e: unknown) => {
          deps.log(`listing Migration objects: ${String(e)}; migrations of an earlier leader are not taken over`);
          return [];
        });
        for (const m of left) if (deps.orchestrator.adopt(m)) deps.log(`pod migration ${m.id} taken over from an earlier leader`);
        const settling = deps.orchestrator.usePods(new PodMover(kc, cfg.runtimeClass));
        if (settling.length) deps.log(`settling ${settling.length} pod migration(s) left unfinished: ${settling.join(', ')}`);
        sync = new PolicySync({
          kubeConfig: kc,
          policies: deps.policies,
          events: deps.events,
          onError: (k, e) => deps.log(`reconcile ${k}: ${String(e)}`),
        });
        const current = sync;
        const checkpoints = new CheckpointRecords(kc, (ns, name) => current.policyObject(ns, name), deps.log);
        stopCheckpointRecords = deps.events.subscribeAll((e) => checkpoints.handle(e));
        await sync.start();
      }),
    onStoppedLeading: () =>
      then(async () => {
        deps.log(`${cfg.identity} no longer leads: policies stopped`);
        stopCheckpointRecords?.();
        stopCheckpointRecords = undefined;
        await sync?.stop();
        sync = undefined;
        await deps.policies.stop();
        deps.orchestrator.usePods(undefined);
        stopRecords?.();
        stopRecords = undefined;
        deps.policies.usePodLabels(undefined);
        await pods?.stop();
        pods = undefined;
      }),
    onError: (err) => deps.log(`lease ${cfg.leaseNamespace}/${cfg.leaseName}: ${String(err)}`),
  });
  elector.start();
  return {
    isLeader: () => elector.isLeader,
    async stop() {
      await agents?.stop();
      await elector.stop();
      await transitions;
    },
  };
}
