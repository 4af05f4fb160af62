/** Strategy and memory-load choice and the compatibility check, from node capabilities as the agents probe them. */
import test from 'ava';
import type { NodeCapabilities } from '../../agent/src/criu/probe.js';
import { isFerryError } from '../../agent/src/errors.js';
import {
  checkCompatibility,
  chooseMemoryLoad,
  chooseStrategy,
  compareVersions,
  LAZY_LOAD_MIN_BYTES,
  sizedMemoryLoad,
} from '../src/migration/preflight.js';

function node(name: string, criu: Partial<NodeCapabilities['criu']> = {}, flags = ['sse2', 'avx2', 'fpu']): NodeCapabilities {
  return {
    node: name,
    arch: 'x64',
    kernel: '6.1.0',
    criu: { available: true, version: '4.1.1', memDirtyTrack: true, lazyPages: true, ...criu },
    runtimes: [
      { runtime: 'runc', available: true, version: '1.1.5' },
      { runtime: 'podman', available: false, reason: 'podman is not installed' },
    ],
    cpu: { model: 'test', flags },
    probedAt: new Date(0).toISOString(),
  };
}

const messageOf = (err: unknown) => (isFerryError(err) ? `${err.code}: ${err.message}` : String(err));

test('auto: pre-copy where the source tracks dirty memory, stop-and-copy with the reason where not', (t) => {
  t.is(chooseStrategy('auto', node('a'), 'runc').used, 'precopy');
  const without = chooseStrategy('auto', node('a', { memDirtyTrack: false }), 'runc');
  t.is(without.used, 'stopcopy');
  t.regex(without.reason, /no memory tracking on a/);
  t.is(chooseStrategy('auto', node('a'), 'docker').used, 'stopcopy', 'docker has no pre-dump');
  t.regex(chooseStrategy('auto', node('a'), 'podman').reason, /one round/);
  t.is(chooseStrategy('stopcopy', node('a'), 'runc').used, 'stopcopy');
});

test('auto never picks post-copy: it is used only when asked for', (t) => {
  t.not(chooseStrategy('auto', node('a'), 'runc', node('b')).used, 'postcopy');
  t.is(chooseStrategy('postcopy', node('a'), 'runc', node('b')).used, 'postcopy');
});

test('post-copy is refused with each node whose lazy transfer failed, and why', (t) => {
  const broken = node('b', { lazyPages: false, lazyPagesProblem: 'a lazy transfer on this kernel fails: splice' });
  const err = t.throws(() => chooseStrategy('postcopy', node('a'), 'runc', broken));
  t.regex(messageOf(err), /^incompatible_nodes: .*do not work on b \(a lazy transfer on this kernel fails: splice\)$/);
  t.is(isFerryError(err) ? err.details?.field : undefined, 'strategy');
  t.regex(messageOf(t.throws(() => chooseStrategy('postcopy', node('a'), 'podman', node('b')))), /needs runc/);
});

test('hybrid needs both: pre-copy rounds on the source and lazy pages on both nodes', (t) => {
  t.is(chooseStrategy('hybrid', node('a'), 'runc', node('b')).used, 'hybrid');
  t.regex(
    messageOf(t.throws(() => chooseStrategy('hybrid', node('a', { memDirtyTrack: false }), 'runc', node('b')))),
    /does not track dirty memory/,
  );
  t.regex(
    messageOf(t.throws(() => chooseStrategy('hybrid', node('a'), 'runc', node('b', { lazyPages: false })))),
    /hybrid needs CRIU's lazy pages/,
  );
});

test('compatibility: every problem named at once', (t) => {
  t.notThrows(() => checkCompatibility(node('a'), node('b'), 'runc'));
  const old = node('b', { version: '3.17.1' }, ['sse2', 'fpu']);
  const err = t.throws(() => checkCompatibility(node('a'), old, 'podman'));
  const msg = messageOf(err);
  t.regex(msg, /CRIU on b \(3\.17\.1\) is older than on a \(4\.1\.1\)/);
  t.regex(msg, /b's CPU lacks avx2/);
  t.regex(msg, /podman is not available on b: podman is not installed/);
  t.notRegex(msg, /fpu/, 'flags user space cannot see do not count');
});

test('versions compare numerically', (t) => {
  t.is(compareVersions('4.1.1', '4.1'), 1);
  t.is(compareVersions('3.17.1', '4.0'), -1);
  t.is(compareVersions('4.10', '4.9'), 1);
  t.is(compareVersions('4.1', '4.1.0'), 0);
});

test('memory load: auto is lazy where the target can and the memory is big, eager with the reason where not', (t) => {
  const lazy = chooseMemoryLoad('auto', 'precopy', 'runc', node('b'));
  t.is(lazy?.used, 'lazy');
  t.is(sizedMemoryLoad(lazy, { memoryBytes: LAZY_LOAD_MIN_BYTES })?.used, 'lazy');
  const small = sizedMemoryLoad(lazy, { memoryBytes: 64 * 2 ** 20 });
  t.is(small?.used, 'eager');
  t.regex(small?.reason ?? '', /^64 MiB of memory: copied in quicker/);
  const asked = chooseMemoryLoad('lazy', 'precopy', 'runc', node('b'));
  t.is(sizedMemoryLoad(asked, { memoryBytes: 1 })?.used, 'lazy', 'asked for, it stays lazy');
  const noUffd = chooseMemoryLoad('auto', 'precopy', 'runc', node('b', { lazyPages: false, lazyPagesProblem: 'no userfaultfd' }));
  t.deepEqual(noUffd, { requested: 'auto', used: 'eager', reason: 'b has no lazy pages (no userfaultfd)' });
  t.is(chooseMemoryLoad('auto', 'stopcopy', 'podman', node('b'))?.used, 'eager');
  t.is(chooseMemoryLoad('eager', 'precopy', 'runc', node('b'))?.used, 'eager');
  t.is(chooseMemoryLoad('auto', 'postcopy', 'runc', node('b')), undefined, 'post-copy loads from the source');
});

test('memory load lazy is refused where it cannot be, naming the field', (t) => {
  for (const [strategy, runtime, target, why] of [
    ['precopy', 'runc', node('b', { lazyPages: false }), /b has no lazy pages/],
    ['stopcopy', 'docker', node('b'), /docker restores all memory/],
    ['hybrid', 'runc', node('b'), /hybrid already loads memory lazily/],
  ] as const) {
    const err = t.throws(() => chooseMemoryLoad('lazy', strategy, runtime, target));
    t.regex(messageOf(err), why);
    t.is(isFerryError(err) ? err.details?.field : undefined, 'memoryLoad');
  }
});
