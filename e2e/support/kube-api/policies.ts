/** CheckpointPolicy objects and their CRD as the Kubernetes tests hand them to the API stand-in. */
import { CRD_GROUP, CRD_VERSION, checkpointPolicyCrd } from '../../../controller/src/kube/crd.js';
import type { KubeApiStandIn } from './server.js';

/** A valid policy `name` (selecting db-* every hour) with `spec` laid over it. */
export const checkpointPolicy = (name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: `${CRD_GROUP}/${CRD_VERSION}`,
  kind: 'CheckpointPolicy',
  metadata: { name } as { name: string; finalizers?: string[] },
  spec: { selector: { names: ['db-*'] }, schedule: { every: '1h' }, ...spec } as Record<string, unknown>,
});

/** The stand-in, serving CheckpointPolicy objects through Ferry's CRD. */
export function servePolicies(api: KubeApiStandIn): void {
  api.registerCrd(checkpointPolicyCrd() as unknown as Parameters<KubeApiStandIn['registerCrd']>[0]);
}
