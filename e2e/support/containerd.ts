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

export interface ContainerdNode {
  address: string;
  /** runc's state root for this containerd's containers: what the node's agent gets as --runc-root. */
  runcRoot: string;
  ctr(args: string[]): Promise<string>;
  /** `ctr run -d` through ferry-runc; annotations become the bundle's OCI annotations. */
  run(image: string, id: string, argv: string[], annotations?: Record<string, string>): Promise<void>;
  /** The task's pid and status as `ctr task ls` reports them; undefined when there is no task. */
  task(id: string): Promise<{ pid: number; status: string } | undefined>;
  stop(): Promise<void>;
}

export async function startContainerd(net: TestNetwork, node: string, dir: string, imageStore: string): Promise<ContainerdNode> {
  await mkdir(dir, { recursive: true });
  const address = path.join(dir, 'containerd.sock');
  const runcBase = path.join(dir, 'runc');
  const runcConfig = path.join(dir, 'ferry-runc.conf');
  await writeFile(runcConfig, `FERRY_IMAGE_STORE=${imageStore}\nFERRY_RUNC_STATE=${path.join(dir, 'ferry-runc')}\n`);
  const config = path.join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${path.join(dir, 'root')}"`,
      `state = "${path.join(dir, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${address}.ttrpc"`,
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
    ctr,
    task,
    async run(image, id, argv, annotations = {}) {
      const notes = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
      await ctr(['run', '-d', '--null-io', '--runc-binary', FERRY_RUNC, '--runc-root', runcBase, ...notes, image, id, ...argv]);
    },
    async stop() {
      // Shims outlive containerd: delete every task first (--force kills it), then the containers.
      const ids = (await ctr(['container', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
      for (const id of ids) {
        await ctr(['task', 'delete', '--force', id]).catch(() => undefined);
        await ctr(['container', 'rm', id]).catch(() => undefined);
      }
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The busybox image podman holds, as an OCI archive that `ctr images import` takes. */
export async function importBusyboxInto(nodes: ContainerdNode[], podmanImage: string, scratch: string, name: string): Promise<void> {
  const archive = path.join(scratch, 'busybox-oci.tar');
  await execa('podman', ['save', '--format', 'oci-archive', '-o', archive, podmanImage]);
  for (const n of nodes) await n.ctr(['images', 'import', '--index-name', name, archive]);
}
