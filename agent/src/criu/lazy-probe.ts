/**
 * Whether post-copy works here, found by doing one. `criu check --feature uffd-noncoop` says the kernel has
 * what lazy pages need, not that a lazy transfer succeeds: on the 6.18 kernel of the machines Ferry is
 * developed on it passes, yet every transfer of CRIU 4.1.1's page server fails ("page-pipe: splice: -1:
 * Bad file descriptor", reproduced with plain `criu dump --lazy-pages`, no runc), while the same CRIU on
 * Debian 12's 6.1 kernel moves memory lazily. So the probe dumps a throwaway `sleep` lazily, restores it in
 * a pid namespace of its own (its pid is still taken by the frozen original) and waits for the page server
 * to report every page served. About half a second, once per agent.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, spawnWithStatusFd, startLazyPagesDaemon } from '../runtimes/lazy.js';

const PROBE_LIMIT_MS = 15_000;

export async function probeLazyTransfer(criu: string): Promise<{ ok: boolean; problem?: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-lazy-probe-'));
  const images = path.join(dir, 'images');
  const work = path.join(dir, 'work');
  await Promise.all([mkdir(images), mkdir(work)]);
  // A session leader of its own with no terminal: CRIU dumps it without --shell-job.
  const victim = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
  const groups: number[] = [];
  try {
    if (!victim.pid) return { ok: false, problem: 'could not start a process to probe with' };
    const port = await freePort();
    const dump = await spawnWithStatusFd(
      criu,
      ['dump', '-t', String(victim.pid), '-D', images, '--lazy-pages', '--address', '127.0.0.1', '--port', String(port)].concat([
        '-o',
        'dump.log',
        '--status-fd',
        '3',
      ]),
      dir,
    );
    if (dump.group) groups.push(dump.group);
    if (!dump.ready) return { ok: false, problem: `a lazy dump fails: ${await firstError(path.join(images, 'dump.log'))}` };
    const daemon = await startLazyPagesDaemon({ criu, imageDir: images, workDir: work, source: { host: '127.0.0.1', port } });
    daemon.done.catch(() => undefined);
    // The shell stays as the namespace's init: the restored process lives until the probe ends.
    const script = '"$0" restore -D "$1" -W "$2" --lazy-pages -d -o restore.log && exec sleep 60';
    const restore = spawn('unshare', ['--pid', '--fork', '--mount-proc', 'sh', '-c', script, criu, images, work], {
      detached: true,
      stdio: 'ignore',
    });
    if (restore.pid) groups.push(restore.pid);
    const served = await Promise.race([dump.exit, sleep(PROBE_LIMIT_MS).then(() => 'timeout' as const)]);
    if (served === 0) return { ok: true };
    const why = (await firstError(path.join(images, 'dump.log'))) || (await firstError(path.join(work, 'restore.log')));
    return { ok: false, problem: `a lazy transfer on this kernel fails: ${why || `the page server ended with ${served}`}` };
  } catch (err) {
    return { ok: false, problem: `a lazy transfer on this kernel fails: ${(err as Error).message}` };
  } finally {
    for (const g of groups) signalGroup(g);
    victim.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

function signalGroup(group: number): void {
  try {
    process.kill(-group, 'SIGKILL');
  } catch {
    // gone already
  }
}

async function firstError(log: string): Promise<string> {
  const text = await readFile(log, 'utf8').catch(() => '');
  return (
    text
      .split('\n')
      .find((l) => /Error/.test(l) && !/RLIMIT_NOFILE/.test(l))
      ?.replace(/^\(\s*[\d.]+\)\s*/, '') ?? ''
  );
}
