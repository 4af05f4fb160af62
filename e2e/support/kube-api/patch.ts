/**
 * The two patch formats clients send the API server: JSON merge patch (RFC 7386; also what the stand-in
 * applies for strategic merge patches, whose list-merge keys only built-in types define) and JSON patch
 * (RFC 6902). Pure functions over plain JSON values; a failed `test` or a bad path throws PatchError.
 */

export class PatchError extends Error {}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isObject = (v: unknown): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatch(target: unknown, patch: unknown): Json {
  if (!isObject(patch)) return structuredClone(patch) as Json;
  const out: Record<string, Json> = isObject(target) ? structuredClone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

interface Operation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  path: string;
  value?: Json;
  from?: string;
}

export function jsonPatch(target: unknown, ops: unknown): Json {
  if (!Array.isArray(ops)) throw new PatchError('a JSON patch is an array of operations');
  let doc = structuredClone(target) as Json;
  for (const op of ops as Operation[]) doc = apply(doc, op);
  return doc;
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new PatchError(`bad JSON pointer '${path}'`);
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function get(doc: Json, parts: string[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const p of parts) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur)) cur = cur[p];
    else return undefined;
  }
  return cur;
}

function apply(doc: Json, op: Operation): Json {
  const parts = pointer(op.path);
  switch (op.op) {
    case 'test':
      if (JSON.stringify(get(doc, parts)) !== JSON.stringify(op.value)) throw new PatchError(`test failed at ${op.path}`);
      return doc;
    case 'remove':
      return edit(doc, parts, op.path, 'remove');
    case 'add':
    case 'replace':
      return edit(doc, parts, op.path, op.op, op.value ?? null);
    case 'copy':
    case 'move': {
      const from = pointer(op.from ?? '');
      const value = get(doc, from);
      if (value === undefined) throw new PatchError(`nothing at ${op.from}`);
      const removed = op.op === 'move' ? edit(doc, from, op.from ?? '', 'remove') : doc;
      return edit(removed, parts, op.path, 'add', structuredClone(value));
    }
    default:
      throw new PatchError(`unknown JSON patch operation '${(op as { op: string }).op}'`);
  }
}

function edit(doc: Json, parts: string[], path: string, kind: 'add' | 'replace' | 'remove', value: Json = null): Json {
  if (!parts.length) return kind === 'remove' ? null : value;
  const parent = get(doc, parts.slice(0, -1));
  const last = parts.at(-1) as string;
  if (Array.isArray(parent)) {
    const i = last === '-' ? parent.length : Number(last);
    if (!Number.isInteger(i) || i < 0 || i > parent.length || (kind !== 'add' && i >= parent.length)) {
      throw new PatchError(`no element at ${path}`);
    }
    if (kind === 'add') parent.splice(i, 0, value);
    else if (kind === 'replace') parent[i] = value;
    else parent.splice(i, 1);
  } else if (isObject(parent)) {
    if (kind !== 'add' && !(last in parent)) throw new PatchError(`no member at ${path}`);
    if (kind === 'remove') delete parent[last];
    else parent[last] = value;
  } else {
    throw new PatchError(`no parent for ${path}`);
  }
  return doc;
}
