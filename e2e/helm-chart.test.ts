/**
 * The Helm chart (helm/ferry), rendered by Helm's template engine (Go text/template + sprig, built from
 * Debian's packages: helm cannot be installed here) for default and edge values; every manifest checked
 * against the Kubernetes schema of its kind (kubernetes-models), the parts that matter checked by name, and
 * values.schema.json refusing values that make no sense.
 */
import { X509Certificate } from 'node:crypto';
import test from 'ava';
import { Ajv } from 'ajv';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CHART_DIR, type RenderedChart, renderChart } from './support/helm.js';

type Manifest = RenderedChart['manifests'][number]['object'];

/** The kubernetes-models class for a manifest's apiVersion and kind, e.g. kubernetes-models/apps/v1/Deployment. */
async function validateKind(m: Manifest): Promise<void> {
  const [group, version] = m.apiVersion.includes('/') ? m.apiVersion.split('/') : ['', m.apiVersion];
  const mod = (await import(`kubernetes-models/${group ? `${group}/` : ''}${version}/${m.kind}`)) as Record<
    string,
    new (
      o: unknown,
    ) => { validate(): void }
  >;
  const Model = mod[m.kind];
  if (!Model) throw new Error(`no model for ${m.apiVersion} ${m.kind}`);
  new Model(m).validate();
}

interface Container {
  args: string[];
  image: string;
  env: { name: string; value?: string; valueFrom?: { fieldRef?: unknown; secretKeyRef?: { name: string; key: string } } }[];
  securityContext: { allowPrivilegeEscalation?: boolean; privileged?: boolean };
}
interface Workload {
  spec: {
    replicas?: number;
    template: {
      metadata?: { labels?: Record<string, string> };
      spec: {
        hostPID?: boolean;
        containers: Container[];
        initContainers?: { name: string; args: string[] }[];
        volumes?: { name: string; secret?: { secretName: string } }[];
        securityContext: { runAsNonRoot?: boolean };
      };
    };
  };
}
interface Role {
  metadata: { namespace?: string };
  rules: { verbs: string[]; resources: string[]; apiGroups: string[] }[];
}

const byKind = <T = Manifest>(r: RenderedChart, kind: string) =>
  r.manifests.filter((m) => m.object.kind === kind).map((m) => m.object as unknown as T);
const one = <T = Manifest>(r: RenderedChart, kind: string) => byKind<T>(r, kind)[0] as T;
type Secret = { metadata: { name: string }; data: Record<string, string> };
const secretNamed = (r: RenderedChart, suffix: string) =>
  byKind<Secret>(r, 'Secret').find((x) => x.metadata.name.endsWith(suffix)) as Secret;

test('default values: every manifest is valid for its kind, and the chart has every part', async (t) => {
  const r = await renderChart();
  for (const m of r.manifests) {
    await t.notThrowsAsync(validateKind(m.object), `${m.source}: ${m.object.kind} ${m.object.metadata.name}`);
  }
  t.deepEqual([...new Set(r.manifests.map((m) => m.object.kind))].sort(), [
    'ClusterRole',
    'ClusterRoleBinding',
    'DaemonSet',
    'Deployment',
    'NetworkPolicy',
    'Role',
    'RoleBinding',
    'RuntimeClass',
    'Secret',
    'Service',
    'ServiceAccount',
  ]);
  t.regex(r.notes, /runtimeClassName: ferry/);
});

test('controller: two replicas with leader election, non-root, tokens from the secret', async (t) => {
  const r = await renderChart();
  const d = one<Workload>(r, 'Deployment');
  t.is(d.spec.replicas, 2);
  const c = d.spec.template.spec.containers[0] as Container;
  t.true(c.args.includes('--kube'));
  t.truthy(c.env.find((e) => e.name === 'POD_NAME')?.valueFrom?.fieldRef);
  // It finds the agents through the API: its selector picks exactly the agent DaemonSet's pods.
  const agents = one<Workload>(r, 'DaemonSet').spec.template.metadata?.labels ?? {};
  const selector = c.args.find((a) => a.startsWith('--agent-selector='))?.slice('--agent-selector='.length) ?? '';
  t.deepEqual(Object.fromEntries(selector.split(',').map((kv) => kv.split('='))), agents);
  t.true(c.args.includes('--agent-port=7070'));
  t.is(c.env.find((e) => e.name === 'FERRY_AGENT_TOKEN')?.valueFrom?.secretKeyRef?.key, 'agent-token');
  t.is(c.securityContext.allowPrivilegeEscalation, false);
  t.true(d.spec.template.spec.securityContext.runAsNonRoot);
});

test('agent: privileged in the node PID namespace, ferry-runc and the containerd entry installed by an init container', async (t) => {
  const r = await renderChart();
  const spec = one<Workload>(r, 'DaemonSet').spec.template.spec;
  const agent = spec.containers[0] as Container;
  t.true(spec.hostPID);
  t.true(agent.securityContext.privileged);
  t.true(agent.args.includes('--runc-root=/run/containerd/runc/k8s.io'));
  const init = spec.initContainers?.find((c) => c.name === 'install-ferry-runc')?.args[0] ?? '';
  t.regex(init, /BinaryName = "\/opt\/ferry\/bin\/ferry-runc"/);
  t.regex(init, /container_annotations = \["ferry\.dev\/\*"\]/);
  t.is(one<{ handler: string }>(r, 'RuntimeClass').handler, 'ferry');
});

test('RBAC: least privilege, no wildcards, no secrets, leases only in the release namespace', async (t) => {
  const r = await renderChart();
  const rules = [...byKind<Role>(r, 'ClusterRole'), ...byKind<Role>(r, 'Role')].flatMap((role) => role.rules);
  for (const rule of rules) {
    for (const list of [rule.verbs, rule.resources, rule.apiGroups]) t.false(list.includes('*'), JSON.stringify(rule));
    t.false(rule.resources.includes('secrets'));
  }
  const clusterWide = byKind<Role>(r, 'ClusterRole').flatMap((role) => role.rules);
  t.false(clusterWide.some((rule) => rule.resources.includes('leases')));
  t.is(one<Role>(r, 'Role').metadata.namespace, 'ferry-system');
});

test('tokens: generated when not given, taken from values when given', async (t) => {
  const generated = secretNamed(await renderChart(), '-tokens').data;
  t.is(Buffer.from(generated['agent-token'] ?? '', 'base64').length, 32);
  const given = secretNamed(await renderChart({ tokens: { agent: 'a'.repeat(20), controller: 'c'.repeat(20) } }), '-tokens').data;
  t.is(Buffer.from(given['agent-token'] ?? '', 'base64').toString(), 'a'.repeat(20));
});

test('edge values: three replicas, no network policy, no runtime install, no RuntimeClass; still valid', async (t) => {
  const r = await renderChart({
    controller: { replicas: 3 },
    networkPolicy: { enabled: false },
    agent: { installRuntime: false, stateDir: '/data/ferry' },
    runtimeClass: { create: false },
    image: { repository: 'registry.example/ferry', tag: 'v9' },
  });
  for (const m of r.manifests) await t.notThrowsAsync(validateKind(m.object), m.source);
  t.is(one<Workload>(r, 'Deployment').spec.replicas, 3);
  t.is(byKind(r, 'NetworkPolicy').length, 0);
  t.is(byKind(r, 'RuntimeClass').length, 0);
  const ds = one<Workload>(r, 'DaemonSet').spec.template.spec;
  t.deepEqual(
    ds.initContainers?.map((c) => c.name),
    ['issue-certificate'],
  );
  t.is(ds.containers[0]?.image, 'registry.example/ferry:v9');
  t.true(ds.containers[0]?.args.includes('--state-dir=/data/ferry'));
});

test('mTLS by default: a CA generated once, each pod issues its certificate for its address, HTTPS probes; plain only when tls.enabled is false', async (t) => {
  const r = await renderChart();
  const crt = Buffer.from(secretNamed(r, '-ca').data['ca.crt'] ?? '', 'base64').toString();
  t.regex(crt, /^-----BEGIN CERTIFICATE-----/);
  t.is(new X509Certificate(crt).ca, true, 'a CA certificate');
  for (const kind of ['DaemonSet', 'Deployment']) {
    const spec = one<Workload>(r, kind).spec.template.spec;
    const main = spec.containers[0] as Container & { readinessProbe: { httpGet: { scheme: string } } };
    t.true(
      main.args.some((a) => a.startsWith('--tls-cert=/tls/')),
      `${kind} serves mTLS`,
    );
    t.false(main.args.includes('--allow-plain-http'));
    t.is(main.readinessProbe.httpGet.scheme, 'HTTPS');
    const issue = spec.initContainers?.find((c) => c.name === 'issue-certificate')?.args[0] ?? '';
    t.regex(issue, /ferry tls issue \S+ --dir \/tls/);
    t.regex(issue, /rm -f \/tls\/ca\.key/, 'the CA key does not reach the running container');
  }
  t.regex(one<Workload>(r, 'DaemonSet').spec.template.spec.initContainers?.[0]?.args[0] ?? '', /--host \$NODE_IP/);

  const plain = await renderChart({ tls: { enabled: false } });
  const agent = one<Workload>(plain, 'DaemonSet').spec.template.spec;
  t.true(agent.containers[0]?.args.includes('--allow-plain-http'));
  t.false((agent.volumes ?? []).some((v) => v.name === 'tls'));
  t.false(byKind<Secret>(plain, 'Secret').some((x) => x.metadata.name.endsWith('-ca')));
  for (const m of plain.manifests) await t.notThrowsAsync(validateKind(m.object), m.source);
});

test('checkpoints at rest: compression always passed, the image key mounted from its secret when named', async (t) => {
  const plain = one<Workload>(await renderChart(), 'DaemonSet').spec.template.spec;
  t.true(plain.containers[0]?.args.includes('--compress=none'));
  t.false(plain.containers[0]?.args.some((a) => a.startsWith('--image-key')));
  const r = await renderChart({ agent: { compress: 'zstd', imageKeySecret: 'ferry-image-key' } });
  for (const m of r.manifests) await t.notThrowsAsync(validateKind(m.object), m.source);
  const ds = one<Workload>(r, 'DaemonSet').spec.template.spec;
  t.true(ds.containers[0]?.args.includes('--compress=zstd'));
  t.true(ds.containers[0]?.args.includes('--image-key=/etc/ferry/image-key/image.key'));
  t.is(ds.volumes?.find((v) => v.name === 'image-key')?.secret?.secretName, 'ferry-image-key');
});

test("agent.extraEnv: the node's CRIU settings reach the agent after its own environment", async (t) => {
  const plain = one<Workload>(await renderChart(), 'DaemonSet').spec.template.spec.containers[0];
  const r = await renderChart({ agent: { extraEnv: [{ name: 'CRIU_FAULT', value: '130' }] } });
  for (const m of r.manifests) await t.notThrowsAsync(validateKind(m.object), m.source);
  const env = one<Workload>(r, 'DaemonSet').spec.template.spec.containers[0]?.env ?? [];
  t.deepEqual(env.slice(0, plain?.env.length), plain?.env);
  t.deepEqual(env.at(-1), { name: 'CRIU_FAULT', value: '130' });
});

test('values.schema.json accepts the defaults and refuses nonsense, naming the value', async (t) => {
  const schema = JSON.parse(await readFile(path.join(CHART_DIR, 'values.schema.json'), 'utf8')) as object;
  const validateValues = new Ajv({ allErrors: true, strict: false }).compile(schema);
  t.true(validateValues((await renderChart()).values), JSON.stringify(validateValues.errors));
  const refused: [Record<string, unknown>, string][] = [
    [{ controller: { replicas: 0 } }, '/controller/replicas'],
    [{ image: { pullPolicy: 'Sometimes' } }, '/image/pullPolicy'],
    [{ tokens: { agent: 'short' } }, '/tokens/agent'],
    [{ agent: { stateDir: 'relative/dir' } }, '/agent/stateDir'],
    [{ agent: { port: 70000 } }, '/agent/port'],
    [{ agent: { extraEnv: [{ name: 'CRIU FAULT', value: '130' }] } }, '/agent/extraEnv/0/name'],
    [{ replicas: 2 }, ''],
  ];
  for (const [values, at] of refused) {
    const merged = (await renderChart(values)).values;
    t.false(validateValues(merged), JSON.stringify(values));
    t.true(
      (validateValues.errors ?? []).some((e) => e.instancePath === at),
      `${JSON.stringify(values)}: ${JSON.stringify(validateValues.errors)}`,
    );
  }
});
