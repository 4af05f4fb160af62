/**
 * Agent-to-agent transfer for nodes that only let SSH in: the sending agent opens an SSH connection to the
 * peer node (key authentication, the peer's host key pinned by its SHA256 fingerprint, as `ssh-keygen -lf`
 * prints it) and forwards a loopback port here to the peer agent's address there, as `ssh -L` would. The
 * transfer itself is unchanged (the same HTTP import with its checksums) and simply goes through the tunnel.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { Client } from 'ssh2';
import { FerryError } from './errors.js';

export interface SshRoute {
  host: string;
  port?: number;
  username: string;
  /** The peer's host key fingerprint, `SHA256:<base64 without padding>`; any other key is refused. */
  hostKey: string;
}

export interface Tunnel {
  /** Where the peer agent answers, through the tunnel. */
  url: string;
  close(): Promise<void>;
}

/** OpenSSH's fingerprint of a host key blob. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/**
 * Opens the SSH connection and a loopback listener forwarding to `peerUrl` (as the peer node itself
 * reaches its agent). Fails with transfer_failed naming the cause: unreachable, host key, authentication.
 */
export function openTunnel(route: SshRoute, privateKey: Buffer, peerUrl: string, timeoutMs: number): Promise<Tunnel> {
  const target = new URL(peerUrl);
  const targetPort = Number(target.port || 80);
  const ssh = new Client();
  let seenKey = '';
  const where = `${route.username}@${route.host}:${route.port ?? 22}`;
  return new Promise<Tunnel>((resolve, reject) => {
    const fail = (message: string, hint: string) => {
      ssh.end();
      reject(new FerryError('transfer_failed', message, { hint }));
    };
    ssh.once('error', (err: Error & { level?: string }) => {
      if (seenKey && seenKey !== route.hostKey) {
        return fail(
          `refused ${where}: its host key is ${seenKey}, not the pinned ${route.hostKey}`,
          'if the node was reinstalled, pin its new key (ssh-keygen -lf on its host key)',
        );
      }
      if (err.level === 'client-authentication') {
        return fail(`${where} refused this agent's key`, "add the agent's public key (--ssh-key FILE.pub) to that user's authorized_keys");
      }
      fail(`cannot open SSH to ${where}: ${err.message}`, 'check that sshd runs there and the port is open');
    });
    ssh.once('ready', () => {
      // HTTP clients keep connections alive; closing the tunnel ends them rather than waiting on them.
      const open = new Set<net.Socket>();
      const server = net.createServer((local) => {
        open.add(local);
        local.once('close', () => open.delete(local));
        ssh.forwardOut('127.0.0.1', local.remotePort ?? 0, target.hostname, targetPort, (err, remote) => {
          if (err) return local.destroy(err);
          local.pipe(remote).pipe(local);
          local.on('error', () => remote.destroy());
          remote.on('error', () => local.destroy());
          local.on('close', () => remote.destroy());
        });
      });
      server.once('error', (err) => fail(`cannot listen for the SSH tunnel: ${err.message}`, 'retry'));
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        resolve({
          url: `http://127.0.0.1:${port}`,
          close: () =>
            new Promise<void>((done) => {
              server.close(() => done());
              for (const socket of open) socket.destroy();
              ssh.end();
            }),
        });
      });
    });
    ssh.connect({
      host: route.host,
      port: route.port ?? 22,
      username: route.username,
      privateKey,
      readyTimeout: timeoutMs,
      hostVerifier: (key: Buffer) => {
        seenKey = fingerprint(key);
        return seenKey === route.hostKey;
      },
    });
  });
}
