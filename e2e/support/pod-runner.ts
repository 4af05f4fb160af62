/**
 * A stand-in for kubelet running one pod of a rendered chart on this machine with podman, for the image
 * test: what the chart's agent DaemonSet and controller Deployment need, done as kubelet does it. Init
 * containers run one after the other to completion, then the containers start; environment comes from
 * values, the downward API (metadata.name, metadata.namespace, spec.nodeName, status.hostIP,
 * status.podIP) and the chart's Secrets; $(VAR) in command and args is expanded from it; hostPID,
 * hostNetwork, privileged, hostPath, emptyDir (world-writable, as kubelet makes it) and Secret volumes
 * (with readOnly and mountPropagation), the service account's token with KUBERNETES_SERVICE_HOST/PORT,
 * runAsUser/runAsNonRoot, a read-only root file system (no tmpfs slipped in), dropped capabilities and
 * no-new-privileges are honoured; readiness is the container's httpGet probe, TLS unchecked as kubelet
 * does. A pod asking for anything else is refused, not run half-understood.
 *
 * Left out: a pod network (every pod gets the node's, so pod IP = node IP), liveness restarts, resource
 * limits, image pulls. hostPath volumes may be redirected (a node's /etc to a scratch directory) so that
 * a test never writes into this machine's own configuration.
 */
import { execa } from 'execa';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { waitFor } from './workload.js';

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  mountPropagation?: 'None' | 'HostToContainer' | 'Bidirectional';
}
export interface PodContainer {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: Mount[];
  securityContext?: {
    privileged?: boolean;
    runAsUser?: number;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[] };
  };
  readinessProbe?: { httpGet?: { path: string; port: number | string; scheme?: 'HTTP' | 'HTTPS' } };
  ports?: { name?: string; containerPort: number }[];
}
interface Volume {
  name: string;
  hostPath?: { path: string };
  emptyDir?: object;
  secret?: { secretName: string; defaultMode?: number };
}
export interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: 'RuntimeDefault' } };
  automountServiceAccountToken?: boolean;
  hostPID?: boolean;
  hostNetwork?: boolean;
  initContainers?: PodContainer[];
  containers: PodContainer[];
  volumes?: Volume[];
}

export interface NodeOfPod {
  name: string;
  ip: string;
  /** The chart's Secrets by name, data base64-encoded as in the manifests. */
  secrets: Record<string, Record<string, string>>;
  /** hostPath prefixes redirected elsewhere, e.g. { '/etc': '/tmp/node-a/etc' }. */
  redirect?: Record<string, string>;
  /** The cluster's API server as pods reach it (the `kubernetes` Service): the service account's token and CA. */
  apiServer?: { host: string; port: number; token: string; ca: Buffer };
}

export interface PodMeta {
  name: string;
  namespace: string;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface RunningPod {
  /** podman's name for a running container of the pod. */
  containerName(name: string): string;
  /** podman's logs of one of the pod's containers. */
  logs(name: string): Promise<string>;
  /** The directory standing for one of the pod's emptyDir volumes. */
  emptyDir(name: string): string;
  stop(): Promise<void>;
}

const UNDERSTOOD_POD = new Set([
  'hostPID',
  'hostNetwork',
  'initContainers',
  'containers',
  'volumes',
  'serviceAccountName',
  'automountServiceAccountToken',
  'dnsPolicy',
  'securityContext',
]);
// Fields kubelet acts on that do not change what runs on one node for a test: resources, ports, pull
// policy, and the liveness probe (restarts are left out).
const UNDERSTOOD_CONTAINER = new Set([
  'name',
  'image',
  'command',
  'args',
  'env',
  'volumeMounts',
  'securityContext',
  'readinessProbe',
  'livenessProbe',
  'ports',
  'resources',
  'imagePullPolicy',
]);
const UNDERSTOOD_SECURITY = new Set(['privileged', 'runAsUser', 'allowPrivilegeEscalation', 'readOnlyRootFilesystem', 'capabilities']);

function refuseUnknown(what: string, o: object, known: Set<string>): void {
  const unknown = Object.keys(o).filter((k) => !known.has(k));
  if (unknown.length) throw new Error(`the pod runner does not do ${what} ${unknown.join(', ')}`);
}

/** Kubernetes' $(VAR) expansion: known names are replaced, $$ is a literal $, anything else stays. */
export function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name?: string) => (m === '$$' ? '$' : (env[name as string] ?? m)));
}

export async function runPod(meta: PodMeta, spec: PodSpec, node: NodeOfPod): Promise<RunningPod> {
  refuseUnknown('pod fields', spec, UNDERSTOOD_POD);
  const { name } = meta;
  const scratch = await mkdtemp(path.join(os.tmpdir(), `ferry-pod-${name}-`));
  const started: string[] = [];
  const pod: RunningPod = {
    containerName: (c) => `${name}-${c}`,
    logs: async (c) => (await execa('podman', ['logs', `${name}-${c}`], { reject: false, all: true })).all ?? '',
    emptyDir: (v) => path.join(scratch, 'empty', v),
    stop: async () => {
      for (const c of started.reverse()) await execa('podman', ['rm', '--force', '--time', '0', c], { reject: false });
      await rm(scratch, { recursive: true, force: true });
    },
  };
  try {
    const volumes = await materializeVolumes(spec.volumes ?? [], node, scratch);
    const serviceAccount = await serviceAccountDir(spec, node, meta, scratch);
    const argsOf = (c: PodContainer) => runArgs(meta, spec, c, node, volumes, serviceAccount);
    for (const c of spec.initContainers ?? []) {
      const r = await execa('podman', ['run', '--rm', '--name', `${name}-${c.name}`, ...argsOf(c)], {
        reject: false,
        all: true,
      });
      if (r.exitCode !== 0) throw new Error(`init container ${c.name} exited ${r.exitCode}: ${r.all}`);
    }
    for (const c of spec.containers) {
      started.push(`${name}-${c.name}`);
      await execa('podman', ['run', '--detach', '--name', `${name}-${c.name}`, ...argsOf(c)]);
    }
    for (const c of spec.containers) await waitReady(pod, c, node);
    return pod;
  } catch (err) {
    await pod.stop();
    throw err;
  }
}

async function materializeVolumes(volumes: Volume[], node: NodeOfPod, scratch: string): Promise<Map<string, string>> {
  const sources = new Map<string, string>();
  for (const v of volumes) {
    if (v.hostPath) {
      const redirected = Object.entries(node.redirect ?? {}).find(
        ([from]) => v.hostPath?.path === from || v.hostPath?.path.startsWith(`${from}/`),
      );
      const source = redirected ? redirected[1] + v.hostPath.path.slice(redirected[0].length) : v.hostPath.path;
      await mkdir(source, { recursive: true });
      sources.set(v.name, source);
    } else if (v.emptyDir) {
      const dir = path.join(scratch, 'empty', v.name);
      await mkdir(dir, { recursive: true });
      await chmod(dir, 0o777);
      sources.set(v.name, dir);
    } else if (v.secret) {
      const data = node.secrets[v.secret.secretName];
      if (!data) throw new Error(`volume ${v.name}: no Secret ${v.secret.secretName} in the chart`);
      const dir = path.join(scratch, 'secret', v.name);
      await mkdir(dir, { recursive: true });
      for (const [key, value] of Object.entries(data)) {
        await writeFile(path.join(dir, key), Buffer.from(value, 'base64'));
        await chmod(path.join(dir, key), v.secret.defaultMode ?? 0o644);
      }
      sources.set(v.name, dir);
    } else {
      throw new Error(`the pod runner does not do volume ${v.name}'s kind: ${Object.keys(v).join(', ')}`);
    }
  }
  return sources;
}

/** The service account's token, CA and namespace, as kubelet projects them; undefined when not mounted. */
async function serviceAccountDir(spec: PodSpec, node: NodeOfPod, meta: PodMeta, scratch: string): Promise<string | undefined> {
  if (!node.apiServer || spec.automountServiceAccountToken === false) return undefined;
  const dir = path.join(scratch, 'serviceaccount');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'token'), node.apiServer.token);
  await writeFile(path.join(dir, 'ca.crt'), node.apiServer.ca);
  await writeFile(path.join(dir, 'namespace'), meta.namespace);
  return dir;
}

function resolveEnv(meta: PodMeta, c: PodContainer, node: NodeOfPod): Record<string, string> {
  const fields: Record<string, string> = {
    'metadata.name': meta.name,
    'metadata.namespace': meta.namespace,
    'spec.nodeName': node.name,
    'status.hostIP': node.ip,
    'status.podIP': node.ip,
  };
  // kubelet gives every pod the `kubernetes` Service's address; the pod's own variables come after.
  const env: Record<string, string> = node.apiServer
    ? { KUBERNETES_SERVICE_HOST: node.apiServer.host, KUBERNETES_SERVICE_PORT: String(node.apiServer.port) }
    : {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = expandVars(e.value, env);
    else if (e.valueFrom?.fieldRef) {
      const v = fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`env ${e.name}: the pod runner does not know field ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else if (e.valueFrom?.secretKeyRef) {
      const { name, key } = e.valueFrom.secretKeyRef;
      const v = node.secrets[name]?.[key];
      if (v === undefined) throw new Error(`env ${e.name}: no key ${key} in Secret ${name}`);
      env[e.name] = Buffer.from(v, 'base64').toString('utf8');
    } else throw new Error(`env ${e.name}: the pod runner does not do ${JSON.stringify(e.valueFrom)}`);
  }
  return env;
}

function runArgs(
  meta: PodMeta,
  spec: PodSpec,
  c: PodContainer,
  node: NodeOfPod,
  volumes: Map<string, string>,
  serviceAccount: string | undefined,
): string[] {
  refuseUnknown(`container ${c.name}'s fields`, c, UNDERSTOOD_CONTAINER);
  const security = c.securityContext ?? {};
  refuseUnknown(`container ${c.name}'s securityContext`, security, UNDERSTOOD_SECURITY);
  const env = resolveEnv(meta, c, node);
  // Every pod on the node's network: there is no pod network here (see the header).
  const args: string[] = ['--network=host'];
  if (spec.hostPID) args.push('--pid=host');
  if (security.privileged) args.push('--privileged');
  const user = security.runAsUser ?? spec.securityContext?.runAsUser;
  if (spec.securityContext?.runAsNonRoot && !user) throw new Error(`container ${c.name}: runAsNonRoot without a non-root runAsUser`);
  if (user !== undefined) args.push('--user', String(user));
  if (security.allowPrivilegeEscalation === false) args.push('--security-opt=no-new-privileges');
  // podman would mount tmpfs on /tmp, /run and /var/tmp of a read-only root; kubelet does not.
  if (security.readOnlyRootFilesystem) args.push('--read-only', '--read-only-tmpfs=false');
  for (const cap of security.capabilities?.drop ?? []) args.push(`--cap-drop=${cap.toLowerCase()}`);
  if (serviceAccount) args.push('--volume', `${serviceAccount}:${SERVICE_ACCOUNT_DIR}:ro`);
  for (const [k, v] of Object.entries(env)) args.push('--env', `${k}=${v}`);
  for (const m of c.volumeMounts ?? []) {
    const source = volumes.get(m.name);
    if (!source) throw new Error(`container ${c.name} mounts volume ${m.name}, which the pod does not have`);
    const options = [m.readOnly ? 'ro' : 'rw'];
    if (m.mountPropagation === 'HostToContainer') options.push('rslave');
    if (m.mountPropagation === 'Bidirectional') options.push('rshared');
    args.push('--volume', `${source}:${m.mountPath}:${options.join(',')}`);
  }
  // As kubelet: command replaces the image's entrypoint (and then its default arguments), args follow.
  if (c.command) args.push(`--entrypoint=${JSON.stringify(c.command.map((s) => expandVars(s, env)))}`);
  args.push(c.image, ...(c.args ?? []).map((s) => expandVars(s, env)));
  return args;
}

async function waitReady(pod: RunningPod, c: PodContainer, node: NodeOfPod): Promise<void> {
  const probe = c.readinessProbe?.httpGet;
  if (!probe) return;
  const port = typeof probe.port === 'number' ? probe.port : c.ports?.find((p) => p.name === probe.port)?.containerPort;
  if (!port) throw new Error(`container ${c.name}: readiness probe port ${probe.port} is not one of its ports`);
  const get = () =>
    new Promise<number>((resolve) => {
      // kubelet does not check an HTTPS probe's certificate.
      const req = (probe.scheme === 'HTTPS' ? httpsRequest : httpRequest)(
        { host: node.ip, port, path: probe.path, rejectUnauthorized: false, timeout: 1_000 },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', () => resolve(0));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  await waitFor(get, (status) => status >= 200 && status < 400, {
    timeoutMs: 60_000,
    everyMs: 200,
    what: `container ${c.name} to pass its readiness probe`,
  }).catch(async (err: Error) => {
    throw new Error(`${err.message}; its logs:\n${await pod.logs(c.name)}`);
  });
}
