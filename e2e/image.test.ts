/**
 * The container image the Helm chart runs (image/build.sh: Debian 13 packages and this checkout), run as
 * the chart runs it: the agent DaemonSet's pod, rendered from helm/ferry with Helm's template engine and
 * started on this machine by a kubelet stand-in on podman (e2e/support/pod-runner.ts): init containers
 * issue the node's certificate from the chart's CA and install ferry-runc on the node, then the agent
 * serves mTLS on the node's address and checkpoints and restores a container kubelet's runc would run,
 * with the image's own node, runc and CRIU.
 *
 * The node's hostPath /etc and /var/lib/containerd are redirected to scratch directories so the test never
 * writes into this machine's configuration; /run and /sys/fs/cgroup are the machine's own, as on a node.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { issueCertificate } from '../agent/src/tls/ca.js';
import { loadTlsIdentity } from '../agent/src/tls/identity.js';
import { AgentClient } from '../agent/src/client.js';
import { renderChart } from './support/helm.js';
import { type PodSpec, type RunningPod, runPod } from './support/pod-runner.js';
import { runcCount, runcRemove, runcState, startCounting } from './support/runc.js';
import { expectCountResumed } from './support/workload.js';

const REPO = path.resolve(import.meta.dirname, '..');
// Under /run: the agent's pod sees the node's /run, where kubelet's runc keeps containers and bundles.
const scratch = `/run/ferry-image-${process.pid}`;
const runcRoot = path.join(scratch, 'runc');
const NODE = { name: 'image-node', ip: '127.0.0.1' };
const counter = `image-counter-${process.pid}`;

let image: string;
let pod: RunningPod | undefined;
let agent: AgentClient;
let rendered: Awaited<ReturnType<typeof renderChart>>;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** What setup-host.sh found this machine's CRIU to need (CRIU_FAULT=130 where breakpoints never fire). */
async function nodeCriuEnv(): Promise<{ name: string; value: string }[]> {
  const wrapper = await readFile('/usr/local/sbin/criu', 'utf8').catch(() => '');
  const fault = /CRIU_FAULT=(\d+)/.exec(wrapper)?.[1];
  return fault ? [{ name: 'CRIU_FAULT', value: fault }] : [];
}

type Manifest = (typeof rendered)['manifests'][number]['object'];
const secretsOf = (manifests: Manifest[]) =>
  Object.fromEntries(
    manifests.filter((m) => m.kind === 'Secret').map((m) => [m.metadata.name, (m as unknown as { data: Record<string, string> }).data]),
  );

test.before(async () => {
  const built = await execa('bash', [path.join(REPO, 'image/build.sh')], { all: true, reject: false });
  if (built.exitCode !== 0) throw new Error(`image/build.sh failed:\n${built.all}`);
  image = built.stdout.trim().split(/\s+/)[0] as string;
  await mkdir(scratch, { recursive: true });
  const port = await freePort();
  rendered = await renderChart({
    agent: {
      port,
      stateDir: path.join(scratch, 'state'),
      runcRoot,
      runtimeBinDir: path.join(scratch, 'node-bin'),
      extraEnv: await nodeCriuEnv(),
    },
  });
  const daemonSet = rendered.manifests.find((m) => m.object.kind === 'DaemonSet')?.object as unknown as {
    spec: { template: { spec: PodSpec } };
  };
  pod = await runPod('ferry-agent', daemonSet.spec.template.spec, {
    ...NODE,
    secrets: secretsOf(rendered.manifests.map((m) => m.object)),
    redirect: { '/etc': path.join(scratch, 'node-etc'), '/var/lib/containerd': path.join(scratch, 'node-containerd') },
  });

  // A client of the cluster: a certificate from the chart's CA, the agents' token from the chart's Secret.
  const secrets = secretsOf(rendered.manifests.map((m) => m.object));
  const caName = Object.keys(secrets).find((n) => n.endsWith('-ca')) as string;
  const caDir = path.join(scratch, 'client-ca');
  await mkdir(caDir, { recursive: true, mode: 0o700 });
  for (const f of ['ca.crt', 'ca.key']) await writeFile(path.join(caDir, f), Buffer.from(secrets[caName]?.[f] ?? '', 'base64'));
  const tls = await loadTlsIdentity(await issueCertificate(caDir, 'image-test-client'));
  const tokens = secrets[Object.keys(secrets).find((n) => n.endsWith('-tokens')) as string] ?? {};
  agent = new AgentClient(`https://${NODE.ip}:${port}`, Buffer.from(tokens['agent-token'] ?? '', 'base64').toString(), { tls });
});

test.after.always(async () => {
  await pod?.stop();
  await runcRemove(counter, runcRoot);
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

    const tlsDir = pod?.emptyDir('tls') as string;
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
