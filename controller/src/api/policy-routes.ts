/** REST for checkpoint policies: apply (create or replace), list, describe, delete, run now, runs and checkpoints. */
import type { FastifyInstance } from 'fastify';
import { policyDocumentSchema, POLICY_NAME_PATTERN } from '../policy/schema.js';
import type { PolicyScheduler } from '../policy/scheduler.js';
import type { PolicyDocument } from '../policy/types.js';
import { openEventStream } from './sse.js';

const errors = Object.fromEntries([400, 401, 404, 409, 500, 501, 502, 503].map((s) => [s, { $ref: 'Error#' }]));
/**
 * A policy applied here, or a CheckpointPolicy object's as the scheduler names it, `<namespace>.<name>`
 * (Kubernetes mode): both can be described, run and followed; only the first kind is applied through POST.
 */
const NAMESPACED_POLICY_PATTERN = `^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)?${POLICY_NAME_PATTERN.slice(1)}`;
const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: NAMESPACED_POLICY_PATTERN } },
} as const;
const policy = { type: 'object', additionalProperties: true } as const;
const list = (key: string) => ({
  type: 'object',
  properties: { [key]: { type: 'array', items: { type: 'object', additionalProperties: true } } },
});

export const policyRoutes = {
  apply: {
    summary: 'Create or replace a CheckpointPolicy (the same document as the custom resource); 201 when new, 200 when replaced',
    body: policyDocumentSchema,
    response: { 200: policy, 201: policy, ...errors },
  },
  list: { summary: 'Policies with their status', response: { 200: list('policies'), ...errors } },
  get: {
    summary: 'One policy: spec and status (last/next run, last error, cost, interval and why)',
    params: nameParams,
    response: { 200: policy, ...errors },
  },
  remove: {
    summary: 'Delete a policy and the checkpoints it kept (those an agent could not delete are listed in `left`)',
    params: nameParams,
    response: { 200: { type: 'object', additionalProperties: true }, ...errors },
  },
  run: {
    summary: 'Run the policy now, outside its schedule; answers with the finished run',
    params: nameParams,
    response: { 201: policy, ...errors },
  },
  runs: {
    summary: "The policy's runs, newest first: one record per run with its checkpoints, deletions and errors",
    params: nameParams,
    response: { 200: list('runs'), ...errors },
  },
  checkpoints: {
    summary: 'The checkpoints the policy keeps, oldest first, with node and figures',
    params: nameParams,
    response: { 200: list('checkpoints'), ...errors },
  },
  recoveries: {
    summary: 'Containers of this policy restored elsewhere after their node was lost: from which checkpoint, work lost, fencing',
    params: nameParams,
    response: { 200: list('recoveries'), ...errors },
  },
  events: {
    summary:
      'Server-sent events of this policy as they happen: run started/finished, checkpoint taken or failed, deletions, recoveries, fences',
    params: nameParams,
  },
} as const;

export function registerPolicyRoutes(app: FastifyInstance, policies: PolicyScheduler): void {
  app.post<{ Body: PolicyDocument }>('/policies', { schema: policyRoutes.apply }, async (req, reply) => {
    const { policy: p, created } = policies.apply(req.body);
    return reply
      .status(created ? 201 : 200)
      .header('location', `/policies/${p.metadata.name}`)
      .send(p);
  });
  app.get('/policies', { schema: policyRoutes.list }, async () => ({ policies: policies.list() }));
  app.get<{ Params: { name: string } }>('/policies/:name', { schema: policyRoutes.get }, async (req) => policies.get(req.params.name));
  app.delete<{ Params: { name: string } }>('/policies/:name', { schema: policyRoutes.remove }, async (req) =>
    policies.remove(req.params.name),
  );
  app.post<{ Params: { name: string } }>('/policies/:name/run', { schema: policyRoutes.run }, async (req, reply) =>
    reply.status(201).send(await policies.runNow(req.params.name)),
  );
  app.get<{ Params: { name: string } }>('/policies/:name/runs', { schema: policyRoutes.runs }, async (req) => ({
    runs: policies.runs(req.params.name),
  }));
  app.get<{ Params: { name: string } }>('/policies/:name/checkpoints', { schema: policyRoutes.checkpoints }, async (req) => ({
    checkpoints: policies.checkpoints(req.params.name),
  }));
  app.get<{ Params: { name: string } }>('/policies/:name/events', { schema: policyRoutes.events }, async (req, reply) => {
    policies.get(req.params.name);
    const stream = openEventStream(reply);
    stream.onClose(policies.events.subscribe(req.params.name, (e) => stream.send(e.seq, e.type, e)));
  });
  app.get<{ Params: { name: string } }>('/policies/:name/recoveries', { schema: policyRoutes.recoveries }, async (req) => ({
    recoveries: policies.recoveries(req.params.name),
  }));
}
