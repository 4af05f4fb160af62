/**
 * A real OpenSSH server (Debian's openssh-server) inside a test node's network namespace, with a host key
 * and one authorized client key of its own, for the SSH transport between agents. Nothing of the host's
 * sshd configuration is used or changed; /run/sshd is the privilege separation directory sshd insists on.
 */
import { execa } from 'execa';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type NodeProcess, startProcessIn, type TestNetwork } from './netns.js';
import { scaled } from './time.js';

export const SSHD_PORT = 2222;

export interface SshKey {
  /** The private key file. */
  file: string;
  /** `SHA256:...`, as `ssh-keygen -lf` prints it. */
  fingerprint: string;
}

/** A fresh ed25519 key pair without passphrase. */
export async function makeSshKey(file: string): Promise<SshKey> {
  await mkdir(path.dirname(file), { recursive: true });
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ferry-test', '-f', file]);
  const printed = (await execa('ssh-keygen', ['-l', '-f', `${file}.pub`])).stdout;
  const fingerprint = /SHA256:[A-Za-z0-9+/]{43}/.exec(printed)?.[0];
  if (!fingerprint) throw new Error(`ssh-keygen printed no SHA256 fingerprint: ${printed}`);
  return { file, fingerprint };
}

export interface TestSshd {
  hostKey: SshKey;
  process: NodeProcess;
}

/** Starts sshd on the node's address, port SSHD_PORT, letting in root with `client`'s key only. */
export async function startSshd(net: TestNetwork, node: string, dir: string, client: SshKey): Promise<TestSshd> {
  await mkdir(dir, { recursive: true });
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = await makeSshKey(path.join(dir, 'host_key'));
  const authorized = path.join(dir, 'authorized_keys');
  await execa('cp', [`${client.file}.pub`, authorized]);
  const config = path.join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${SSHD_PORT}`,
      `ListenAddress ${net.node(node).address}`,
      `HostKey ${hostKey.file}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'AllowTcpForwarding yes',
      'UsePAM no',
      // The test's temporary directory is not root-only all the way up, which StrictModes would refuse.
      'StrictModes no',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  const process = await startProcessIn(net, node, ['/usr/sbin/sshd', '-D', '-e', '-f', config], {
    readyLine: /Server listening on/,
    timeoutMs: scaled(10_000),
  });
  return { hostKey, process };
}
