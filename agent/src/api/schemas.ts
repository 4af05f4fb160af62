/** JSON schemas of the agent API: validation at the edge and the OpenAPI document come from these. */
import { RUNTIME_NAMES } from '../runtimes/types.js';

const checkpointId = { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$' } as const;
const containerRef = { type: 'string', pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$', maxLength: 128 } as const;
const runtime = { type: 'string', enum: [...RUNTIME_NAMES] } as const;

export const errorBody = {
  $id: 'Error',
  type: 'object',
  required: ['code', 'message'],
  properties: {
    code: { type: 'string', description: 'stable machine-readable error code' },
    message: { type: 'string' },
    hint: { type: 'string', description: 'the next step that fixes it' },
    criuLog: { type: 'array', items: { type: 'string' } },
    details: { type: 'object', additionalProperties: true },
  },
} as const;

const dumpStats = {
  type: 'object',
  additionalProperties: true,
  properties: {
    freezingTimeMs: { type: 'number' },
    frozenTimeMs: { type: 'number' },
    memdumpTimeMs: { type: 'number' },
    memwriteTimeMs: { type: 'number' },
    pagesScanned: { type: 'integer' },
    pagesSkippedParent: { type: 'integer' },
    pagesWritten: { type: 'integer' },
    pagesLazy: { type: 'integer' },
    bytesWritten: { type: 'integer' },
  },
} as const;

const containerInfo = {
  $id: 'Container',
  type: 'object',
  required: ['id', 'name', 'runtime', 'state'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    runtime,
    state: { type: 'string' },
    pid: { type: 'integer' },
    image: { type: 'string' },
    imageId: { type: 'string' },
    createdAt: { type: 'string' },
    bundle: { type: 'string', description: 'the OCI bundle directory, where the runtime exposes it (runc)' },
    labels: {
      type: 'object',
      additionalProperties: { type: 'string' },
      description: "runc: the bundle's OCI annotations; podman/docker: the container's labels. Absent when there are none",
    },
    createCommand: {
      type: 'array',
      items: { type: 'string' },
      description: 'podman: the command the container was created with; only when one container is looked up',
    },
  },
} as const;

/** How to reach a node over SSH (agent/src/ssh-tunnel.ts); shared by the agent's send and the controller's nodes. */
export const sshRoute = {
  type: 'object',
  required: ['host', 'username', 'hostKey'],
  additionalProperties: false,
  description: 'send through an SSH tunnel to this node; its host key is pinned',
  properties: {
    host: { type: 'string', minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.:-]+$' },
    port: { type: 'integer', minimum: 1, maximum: 65535, default: 22 },
    username: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z_][a-z0-9_.-]*$' },
    hostKey: {
      type: 'string',
      pattern: '^SHA256:[A-Za-z0-9+/]{43}$',
      description: 'the host key fingerprint as `ssh-keygen -lf` prints it',
    },
  },
} as const;

export const manifest = {
  $id: 'Checkpoint',
  type: 'object',
  additionalProperties: true,
  required: ['id', 'kind', 'createdAt', 'container', 'files', 'totalBytes'],
  properties: {
    id: { type: 'string' },
    kind: { type: 'string', enum: ['full', 'pre-dump'] },
    createdAt: { type: 'string' },
    node: { type: 'string' },
    container: { type: 'object', additionalProperties: true },
    criuVersion: { type: 'string' },
    leaveRunning: { type: 'boolean' },
    parent: { type: 'string' },
    lazyPages: { type: 'object', properties: { port: { type: 'integer' } } },
    files: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          path: { type: 'string' },
          size: { type: 'integer' },
          sha256: { type: 'string' },
          plain: { type: 'object', properties: { size: { type: 'integer' }, sha256: { type: 'string' } } },
        },
      },
    },
    encoding: {
      type: 'object',
      description: 'compressed and/or encrypted at rest; the wrapped data key is not shown',
      properties: {
        compression: { type: 'string', enum: ['none', 'gzip', 'zstd'] },
        encryption: { type: 'object', properties: { alg: { type: 'string' }, keyId: { type: 'string' } } },
      },
    },
    totalBytes: { type: 'integer' },
    stats: dumpStats,
    timings: { type: 'object', additionalProperties: true },
    runtimeMeta: { type: 'object', additionalProperties: true },
  },
} as const;

export const sharedSchemas = [errorBody, containerInfo, manifest];

const errors = {
  400: { $ref: 'Error#' },
  401: { $ref: 'Error#' },
  404: { $ref: 'Error#' },
  409: { $ref: 'Error#' },
  422: { $ref: 'Error#' },
  500: { $ref: 'Error#' },
  501: { $ref: 'Error#' },
  502: { $ref: 'Error#' },
  503: { $ref: 'Error#' },
};

export const idParams = { type: 'object', required: ['id'], properties: { id: checkpointId } } as const;

/** A long poll on work an earlier call left running (background.ts): its state now, or once it ends within waitMs. */
function backgroundWorkRoute(summary: string, [running, done]: [string, string]) {
  return {
    summary,
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: { waitMs: { type: 'integer', minimum: 0, maximum: 60_000, default: 0 } },
    },
    response: {
      200: {
        type: 'object',
        required: ['state'],
        properties: { state: { type: 'string', enum: [running, done, 'failed', 'unknown'] }, error: { type: 'string' } },
      },
      ...errors,
    },
  } as const;
}

export const routes = {
  health: {
    summary: 'Liveness; needs no token',
    response: { 200: { type: 'object', properties: { ok: { type: 'boolean' }, node: { type: 'string' } } } },
  },
  node: {
    summary: 'This node and what it can do, from real probes (CRIU, kernel, CPU, runtimes)',
    querystring: { type: 'object', properties: { refresh: { type: 'boolean' } }, additionalProperties: false },
    response: { 200: { type: 'object', additionalProperties: true }, ...errors },
  },
  stats: {
    summary: 'What operations cost on this node lately: the median restore wall time per runtime (ms)',
    response: {
      200: { type: 'object', properties: { restoreMs: { type: 'object', additionalProperties: { type: 'number' } } } },
      ...errors,
    },
  },
  listContainers: {
    summary: 'Containers of every available runtime, or of one',
    querystring: { type: 'object', properties: { runtime }, additionalProperties: false },
    response: { 200: { type: 'object', properties: { containers: { type: 'array', items: { $ref: 'Container#' } } } }, ...errors },
  },
  image: {
    summary: 'Whether the runtime has an image (by id or name): 204, or 404 image_not_found',
    params: {
      type: 'object',
      required: ['runtime', 'ref'],
      properties: { runtime, ref: { type: 'string', pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.:/@-]{0,255}$' } },
    },
    response: { 204: { type: 'null' }, ...errors },
  },
  getContainer: {
    summary: 'One container, by id, unique id prefix or name (with what a twin of it needs: podman createCommand)',
    params: { type: 'object', required: ['runtime', 'ref'], properties: { runtime, ref: containerRef } },
    response: { 200: { $ref: 'Container#' }, ...errors },
  },
  prepareContainer: {
    summary: "Create, stopped, a twin of another node's container for an in-place restore (podman): same image, options and command",
    params: { type: 'object', required: ['runtime'], properties: { runtime } },
    body: {
      type: 'object',
      required: ['name', 'source'],
      additionalProperties: false,
      properties: {
        name: containerRef,
        source: {
          type: 'object',
          required: ['createCommand', 'image', 'imageId'],
          additionalProperties: false,
          properties: {
            createCommand: { type: 'array', minItems: 2, maxItems: 4096, items: { type: 'string', maxLength: 65536 } },
            image: { type: 'string', minLength: 1, maxLength: 512 },
            imageId: { type: 'string', pattern: '^[0-9a-f]{64}$' },
          },
        },
      },
    },
    response: { 201: { $ref: 'Container#' }, ...errors },
  },
  removeContainer: {
    summary: 'Stop and remove a container; a container that is not there is not an error',
    params: { type: 'object', required: ['runtime', 'ref'], properties: { runtime, ref: containerRef } },
    response: { 204: { type: 'null' }, ...errors },
  },
  hold: {
    summary:
      'Freeze a group of containers together for a coordinated checkpoint; checkpoints of held containers leave them frozen until the hold is released (or expires after ttlMs)',
    body: {
      type: 'object',
      required: ['containers', 'ttlMs'],
      additionalProperties: false,
      properties: {
        containers: {
          type: 'array',
          minItems: 1,
          maxItems: 256,
          items: {
            type: 'object',
            required: ['runtime', 'container'],
            additionalProperties: false,
            properties: { runtime, container: containerRef },
          },
        },
        ttlMs: { type: 'integer', minimum: 100, maximum: 600_000 },
      },
    },
    response: { 201: { type: 'object', additionalProperties: true }, ...errors },
  },
  releaseHold: {
    summary: 'Thaw the containers of a hold; with kill=true their processes are killed first and never run again',
    params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^h-[a-z0-9]+-[0-9a-f]{6}$' } } },
    querystring: { type: 'object', additionalProperties: false, properties: { kill: { type: 'boolean', default: false } } },
    response: { 200: { type: 'object', additionalProperties: true }, ...errors },
  },
  createCheckpoint: {
    summary: 'Checkpoint a running container (stops it unless leaveRunning)',
    body: {
      type: 'object',
      required: ['runtime', 'container'],
      additionalProperties: false,
      properties: {
        runtime,
        container: containerRef,
        leaveRunning: { type: 'boolean', default: false },
        preDump: { type: 'boolean', default: false, description: 'memory-only incremental dump; needs soft-dirty tracking' },
        lazy: {
          type: 'boolean',
          default: false,
          description: 'post-copy (runc): dump all but memory, then serve memory from a CRIU page server until a lazy restore pulled it',
        },
        parent: checkpointId,
        id: checkpointId,
        transient: {
          type: 'boolean',
          default: false,
          description: "kept plain whatever the agent's --compress and --image-key: a migration's own checkpoints live seconds",
        },
        inPlace: {
          type: 'boolean',
          default: false,
          description:
            "podman, stopping dumps: taken in the container's own directory, restorable only into a prepared twin or the original",
        },
      },
    },
    response: { 201: { $ref: 'Checkpoint#' }, ...errors },
  },
  listCheckpoints: {
    summary: 'Complete checkpoints on this node, oldest first',
    response: { 200: { type: 'object', properties: { checkpoints: { type: 'array', items: { $ref: 'Checkpoint#' } } } }, ...errors },
  },
  getCheckpoint: { summary: 'One checkpoint manifest', params: idParams, response: { 200: { $ref: 'Checkpoint#' }, ...errors } },
  deleteCheckpoint: {
    summary: 'Delete a checkpoint that no other checkpoint builds on',
    params: idParams,
    response: { 204: { type: 'null' }, ...errors },
  },
  restore: {
    summary: 'Verify a checkpoint against its manifest, then restore it',
    params: idParams,
    body: {
      type: 'object',
      additionalProperties: false,
      properties: {
        name: containerRef,
        runtime,
        pageServer: {
          type: 'object',
          required: ['host'],
          additionalProperties: false,
          description: "a lazy checkpoint's memory: the source node's page server, reached at this host",
          properties: { host: { type: 'string', minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.:-]+$' } },
        },
        into: { ...containerRef, description: "an in-place checkpoint's container: a prepared twin, or the stopped original" },
        lazyMemory: {
          type: 'boolean',
          description:
            "resume before the memory is loaded: CRIU's lazy-pages daemon loads it from this node's images meanwhile (runc; needs userfaultfd); GET .../memory says when it is in",
        },
      },
    },
    response: {
      201: {
        type: 'object',
        properties: {
          checkpoint: { type: 'string' },
          container: { $ref: 'Container#' },
          stats: { type: 'object', additionalProperties: true },
          timings: { type: 'object', additionalProperties: true },
          merge: {
            description:
              'A final dump on pre-copy rounds: restored from the rounds merged on arrival (pages, lazyPages), or why not (unmerged)',
            type: 'object',
            properties: {
              pages: { type: 'integer' },
              lazyPages: { type: 'integer' },
              ms: { type: 'number' },
              unmerged: { type: 'string' },
            },
          },
        },
      },
      ...errors,
    },
  },
  pageServer: backgroundWorkRoute("State of a lazy checkpoint's page server; waits up to waitMs for it to finish serving", [
    'serving',
    'served',
  ]),
  memoryLoad: backgroundWorkRoute("State of a lazyMemory restore's loading of this checkpoint's memory; waits up to waitMs for it to end", [
    'loading',
    'loaded',
  ]),
  exportArchive: { summary: 'The checkpoint as a tar archive (podman/CRI-O layout plus manifest.json)', params: idParams },
  sendCheckpoint: {
    summary: 'Stream a checkpoint, with any parents the peer lacks (oldest first), to a peer agent; each verified there',
    params: idParams,
    body: {
      type: 'object',
      required: ['peer'],
      additionalProperties: false,
      properties: {
        peer: {
          type: 'object',
          required: ['url', 'token'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', pattern: '^https?://', maxLength: 2048 },
            token: { type: 'string', minLength: 1, maxLength: 4096 },
            ssh: sshRoute,
          },
        },
      },
    },
    response: {
      200: {
        type: 'object',
        properties: {
          checkpoint: { type: 'string' },
          sent: { type: 'array', items: { type: 'string' } },
          bytes: { type: 'integer' },
          ms: { type: 'number' },
          bytesPerSecond: { type: 'number' },
        },
      },
      ...errors,
    },
  },
  importArchive: {
    summary: 'Import a tar archive made by exportArchive; verified before it is listed',
    headers: {
      type: 'object',
      properties: {
        'x-ferry-checkpoint': { ...checkpointId, description: "the checkpoint's id, so that GET /v1/incoming/:id can follow it" },
      },
    },
    response: { 201: { $ref: 'Checkpoint#' }, ...errors },
  },
  incoming: {
    summary: 'How many bytes of an announced import have arrived (the sender follows a slow link with it)',
    params: idParams,
    response: {
      200: { type: 'object', properties: { id: { type: 'string' }, receiving: { type: 'boolean' }, bytes: { type: 'integer' } } },
      ...errors,
    },
  },
} as const;
