import test from 'ava';
import { kubeEventFor } from '../src/kube/events.js';
import type { PolicyEvent } from '../src/policy/events.js';

const event = (type: PolicyEvent['type'], data?: Record<string, unknown>): PolicyEvent => ({
  seq: 1,
  at: new Date().toISOString(),
  policy: 'shop.orders',
  type,
  message: 'm',
  ...(data ? { data } : {}),
});

test('only what goes wrong in runs becomes a Kubernetes Event; successful runs and checkpoints do not', (t) => {
  t.deepEqual(kubeEventFor(event('checkpoint-failed')), { type: 'Warning', reason: 'CheckpointFailed' });
  t.deepEqual(kubeEventFor(event('run-finished', { status: 'failed' })), { type: 'Warning', reason: 'RunFailed' });
  t.deepEqual(kubeEventFor(event('run-finished', { status: 'partial' })), { type: 'Warning', reason: 'RunPartial' });
  t.deepEqual(kubeEventFor(event('fenced')), { type: 'Warning', reason: 'Fenced' });
  t.deepEqual(kubeEventFor(event('recovered')), { type: 'Normal', reason: 'Recovered' });
  t.is(kubeEventFor(event('run-finished', { status: 'succeeded' })), undefined);
  t.is(kubeEventFor(event('checkpoint')), undefined);
  t.is(kubeEventFor(event('run-started')), undefined);
});
