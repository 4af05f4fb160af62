/** JSON schemas of the controller API: validation at the edge and the OpenAPI document come from these. */
import { sshRoute } from '../../../agent/src/api/schemas.js';
import { errorBody } from '../../../agent/src/api/schemas.js';
import { RUNTIME_NAMES } from '../../../agent/src/runtimes/types.js';
import { MEMORY_LOADS, STRATEGIES } from '../migration/types.js';

const nodeName = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } as const;
const containerRef = { type: 'string', pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$' } as const;
const migrationId = { type: 'string', pattern: '^m-[a-z0-9]+-[0-9a-f]{6}$' } as const;

const errors = Object.fromEntries([400, 401, 404, 409, 500, 501, 502, 503, 504].map((s) => [s, { $ref: 'Error#' }]));

const migration = {
  $id: 'Migration',
  type: 'object',
  additionalProperties: true,
  required: ['id', 'status', 'step', 'request', 'source', 'target', 'figures'],
  properties: {
    id: { type: 'string' },
    status: { type: 'string', enum: ['running', 'succeeded', 'failed', 'cancelled'] },
    step: { type: 'string' },
    request: { type: 'object', additionalProperties: true },
    source: { type: 'object', additionalProperties: true },
    target: { type: 'object', additionalProperties: true },
    strategy: {
      type: 'object',
      properties: { requested: { type: 'string' }, used: { type: 'string' }, reason: { type: 'string' } },
    },
    checkpointId: { type: 'string' },
    rounds: { type: 'array', items: { type: 'object', additionalProperties: true } },
    figures: { type: 'object', additionalProperties: true },
    error: { type: 'object', additionalProperties: true },
    rollback: { type: 'object', additionalProperties: true },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    finishedAt: { type: 'string' },
  },
} as const;

const node = {
  $id: 'Node',
  type: 'object',
  additionalProperties: true,
  required: ['name', 'url', 'healthy'],
  properties: {
    name: { type: 'string' },
    url: { type: 'string' },
    healthy: { type: 'boolean' },
    capabilities: { type: 'object', additionalProperties: true },
    ssh: { type: 'object', additionalProperties: true },
    lastSeen: { type: 'string' },
    lastError: { type: 'string' },
    registeredAt: { type: 'string' },
  },
} as const;

export const sharedSchemas = [errorBody, migration, node];

const idParams = { type: 'object', required: ['id'], properties: { id: migrationId } } as const;

export const routes = {
  health: { summary: 'Liveness; needs no token', response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } } },
  registerNode: {
    summary: 'Register (or update) a node: the agent is probed with its token first',
    body: {
      type: 'object',
      required: ['name', 'url', 'token'],
      additionalProperties: false,
      properties: {
        name: nodeName,
        url: { type: 'string', pattern: '^https?://', maxLength: 2048 },
        token: { type: 'string', minLength: 1, maxLength: 4096 },
        ssh: sshRoute,
      },
    },
    response: { 201: { $ref: 'Node#' }, ...errors },
  },
  listNodes: {
    summary: 'Registered nodes and their health',
    response: { 200: { type: 'object', properties: { nodes: { type: 'array', items: { $ref: 'Node#' } } } }, ...errors },
  },
  removeNode: {
    summary: 'Forget a node',
    params: { type: 'object', required: ['name'], properties: { name: nodeName } },
    response: { 204: { type: 'null' }, ...errors },
  },
  nodeContainers: {
    summary: "A node's containers, as its agent lists them",
    params: { type: 'object', required: ['name'], properties: { name: nodeName } },
    response: { 200: { type: 'object', additionalProperties: true }, ...errors },
  },
  migrate: {
    summary:
      'Start a live migration of a container, or (Kubernetes mode, on the Lease holder) of a pod; follow it with GET /migrations/:id or its event stream',
    body: {
      type: 'object',
      required: ['targetNode'],
      additionalProperties: false,
      properties: {
        pod: {
          type: 'object',
          required: ['namespace', 'name'],
          additionalProperties: false,
          description: 'a pod instead of a container (Kubernetes mode): its containers move together, by stop-and-copy',
          properties: {
            namespace: { type: 'string', pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$' },
            name: { type: 'string', pattern: '^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$' },
          },
        },
        readyTimeoutMs: {
          type: 'integer',
          minimum: 1_000,
          maximum: 300_000,
          default: 120_000,
          description: 'pods: how long the replacement may take to run and be Ready before the migration rolls back',
        },
        container: {
          type: 'object',
          required: ['node', 'runtime'],
          additionalProperties: false,
          properties: { node: nodeName, runtime: { type: 'string', enum: [...RUNTIME_NAMES] }, id: containerRef, name: containerRef },
        },
        targetNode: nodeName,
        strategy: { type: 'string', enum: [...STRATEGIES], default: 'auto' },
        maxDowntimeMs: { type: 'integer', minimum: 1, maximum: 600_000, default: 300 },
        maxRounds: { type: 'integer', minimum: 1, maximum: 30, default: 8 },
        maxBytesFactor: { type: 'number', minimum: 1, maximum: 20, default: 3 },
        memoryLoad: {
          type: 'string',
          enum: [...MEMORY_LOADS],
          default: 'auto',
          description:
            "how the target loads memory on restore: eager (all of it before the container resumes), lazy (from the target's images after it resumes; runc, userfaultfd), auto (lazy where possible from 256 MiB)",
        },
      },
    },
    response: { 202: { type: 'object', properties: { id: { type: 'string' }, migration: { $ref: 'Migration#' } } }, ...errors },
  },
  listMigrations: {
    summary: 'Migrations, newest first',
    response: { 200: { type: 'object', properties: { migrations: { type: 'array', items: { $ref: 'Migration#' } } } }, ...errors },
  },
  getMigration: {
    summary: 'One migration: state, strategy and why, rounds, figures, error',
    params: idParams,
    response: { 200: { $ref: 'Migration#' }, ...errors },
  },
  migrationEvents: {
    summary: 'Server-sent events: one per step and round, replayed from the start (or after Last-Event-ID), until the migration ends',
    params: idParams,
  },
  cancelMigration: {
    summary: 'Cancel at the next step boundary; the migration rolls back',
    params: idParams,
    response: { 202: { $ref: 'Migration#' }, ...errors },
  },
} as const;
