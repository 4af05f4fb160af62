import test from 'ava';
import { readFile } from 'node:fs/promises';
import { decodeDumpStats, decodeRestoreStats } from '../src/criu/stats.js';

// Fixtures are real stats images written by CRIU 4.1.1 for a runc busybox container on this project's host.
const fixture = (name: string) => readFile(new URL(`./fixtures/${name}`, import.meta.url));

test('decodes the figures of a real stats-dump', async (t) => {
  const s = decodeDumpStats(await fixture('stats-dump'));
  t.is(s.frozenTimeMs, 81.328);
  t.is(s.freezingTimeMs, 3.273);
  t.is(s.memdumpTimeMs, 0.752);
  t.is(s.memwriteTimeMs, 0.146);
  t.is(s.pagesScanned, 48);
  t.is(s.pagesWritten, 34);
  t.is(s.pagesSkippedParent, 0);
  t.is(s.bytesWritten, 34 * 4096);
});

test('decodes the figures of a real stats-restore', async (t) => {
  const s = decodeRestoreStats(await fixture('stats-restore'));
  t.is(s.restoreTimeMs, 91.037);
  t.is(s.forkingTimeMs, 0.316);
  t.is(s.pagesRestored, 32);
  t.is(s.pagesCompared, 9);
  t.is(s.pagesSkippedCow, 2);
});

test('rejects a file that is not a stats image', (t) => {
  t.throws(() => decodeDumpStats(Buffer.from('not a criu image at all')), { message: /not a CRIU stats image/ });
});

test('rejects a truncated stats image', async (t) => {
  const file = await fixture('stats-dump');
  t.throws(() => decodeDumpStats(file.subarray(0, file.length - 5)), { message: /truncated/ });
});

test('a dump image is not mistaken for a restore image', async (t) => {
  const file = await fixture('stats-dump');
  t.throws(() => decodeRestoreStats(file), { message: /no restore section/ });
});
