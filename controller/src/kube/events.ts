/**
 * Kubernetes Events about CheckpointPolicy objects, what `kubectl describe cpol` and `kubectl get events`
 * show: a spec accepted or refused (once per generation), and what goes wrong in runs (a checkpoint that
 * failed, a run that failed, a node's containers recovered or fenced). Successful runs make no event: at a
 * thousand policies they would flood the API, and the status says when the last one succeeded. A failed
 * event write is reported and dropped; events are a courtesy, never a reason to retry a reconcile.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import type { PolicyEvent } from '../policy/events.js';

export interface EventTarget {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid?: string;
}

export type EventKind = 'Normal' | 'Warning';

const COMPONENT = 'ferry-controller';

/** Which scheduler events become Kubernetes Events, with their type and reason; the rest are not news. */
export function kubeEventFor(e: PolicyEvent): { type: EventKind; reason: string } | undefined {
  switch (e.type) {
    case 'checkpoint-failed':
      return { type: 'Warning', reason: 'CheckpointFailed' };
    case 'recovered':
      return { type: 'Normal', reason: 'Recovered' };
    case 'fenced':
      return { type: 'Warning', reason: 'Fenced' };
    case 'run-finished': {
      const status = (e.data as { status?: string } | undefined)?.status;
      return status === 'failed' || status === 'partial'
        ? { type: 'Warning', reason: status === 'failed' ? 'RunFailed' : 'RunPartial' }
        : undefined;
    }
    default:
      return undefined;
  }
}

export class EventRecorder {
  private readonly core: CoreV1Api;

  constructor(
    kubeConfig: KubeConfig,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  async record(target: EventTarget, type: EventKind, reason: string, message: string): Promise<void> {
    const now = new Date();
    await this.core
      .createNamespacedEvent({
        namespace: target.namespace,
        body: {
          // As client-go names them: the object's name and a unique suffix.
          metadata: { name: `${target.name}.${now.getTime().toString(16)}${randomBytes(2).toString('hex')}`, namespace: target.namespace },
          involvedObject: {
            apiVersion: target.apiVersion,
            kind: target.kind,
            name: target.name,
            namespace: target.namespace,
            ...(target.uid ? { uid: target.uid } : {}),
          },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: COMPONENT },
          reportingComponent: COMPONENT,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      })
      .catch(this.onError);
  }
}
