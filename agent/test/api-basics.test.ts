import test from 'ava';
import { relevantCriuLines } from '../src/criu/log.js';
import { parseListen, parseRuntimes } from '../src/config.js';

test('CRIU log: errors and tail kept, the harmless rlimit line dropped', (t) => {
  const log = [
    "(00.001) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
    '(00.002) dumping task 1',
    '(00.003) Error (criu/sk-inet.c:191): inet: Connected TCP socket, consider using --tcp-established option.',
    '(00.004) Dumping FAILED.',
  ].join('\n');
  const lines = relevantCriuLines(log, 2);
  t.true(lines[0]?.includes('Connected TCP socket'));
  t.true(lines.includes('(00.004) Dumping FAILED.'));
  t.false(lines.some((l) => l.includes('RLIMIT_NOFILE')));
});

test('config: listen addresses and runtime lists are checked', (t) => {
  t.deepEqual(parseListen('0.0.0.0:7071'), { host: '0.0.0.0', port: 7071 });
  t.deepEqual(parseListen('7072'), { host: '127.0.0.1', port: 7072 });
  t.throws(() => parseListen('host:99999'), { message: /not HOST:PORT/ });
  t.deepEqual(parseRuntimes('runc, podman'), ['runc', 'podman']);
  t.throws(() => parseRuntimes('runc,crun'), { message: /unknown runtimes: crun/ });
});
