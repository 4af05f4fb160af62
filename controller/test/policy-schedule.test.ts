/**
 * The scheduler's own timing, on a real controller with its SQLite store and no nodes (a run then selects
 * nothing and succeeds): a cron policy runs once when applied, then at the next matching minute (UTC),
 * with its reason in the status; a suspended policy is not scheduled.
 */
import test from 'ava';
import { ControllerClient } from '../src/client.js';
import { controllerConfig } from '../src/config.js';
import { startController } from '../src/main.js';

test('cron: runs when applied, then at the next matching minute; suspended: not scheduled', async (t) => {
  const c = await startController(controllerConfig({ listen: '127.0.0.1:0', token: 't', database: ':memory:' }), false);
  t.teardown(() => c.close());
  const client = new ControllerClient(c.url, 't');
  const spec = { selector: { names: ['nothing-*'] }, schedule: { cron: '*/5 * * * *' } };
  await client.applyPolicy({ metadata: { name: 'five' }, spec });
  const run = (await client.runPolicy('five')).status;
  t.is(run, 'succeeded');
  const p = await client.policy('five');
  t.regex(p.status.interval.reason, /^cron '\*\/5 \* \* \* \*' \(UTC\): next at /);
  const next = Date.parse(p.status.nextRunAt ?? '');
  const slot = new Date(next);
  // The next multiple of five minutes, plus a jitter of at most 5 s.
  t.is(slot.getUTCMinutes() % 5, 0, p.status.nextRunAt);
  t.true(slot.getUTCSeconds() < 6 && next > Date.now() && next - Date.now() <= 5 * 60_000 + 5_000, p.status.nextRunAt);

  await client.applyPolicy({ metadata: { name: 'five' }, spec: { ...spec, suspend: true } });
  const suspended = await client.policy('five');
  t.is(suspended.status.phase, 'Suspended');
  t.is(suspended.status.nextRunAt, undefined);
  const bad = await client
    .applyPolicy({ metadata: { name: 'bad' }, spec: { ...spec, schedule: { cron: '61 * * * *' } } })
    .catch((e: unknown) => e);
  t.is((bad as { details?: { field?: string } }).details?.field, 'spec.schedule.cron');
});
