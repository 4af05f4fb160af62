/**
 * Pod labels for namespaced selectors. The containers an agent lists carry their pod's namespace and name
 * (containerd's CRI annotations) but not the pod's labels, which only the API server has: a pod informer
 * keeps them, so that `selector.labels` of a CheckpointPolicy object means the labels of its pods, as a
 * Deployment's or a Service's selector does.
 */
import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { PodLabelLookup } from '../policy/compile.js';
import { ResilientInformer } from './informer.js';

export class PodDirectory {
  private readonly watched: ResilientInformer<V1Pod>;

  constructor(kubeConfig: KubeConfig, onError?: (err: unknown) => void) {
    const core = kubeConfig.makeApiClient(CoreV1Api);
    this.watched = new ResilientInformer<V1Pod>(kubeConfig, '/api/v1/pods', () => core.listPodForAllNamespaces(), {
      ...(onError ? { onError } : {}),
    });
  }

  /** A pod's labels; undefined for a pod the API server does not list (yet, or any more). */
  readonly labelsOf: PodLabelLookup = (namespace, name) => {
    const pod = this.watched.informer.get(name, namespace);
    return pod ? (pod.metadata?.labels ?? {}) : undefined;
  };

  start(): Promise<void> {
    return this.watched.start();
  }

  stop(): Promise<void> {
    return this.watched.stop();
  }
}
