/**
 * A private containerd per test node (Debian's containerd, real): its own root, state, sockets and runc
 * root, started inside the node's network namespace, with the CRI plugin off (these tests drive it with
 * ctr). Containers run through agent/bin/ferry-runc, configured by a file that names the node agent's
 * image store, as the Helm chart's init container will write it on a real node.
 */
import { execa } from 'execa';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type NodeProcess, startProcessIn, type TestNetwork } from './netns.js';
import { scaled } from './time.js';

export const FERRY_RUNC = fileURLToPath(new URL('../../agent/bin/ferry-runc', import.meta.url));
/** ctr's default namespace: the runc root of its containers is `<runc root>/default`. */
const NAMESPACE = 'default';
/** The namespace of the CRI plugin (kubelet's containers). */
export const CRI_NAMESPACE = 'k8s.io';
export const CRI_HANDLER = 'ferry';

export interface ContainerdNode {
  address: string;
  /** runc's state root for this containerd's containers: what the node's agent gets as --runc-root. */
  runcRoot: string;
  /** The same for the containers of pods (CRI, namespace k8s.io). */
  criRuncRoot: string;
  ctr(args: string[]): Promise<string>;
  /** `ctr run -d` through ferry-runc; annotations become the bundle's OCI annotations. */
  run(image: string, id: string, argv: string[], annotations?: Record<string, string>): Promise<void>;
  /** The task's pid and status as `ctr task ls` reports them; undefined when there is no task. */
  task(id: string): Promise<{ pid: number; status: string } | undefined>;
  stop(): Promise<void>;
}

export interface ContainerdOptions {
  /** The node agent's image store, where ferry-runc finds checkpoints. */
  imageStore: string;
  /**
   * Serve the CRI API as on a Kubernetes node: runtime handler `ferry` runs containers through ferry-runc
   * and passes ferry.dev/* annotations into their OCI spec; pods get addresses from `subnet` on a CNI
   * bridge inside the node's namespace; sandboxes run `sandboxImage`.
   */
  cri?: { subnet: string; sandboxImage: string };
}

export async function startContainerd(net: TestNetwork, node: string, dir: string, opts: ContainerdOptions): Promise<ContainerdNode> {
  await mkdir(dir, { recursive: true });
  const address = path.join(dir, 'containerd.sock');
  const runcBase = path.join(dir, 'runc');
  const runcConfig = path.join(dir, 'ferry-runc.conf');
  await writeFile(runcConfig, `FERRY_IMAGE_STORE=${opts.imageStore}\nFERRY_RUNC_STATE=${path.join(dir, 'ferry-runc')}\n`);
  const config = path.join(dir, 'config.toml');
  const cri = opts.cri ? await criConfig(dir, node, runcBase, opts.cri) : ['disabled_plugins = ["io.containerd.grpc.v1.cri"]'];
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${path.join(dir, 'root')}"`,
      `state = "${path.join(dir, 'state')}"`,
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${address}.ttrpc"`,
      ...cri,
      '',
    ].join('\n'),
  );
  // The shims inherit containerd's environment, and ferry-runc reads its settings from there.
  const proc: NodeProcess = await startProcessIn(net, node, ['containerd', '--config', config], {
    readyLine: /containerd successfully booted/,
    timeoutMs: scaled(30_000),
    env: { ...process.env, FERRY_RUNC_CONFIG: runcConfig },
  });
  const ctr = async (args: string[]) => (await execa('ctr', ['--address', address, ...args])).stdout;
  const task = async (id: string) => {
    const line = (await ctr(['task', 'ls'])).split('\n').find((l) => l.split(/\s+/)[0] === id);
    const [, pid, status] = line?.split(/\s+/) ?? [];
    return line ? { pid: Number(pid), status: String(status) } : undefined;
  };
  return {
    address,
    runcRoot: path.join(runcBase, NAMESPACE),
    criRuncRoot: path.join(runcBase, CRI_NAMESPACE),
    ctr,
    task,
    async run(image, id, argv, annotations = {}) {
      const notes = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
      await ctr(['run', '-d', '--null-io', '--runc-binary', FERRY_RUNC, '--runc-root', runcBase, ...notes, image, id, ...argv]);
    },
    async stop() {
      // Shims outlive containerd: delete every task first (--force kills it), then the containers. Pods
      // should be gone through CRI already (their network is torn down there); this catches the rest.
      for (const ns of [NAMESPACE, CRI_NAMESPACE]) {
        const ids = (await ctr(['--namespace', ns, 'container', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
        for (const id of ids) {
          await ctr(['--namespace', ns, 'task', 'delete', '--force', id]).catch(() => undefined);
          await ctr(['--namespace', ns, 'container', 'rm', id]).catch(() => undefined);
        }
      }
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The CRI plugin's settings: the `ferry` handler as the Helm chart will register it on a node, CNI from
 * Debian's containernetworking-plugins with a bridge and addresses of the node's own.
 */
async function criConfig(dir: string, node: string, runcBase: string, cri: { subnet: string; sandboxImage: string }): Promise<string[]> {
  const cniDir = path.join(dir, 'cni');
  await mkdir(cniDir, { recursive: true });
  await writeFile(
    path.join(cniDir, '10-ferry.conflist'),
    JSON.stringify({
      cniVersion: '0.4.0',
      name: `ferry-test-${node}`,
      plugins: [
        {
          type: 'bridge',
          bridge: 'ferry-cni0',
          isGateway: true,
          ipMasq: false,
          ipam: { type: 'host-local', ranges: [[{ subnet: cri.subnet }]], dataDir: path.join(dir, 'cni-ipam') },
        },
      ],
    }),
  );
  const plugin = '[plugins."io.containerd.grpc.v1.cri"]';
  const runtimes = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes';
  return [
    plugin,
    `  sandbox_image = "${cri.sandboxImage}"`,
    '  disable_apparmor = true',
    // Sandboxes ask for oom_score_adj -998, which this machine's kernel refuses (EIO); containerd then
    // gives containers no lower a score than its own.
    '  restrict_oom_score_adj = true',
    '  stream_server_address = "127.0.0.1"',
    `${plugin.slice(0, -1)}.cni]`,
    '  bin_dir = "/usr/lib/cni"',
    `  conf_dir = "${cniDir}"`,
    `${plugin.slice(0, -1)}.containerd]`,
    '  snapshotter = "overlayfs"',
    '  default_runtime_name = "runc"',
    `${runtimes}.runc]`,
    '  runtime_type = "io.containerd.runc.v2"',
    `${runtimes}.runc.options]`,
    `  Root = "${runcBase}"`,
    `${runtimes}.${CRI_HANDLER}]`,
    '  runtime_type = "io.containerd.runc.v2"',
    '  container_annotations = ["ferry.dev/*"]',
    '  pod_annotations = ["ferry.dev/*"]',
    `${runtimes}.${CRI_HANDLER}.options]`,
    `  BinaryName = "${FERRY_RUNC}"`,
    `  Root = "${runcBase}"`,
  ];
}

/**
 * An image podman holds, imported into each containerd under podman's own name (the archive's
 * org.opencontainers.image.ref.name). Not also under an --index-name: when the two names are equal, the
 * second record replaces the first while containerd still unpacks it, and its garbage collector may take
 * the index away first ("content digest ... not found", seen once in CI).
 */
export async function importFromPodman(
  nodes: ContainerdNode[],
  podmanImage: string,
  scratch: string,
  namespace = NAMESPACE,
): Promise<void> {
  const archive = path.join(scratch, `${podmanImage.replace(/\W/g, '_')}.oci.tar`);
  await execa('podman', ['save', '--format', 'oci-archive', '-o', archive, podmanImage]);
  for (const n of nodes) await n.ctr(['--namespace', namespace, 'images', 'import', archive]);
}

/**
 * A pod sandbox image made from the busybox image: a shell that waits, as kubelet's pause does, and ends
 * on SIGTERM. No registry is reachable here, so the usual pause image cannot be pulled.
 */
export async function buildSandboxImage(podmanImage: string, name: string): Promise<void> {
  const have = await execa('podman', ['image', 'exists', name]).then(
    () => true,
    () => false,
  );
  if (have) return;
  const { stdout: id } = await execa('podman', ['create', podmanImage, 'true']);
  try {
    const pause = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done';
    await execa('podman', ['commit', '--change', `CMD ["/bin/sh","-c",${JSON.stringify(pause)}]`, id, name]);
  } finally {
    await execa('podman', ['rm', id]);
  }
}
