/**
 * A CRI (runtime.v1) client over containerd's gRPC socket: the tests play kubelet with it, creating pod
 * sandboxes and containers exactly as kubelet asks the runtime to. Only the calls and fields of
 * runtime-v1.proto; promises instead of callbacks.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

const PROTO = fileURLToPath(new URL('./runtime-v1.proto', import.meta.url));

/** Which namespaces a pod's containers share; the zero value of each is POD. */
export interface NamespaceOptions {
  network?: 'POD' | 'CONTAINER' | 'NODE';
  pid?: 'POD' | 'CONTAINER' | 'NODE';
  ipc?: 'POD' | 'CONTAINER' | 'NODE';
}

/**
 * What kubelet sends for a pod without shareProcessNamespace or host namespaces: network and IPC shared by
 * the pod, a PID namespace per container. (Left out, the PID mode would be POD, its zero value.)
 */
export const KUBELET_NAMESPACES: NamespaceOptions = { network: 'POD', pid: 'CONTAINER', ipc: 'POD' };

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: NamespaceOptions } };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  logPath?: string;
  linux?: { securityContext?: { namespaceOptions?: NamespaceOptions } };
}

export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';

export interface ContainerStatus {
  id: string;
  state: ContainerState;
  exitCode: number;
  reason: string;
  message: string;
  annotations: Record<string, string>;
}

type Unary = (req: unknown, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

export class CriClient {
  private readonly service: grpc.Client & Record<string, Unary>;

  constructor(socket: string) {
    const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      runtime: { v1: { RuntimeService: new (address: string, creds: grpc.ChannelCredentials) => grpc.Client } };
    };
    this.service = new pkg.runtime.v1.RuntimeService(`unix://${socket}`, grpc.credentials.createInsecure()) as grpc.Client &
      Record<string, Unary>;
  }

  private call<T>(method: string, req: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = this.service[method];
      if (!fn) throw new Error(`no CRI method ${method}`);
      fn.call(this.service, req, (err, res) =>
        err ? reject(new Error(`CRI ${method}: ${err.details || err.message}`)) : resolve(res as T),
      );
    });
  }

  async version(): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    return this.call('Version', { version: 'v1' });
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler: string): Promise<string> {
    return (await this.call<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler })).podSandboxId;
  }

  async podSandboxStatus(id: string): Promise<{ state: string; network: { ip: string } }> {
    return (await this.call<{ status: { state: string; network: { ip: string } } }>('PodSandboxStatus', { podSandboxId: id })).status;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id });
  }

  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    return (await this.call<{ containerId: string }>('CreateContainer', { podSandboxId, config, sandboxConfig })).containerId;
  }

  async startContainer(id: string): Promise<void> {
    await this.call('StartContainer', { containerId: id });
  }

  async stopContainer(id: string, timeoutSeconds = 0): Promise<void> {
    await this.call('StopContainer', { containerId: id, timeout: timeoutSeconds });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call('RemoveContainer', { containerId: id });
  }

  async containerStatus(id: string): Promise<ContainerStatus> {
    return (await this.call<{ status: ContainerStatus }>('ContainerStatus', { containerId: id })).status;
  }

  close(): void {
    this.service.close();
  }
}
