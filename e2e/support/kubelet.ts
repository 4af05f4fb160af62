/**
 * A stand-in for kubelet, for tests only: it watches the API stand-in's pods bound to its node and runs
 * them on that node's real containerd through the CRI API as kubelet does (RunPodSandbox with the pod's
 * labels and annotations on the sandbox config, the runtime handler named by the pod's RuntimeClass,
 * CreateContainer and StartContainer per container in its own PID namespace), then reports the status
 * back (phase, address, Ready, container states). A deleted pod's sandbox is stopped and removed. What it
 * leaves out of kubelet: probes, restarts, volumes, resource limits, image pulls (images are imported).
 */
import { CoreV1Api, type KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod, Watch } from '@kubernetes/client-node';
import { type ContainerConfig, type CriClient, KUBELET_NAMESPACES, type PodSandboxConfig } from './cri/client.js';

export interface FakeKubeletOptions {
  node: string;
  cri: CriClient;
  kubeConfig: KubeConfig;
  /** RuntimeClass name -> CRI runtime handler; a pod without one runs on containerd's default. */
  handlers: Record<string, string>;
  /** What a pod's image is called in this node's containerd, when it differs. */
  imageName?: (image: string) => string;
}

export interface FakeKubelet {
  /** The sandbox and containers of a pod this kubelet runs, by pod name. */
  running(namespace: string, name: string): { sandbox: string; containers: Record<string, string> } | undefined;
  stop(): Promise<void>;
}

export async function startFakeKubelet(opts: FakeKubeletOptions): Promise<FakeKubelet> {
  const core = opts.kubeConfig.makeApiClient(CoreV1Api);
  const pods = new Map<string, { sandbox: string; containers: Record<string, string> }>();
  const starting = new Set<string>();
  let queue = Promise.resolve();
  const key = (p: V1Pod) => `${p.metadata?.namespace}/${p.metadata?.name}`;

  const report = (p: V1Pod, status: object) =>
    core.patchNamespacedPodStatus(
      { namespace: p.metadata?.namespace ?? '', name: p.metadata?.name ?? '', body: { status } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );

  async function run(p: V1Pod): Promise<void> {
    const meta = p.metadata ?? {};
    const sandboxConfig: PodSandboxConfig = {
      metadata: { name: meta.name ?? '', uid: meta.uid ?? meta.name ?? '', namespace: meta.namespace ?? 'default', attempt: 0 },
      hostname: meta.name ?? '',
      labels: meta.labels ?? {},
      annotations: meta.annotations ?? {},
      linux: { securityContext: { namespaceOptions: KUBELET_NAMESPACES } },
    };
    const handler = p.spec?.runtimeClassName ? (opts.handlers[p.spec.runtimeClassName] ?? p.spec.runtimeClassName) : '';
    const sandbox = await opts.cri.runPodSandbox(sandboxConfig, handler);
    const entry = { sandbox, containers: {} as Record<string, string> };
    pods.set(key(p), entry);
    const statuses: object[] = [];
    try {
      for (const c of p.spec?.containers ?? []) {
        const config: ContainerConfig = {
          metadata: { name: c.name, attempt: 0 },
          image: { image: opts.imageName ? opts.imageName(c.image ?? '') : (c.image ?? '') },
          ...(c.command ? { command: c.command } : {}),
          ...(c.args ? { args: c.args } : {}),
          linux: { securityContext: { namespaceOptions: KUBELET_NAMESPACES } },
        };
        const id = await opts.cri.createContainer(sandbox, config, sandboxConfig);
        entry.containers[c.name] = id;
        await opts.cri.startContainer(id);
        statuses.push({
          name: c.name,
          containerID: `containerd://${id}`,
          ready: true,
          state: { running: { startedAt: new Date().toISOString() } },
        });
      }
    } catch (err) {
      // kubelet keeps the pod Pending and says why in the container's waiting state.
      await report(p, {
        phase: 'Pending',
        containerStatuses: [
          {
            name: p.spec?.containers?.[statuses.length]?.name,
            ready: false,
            state: { waiting: { reason: 'CreateContainerError', message: (err as Error).message } },
          },
        ],
      });
      return;
    }
    const ip = (await opts.cri.podSandboxStatus(sandbox)).network.ip;
    await report(p, {
      phase: 'Running',
      podIP: ip,
      conditions: [{ type: 'Ready', status: 'True' }],
      containerStatuses: statuses,
    });
  }

  async function remove(p: V1Pod): Promise<void> {
    const entry = pods.get(key(p));
    if (!entry) return;
    pods.delete(key(p));
    await opts.cri.stopPodSandbox(entry.sandbox).catch(() => undefined);
    await opts.cri.removePodSandbox(entry.sandbox).catch(() => undefined);
  }

  const onEvent = (type: string, p: V1Pod) => {
    if (p.spec?.nodeName !== opts.node) return;
    const k = key(p);
    if (type === 'DELETED' || p.metadata?.deletionTimestamp) {
      queue = queue.then(() => remove(p));
    } else if (!pods.has(k) && !starting.has(k) && !p.status?.phase) {
      starting.add(k);
      queue = queue.then(() => run(p).finally(() => starting.delete(k)));
    }
  };
  const list = await core.listPodForAllNamespaces();
  for (const p of list.items) onEvent('ADDED', p);
  const request = await new Watch(opts.kubeConfig).watch(
    '/api/v1/pods',
    { resourceVersion: list.metadata?.resourceVersion },
    onEvent,
    () => undefined,
  );
  return {
    running: (namespace, name) => pods.get(`${namespace}/${name}`),
    async stop() {
      request.abort();
      await queue.catch(() => undefined);
      for (const [k, entry] of pods) {
        pods.delete(k);
        await opts.cri.stopPodSandbox(entry.sandbox).catch(() => undefined);
        await opts.cri.removePodSandbox(entry.sandbox).catch(() => undefined);
      }
    },
  };
}
