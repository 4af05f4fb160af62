/**
 * The container image the Helm chart runs (image/build.sh: Debian 13 packages and this checkout), run as
 * the chart runs it. helm/ferry is rendered with Helm's template engine; its agent DaemonSet's pod and its
 * controller Deployment's pod are started on this machine by a kubelet stand-in on podman
 * (e2e/support/pod-runner.ts), against the Kubernetes API stand-in served over HTTPS as a pod's service
 * account reaches it. The agent's init containers issue the node's certificate from the chart's CA and
 * install ferry-runc on the node; the agent serves mTLS on the node's address and checkpoints and restores
 * a container kubelet's runc would run, with the image's own node, runc and CRIU. The controller runs as
 * the chart confines it (non-root, read-only root, no capabilities), takes the Lease, finds the agent pod
 * through the API and checkpoints a pod's container for a CheckpointPolicy object.
 *
 * The node's hostPath /etc and /var/lib/containerd are redirected to scratch directories so the test never
 * writes into this machine's configuration; /run and /sys/fs/cgroup are the machine's own, as on a node.
 * Every pod shares the node's network (there is no pod network here), so one controller replica.
 */
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import test from 'ava';
import { execa } from 'execa';
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../agent/src/runtimes/lazy.js';
import { AgentClient } from '../agent/src/client.js';
import { initCa, issueCertificate } from '../agent/src/tls/ca.js';
import { loadTlsIdentity, type TlsIdentity } from '../agent/src/tls/identity.js';
import { ControllerClient } from '../controller/src/client.js';
import { CRD_GROUP, CRD_VERSION, POLICY_PLURAL } from '../controller/src/kube/crd.js';
import { CHECKPOINT_PLURAL, checkpointCrd, migrationCrd } from '../controller/src/kube/record-crds.js';
import { CRI } from '../controller/src/policy/compile.js';
import { renderChart } from './support/helm.js';
import { checkpointPolicy, servePolicies } from './support/kube-api/policies.js';
import { type KubeApiStandIn, startKubeApi } from './support/kube-api/server.js';
import { type PodSpec, type RunningPod, runPod } from './support/pod-runner.js';
import { runcCount, runcRemove, runcState, startCounting, startRuncCounter } from './support/runc.js';
import { scaled } from './support/time.js';
import { expectCountResumed, waitFor } from './support/workload.js';

const REPO = path.resolve(import.meta.dirname, '..');
// Under /run: the agent's pod sees the node's /run, where kubelet's runc keeps containers and bundles.
const scratch = `/run/ferry-image-${process.pid}`;
const runcRoot = path.join(scratch, 'runc');
const NODE = { name: 'image-node', ip: '127.0.0.1' };
const RELEASE_NS = 'ferry-system';
const APP_NS = 'shop';
const counter = `image-counter-${process.pid}`;
const podCounter = `image-pod-counter-${process.pid}`;

let image: string;
const pods: RunningPod[] = [];
let agentPod: RunningPod;
let controllerPodName: string;
let api: KubeApiStandIn;
let agent: AgentClient;
let controller: ControllerClient;
let agentPort: number;
let rendered: Awaited<ReturnType<typeof renderChart>>;

/** What setup-host.sh found this machine's CRIU to need (CRIU_FAULT=130 where breakpoints never fire). */
async function nodeCriuEnv(): Promise<{ name: string; value: string }[]> {
  const wrapper = await readFile('/usr/local/sbin/criu', 'utf8').catch(() => '');
  const fault = /CRIU_FAULT=(\d+)/.exec(wrapper)?.[1];
  return fault ? [{ name: 'CRIU_FAULT', value: fault }] : [];
}

type Manifest = (typeof rendered)['manifests'][number]['object'];
type Workload = { metadata: { name: string }; spec: { template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } };
const secretsOf = (manifests: Manifest[]) =>
  Object.fromEntries(
    manifests.filter((m) => m.kind === 'Secret').map((m) => [m.metadata.name, (m as unknown as { data: Record<string, string> }).data]),
  );
const secret = (suffix: string) => {
  const all = secretsOf(rendered.manifests.map((m) => m.object));
  return all[Object.keys(all).find((n) => n.endsWith(suffix)) as string] ?? {};
};
const decoded = (data: Record<string, string>, key: string) => Buffer.from(data[key] ?? '', 'base64');

/**
 * As the DaemonSet or Deployment controller and kubelet would: the pod object created in the API from the
 * workload's template, bound to the node, run by the stand-in, then reported Running and Ready.
 */
async function startPodOf(kind: 'DaemonSet' | 'Deployment', apiServerCa: Buffer): Promise<{ pod: RunningPod; name: string }> {
  const workload = rendered.manifests.find((m) => m.object.kind === kind)?.object as unknown as Workload;
  const name = `${workload.metadata.name}-${kind === 'DaemonSet' ? 'x7k2p' : '5d8f9-q4w7z'}`;
  const core = api.kubeConfig(RELEASE_NS).makeApiClient(CoreV1Api);
  const body = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: RELEASE_NS, labels: workload.spec.template.metadata.labels },
    spec: { ...workload.spec.template.spec, nodeName: NODE.name },
  } as V1Pod;
  await core.createNamespacedPod({ namespace: RELEASE_NS, body });
  const pod = await runPod({ name, namespace: RELEASE_NS }, workload.spec.template.spec, {
    ...NODE,
    secrets: secretsOf(rendered.manifests.map((m) => m.object)),
    redirect: { '/etc': path.join(scratch, 'node-etc'), '/var/lib/containerd': path.join(scratch, 'node-containerd') },
    apiServer: { host: '127.0.0.1', port: Number(new URL(api.url).port), token: api.token, ca: apiServerCa },
  });
  pods.push(pod);
  await core.patchNamespacedPodStatus(
    {
      namespace: RELEASE_NS,
      name,
      body: { status: { phase: 'Running', hostIP: NODE.ip, podIP: NODE.ip, conditions: [{ type: 'Ready', status: 'True' }] } },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  return { pod, name };
}

/** A client of the cluster: a certificate from the chart's CA. */
async function clusterClientIdentity(): Promise<TlsIdentity> {
  const caDir = path.join(scratch, 'client-ca');
  await mkdir(caDir, { recursive: true, mode: 0o700 });
  for (const f of ['ca.crt', 'ca.key']) await writeFile(path.join(caDir, f), decoded(secret('-ca'), f));
  return loadTlsIdentity(await issueCertificate(caDir, 'image-test-client'));
}

test.before(async () => {
  const built = await execa('bash', [path.join(REPO, 'image/build.sh')], { all: true, reject: false });
  if (built.exitCode !== 0) throw new Error(`image/build.sh failed:\n${built.all}`);
  image = built.stdout.trim().split(/\s+/)[0] as string;
  await mkdir(scratch, { recursive: true });

  // The API server's own CA and certificate, as the service account's ca.crt names it.
  const apiCa = path.join(scratch, 'apiserver-ca');
  await initCa(apiCa);
  const apiCert = await issueCertificate(apiCa, 'apiserver', { hosts: ['127.0.0.1'] });
  api = await startKubeApi({ tls: { cert: await readFile(apiCert.cert), key: await readFile(apiCert.key) } });
  servePolicies(api);
  for (const crd of [migrationCrd(), checkpointCrd()]) api.registerCrd(crd as unknown as Parameters<KubeApiStandIn['registerCrd']>[0]);

  agentPort = await freePort();
  const controllerPort = await freePort();
  rendered = await renderChart(
    {
      controller: { replicas: 1, port: controllerPort },
      agent: {
        port: agentPort,
        stateDir: path.join(scratch, 'state'),
        runcRoot,
        runtimeBinDir: path.join(scratch, 'node-bin'),
        extraEnv: await nodeCriuEnv(),
      },
    },
    'ferry',
    RELEASE_NS,
  );
  const apiServerCa = await readFile(path.join(apiCa, 'ca.crt'));
  agentPod = (await startPodOf('DaemonSet', apiServerCa)).pod;
  controllerPodName = (await startPodOf('Deployment', apiServerCa)).name;

  const tls = await clusterClientIdentity();
  agent = new AgentClient(`https://${NODE.ip}:${agentPort}`, decoded(secret('-tokens'), 'agent-token').toString(), { tls });
  controller = new ControllerClient(`https://127.0.0.1:${controllerPort}`, decoded(secret('-tokens'), 'controller-token').toString(), tls);
});

test.after.always(async () => {
  for (const pod of pods.reverse()) await pod.stop();
  await api?.close();
  for (const id of [counter, podCounter]) await runcRemove(id, runcRoot);
  await rm(scratch, { recursive: true, force: true });
});

test.serial('the image holds node >= 20, CRIU 4, runc, openssl and ferry-runc; ferry is its entrypoint', async (t) => {
  const inImage = (script: string) => execa('podman', ['run', '--rm', '--entrypoint', '/bin/sh', image, '-c', script]);
  const node = (await inImage('node --version')).stdout.trim();
  t.true(Number(/^v(\d+)/.exec(node)?.[1]) >= 20, node);
  t.regex((await inImage('criu --version')).stdout, /Version: 4\./);
  t.regex((await inImage('runc --version')).stdout, /runc version 1\./);
  t.regex((await inImage('openssl version')).stdout, /OpenSSL 3/);
  await t.notThrowsAsync(inImage('test -x /opt/ferry/agent/bin/ferry-runc'));
  const help = await execa('podman', ['run', '--rm', image, '--help']);
  t.regex(help.stdout, /Checkpoint, restore and move running containers with CRIU/);
});

test.serial(
  "the chart's init containers issue the node's certificate from the chart's CA and install ferry-runc on the node",
  async (t) => {
    const values = rendered.values as { agent: { runtimeBinDir: string; containerdConfigDir: string }; runtimeClass: { name: string } };
    const installed = path.join(values.agent.runtimeBinDir, 'ferry-runc');
    t.true(((await stat(installed)).mode & 0o111) !== 0, 'ferry-runc is executable on the node');
    t.deepEqual(await readFile(installed), await readFile(path.join(REPO, 'agent/bin/ferry-runc')));
    const toml = await readFile(
      path.join(scratch, 'node-etc', values.agent.containerdConfigDir.replace(/^\/etc\//, ''), 'ferry.toml'),
      'utf8',
    );
    t.true(toml.includes(`runtimes.${values.runtimeClass.name}]`), toml);
    t.true(toml.includes(`BinaryName = "${installed}"`), toml);
    const conf = await readFile(path.join(scratch, 'node-etc', 'ferry', 'ferry-runc.conf'), 'utf8');
    t.true(conf.includes(`FERRY_IMAGE_STORE=${path.join(scratch, 'state')}/images`), conf);

    const tlsDir = agentPod.emptyDir('tls');
    const cert = new X509Certificate(await readFile(path.join(tlsDir, `${NODE.name}.crt`)));
    t.regex(cert.subjectAltName ?? '', new RegExp(`DNS:${NODE.name}`));
    t.regex(cert.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    t.true(cert.verify(new X509Certificate(await readFile(path.join(tlsDir, 'ca.crt'))).publicKey), "signed by the chart's CA");
    await t.throwsAsync(stat(path.join(tlsDir, 'ca.key')), undefined, "the CA key is not left to the agent's container");
  },
);

test.serial('the agent from the image, as the DaemonSet runs it, checkpoints a container on its node and restores it', async (t) => {
  t.is((await agent.health()).node, NODE.name);
  const caps = await agent.node();
  t.true(caps.criu.available, `the image's CRIU on this node: ${caps.criu.problem}`);
  t.regex(caps.criu.version ?? '', /^4\./);

  await startCounting(counter, path.join(scratch, 'bundles'), runcRoot);
  const before = await runcCount(counter, runcRoot);
  const manifest = await agent.checkpoint({ runtime: 'runc', container: counter });
  t.is(await runcState(counter, runcRoot), undefined, 'a checkpoint without leaveRunning ends the container');
  await agent.restore(manifest.id);
  const { next } = await expectCountResumed(() => runcCount(counter, runcRoot), before);
  t.log(`checkpoint ${manifest.id} by CRIU ${caps.criu.version} in the image: count ${before} before, ${next} after restore`);
});

test.serial(
  'the controller from the image, confined as the Deployment says, leads by Lease and registers the agent pod found through the API',
  async (t) => {
    const lease = await api
      .kubeConfig(RELEASE_NS)
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ namespace: RELEASE_NS, name: 'ferry-controller' });
    t.is(lease.spec?.holderIdentity, controllerPodName, 'the pod name from the downward API is its identity');
    const nodes = await waitFor(
      () => controller.nodes(),
      (ns) => ns.some((n) => n.name === NODE.name && n.healthy),
      { timeoutMs: scaled(30_000), what: 'the agent pod to be registered as a healthy node' },
    );
    t.is(
      nodes.find((n) => n.name === NODE.name)?.url,
      `https://${NODE.ip}:${agentPort}`,
      'over mTLS, with the certificates the chart issued',
    );
  },
);

test.serial(
  'a CheckpointPolicy object: the controller from the image has the agent from the image checkpoint the pod, recorded as a Checkpoint object',
  async (t) => {
    // A pod's container as containerd's CRI plugin labels it, on the node's runc root.
    await startRuncCounter(podCounter, path.join(scratch, 'bundles'), {
      root: runcRoot,
      annotations: { [CRI.namespace]: APP_NS, [CRI.pod]: 'orders-0', [CRI.container]: 'db', [CRI.type]: 'container' },
    });
    const custom = api.kubeConfig(APP_NS).makeApiClient(CustomObjectsApi);
    await custom.createNamespacedCustomObject({
      group: CRD_GROUP,
      version: CRD_VERSION,
      namespace: APP_NS,
      plural: POLICY_PLURAL,
      body: checkpointPolicy('orders', { selector: { names: ['orders-0'] }, schedule: { every: '2s' }, retention: { keepLast: 2 } }),
    });
    const records = await waitFor(
      async () =>
        (
          (await custom.listNamespacedCustomObject({
            group: CRD_GROUP,
            version: CRD_VERSION,
            namespace: APP_NS,
            plural: CHECKPOINT_PLURAL,
          })) as { items: { metadata: { name: string }; spec: { node: string; container: string } }[] }
        ).items,
      (items) => items.length > 0,
      { timeoutMs: scaled(60_000), what: 'a Checkpoint object for the policy' },
    );
    const record = records[0];
    t.is(record?.spec.node, NODE.name);
    const kept = await agent.checkpoints();
    t.true(
      kept.some((c) => c.id === record?.metadata.name),
      `the agent keeps ${record?.metadata.name}: ${kept.map((c) => c.id).join(', ')}`,
    );
    t.is(await runcState(podCounter, runcRoot), 'running', 'a policy checkpoint leaves the pod running');
  },
);
