/**
 * Requests generated from a service's own OpenAPI document (fast-check): mostly values its schemas
 * accept, so requests get past validation into the code behind it, mixed with hostile ones (path
 * traversal, NULs, huge strings, wrong types) that must be refused cleanly. Every hostile name carries a
 * marker, so a file created from one can be found afterwards wherever it landed.
 */
import fc from 'fast-check';

export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  enum?: unknown[];
  const?: unknown;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  allOf?: JsonSchema[];
  format?: string;
}

export interface OpenApiOperation {
  parameters?: { in: 'path' | 'query' | 'header'; name: string; required?: boolean; schema?: JsonSchema }[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: JsonSchema }> };
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, OpenApiOperation>>;
  components?: { schemas?: Record<string, JsonSchema> };
}

export interface GeneratedRequest {
  path: string;
  query: Record<string, unknown>;
  body?: unknown;
}

export interface GenerationContext {
  doc: OpenApiDocument;
  /** In every hostile name, so files made from them can be searched for. */
  marker: string;
  /** Fields whose values must stay on this machine (URLs, hosts): never traffic to another address. */
  loopbackUrls: string[];
}

const MAX_DEPTH = 5;

export function hostileStrings(marker: string): string[] {
  return [
    `../../${marker}`,
    `../../../../tmp/${marker}`,
    `/tmp/${marker}`,
    `${marker}/../../..`,
    `%2e%2e%2f${marker}`,
    `${marker}\u0000.img`,
    `-${marker}`,
    `--${marker}=1`,
    `${marker}'; DROP TABLE nodes; --`,
    `${marker}\n${marker}`,
    '..',
    '.',
    '',
    ' ',
    '\u202e',
    'a'.repeat(5000),
  ];
}

function resolve(schema: JsonSchema, ctx: GenerationContext): JsonSchema {
  if (!schema.$ref) return schema;
  const name = schema.$ref.replace('#/components/schemas/', '');
  return ctx.doc.components?.schemas?.[name] ?? {};
}

/**
 * Fields whose valid values a schema cannot describe well enough to generate: places to connect to (only
 * this machine's addresses, never traffic elsewhere) and cron expressions (so that some are valid).
 */
function fieldOverride(name: string | undefined, ctx: GenerationContext): fc.Arbitrary<unknown> | undefined {
  if (name === 'url') return fc.constantFrom(...ctx.loopbackUrls);
  if (name === 'host') return fc.constantFrom('127.0.0.1', 'localhost', '::1');
  if (name === 'cron') return fc.constantFrom('*/5 * * * *', '0 3 * * 1-5', '61 * * * *', '* * * *');
  return undefined;
}

function conforming(schema: JsonSchema, ctx: GenerationContext, depth: number, hostile: boolean): fc.Arbitrary<unknown> {
  const s = resolve(schema, ctx);
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.enum) return fc.constantFrom(...s.enum);
  const alternatives = s.oneOf ?? s.anyOf;
  if (alternatives?.length) return fc.oneof(...alternatives.map((a) => valueFor(a, ctx, depth + 1, hostile)));
  if (s.allOf?.length) return conforming(Object.assign({}, ...s.allOf.map((a) => resolve(a, ctx))) as JsonSchema, ctx, depth, hostile);
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : s.properties ? ['object'] : [];
  if (types.length > 1) return fc.oneof(...types.map((type) => conforming({ ...s, type }, ctx, depth, hostile)));
  switch (types[0]) {
    case 'string':
      if (s.pattern) return fc.stringMatching(new RegExp(s.pattern)).filter((v) => v.length <= (s.maxLength ?? Number.POSITIVE_INFINITY));
      if (s.format === 'uri') return fc.constantFrom(...ctx.loopbackUrls);
      return fc.string({ minLength: s.minLength ?? 0, maxLength: Math.min(s.maxLength ?? 40, 200) });
    case 'integer':
      return fc.integer({ min: s.minimum ?? -1_000_000, max: Math.min(s.maximum ?? 1_000_000, 2_000) });
    case 'number':
      return fc.double({ min: s.minimum ?? -1e6, max: s.maximum ?? 1e6, noNaN: true });
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array':
      if (depth >= MAX_DEPTH) return fc.constant([]);
      return fc.array(valueFor(s.items ?? {}, ctx, depth + 1, hostile), {
        minLength: s.minItems ?? 0,
        maxLength: Math.max(s.minItems ?? 0, Math.min(s.maxItems ?? 4, 4)),
      });
    case 'object': {
      if (depth >= MAX_DEPTH) return fc.constant({});
      if (!s.properties && typeof s.additionalProperties === 'object') {
        // A map (labels): keys as label keys look, values per the schema.
        return fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9./-]{0,20}$/), valueFor(s.additionalProperties, ctx, depth + 1, hostile), {
          minKeys: s.minProperties ?? 0,
          maxKeys: Math.max(s.minProperties ?? 0, 4),
        });
      }
      const props = s.properties ?? {};
      const fields = Object.fromEntries(
        Object.entries(props).map(([k, v]) => [k, fieldOverride(k, ctx) ?? valueFor(v, ctx, depth + 1, hostile)]),
      );
      const required = (s.required ?? []).filter((k) => k in props);
      // minProperties with nothing required (a selector needs one criterion of several): one of them required in turn.
      const keys = Object.keys(props);
      const enough =
        s.minProperties && !required.length && keys.length
          ? fc.oneof(...keys.map((k) => fc.record(fields, { requiredKeys: [k] })))
          : fc.record(fields, { requiredKeys: required });
      if (!hostile) return enough;
      // Now and then a field nobody declared: it must be refused by name, not ignored or crashed on.
      return fc
        .tuple(enough, fc.option(fc.constantFrom('unknownField', '__proto__', 'constructor'), { freq: 8 }))
        .map(([o, extra]) => (extra ? { ...o, [extra]: 1 } : o));
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

const asText = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

/** What the schema accepts; when hostile, now and then something hostile or of the wrong type instead. */
export function valueFor(schema: JsonSchema, ctx: GenerationContext, depth = 0, hostile = true): fc.Arbitrary<unknown> {
  if (!hostile) return conforming(schema, ctx, depth, false);
  return fc.oneof(
    { arbitrary: conforming(schema, ctx, depth, true), weight: 6 },
    { arbitrary: fc.constantFrom(...hostileStrings(ctx.marker)), weight: 1 },
    { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 1 },
  );
}

/**
 * Requests for one operation: path parameters (URL-encoded), query and JSON body as its schema
 * describes. Half are wholly valid, so they reach the code behind validation; half carry hostile values.
 */
export function requestsFor(route: string, op: OpenApiOperation, ctx: GenerationContext): fc.Arbitrary<GeneratedRequest> {
  return fc.oneof(requestsOfKind(route, op, ctx, false), requestsOfKind(route, op, ctx, true));
}

function requestsOfKind(route: string, op: OpenApiOperation, ctx: GenerationContext, hostile: boolean): fc.Arbitrary<GeneratedRequest> {
  const params = op.parameters ?? [];
  const value = (schema: JsonSchema | undefined) => valueFor(schema ?? { type: 'string' }, ctx, 0, hostile);
  const pathParams = fc.record(Object.fromEntries(params.filter((p) => p.in === 'path').map((p) => [p.name, value(p.schema).map(asText)])));
  const query = fc.record(Object.fromEntries(params.filter((p) => p.in === 'query').map((p) => [p.name, value(p.schema)])), {
    requiredKeys: [],
  });
  const bodySchema = op.requestBody?.content?.['application/json']?.schema;
  const body = bodySchema ? (op.requestBody?.required ? value(bodySchema) : fc.option(value(bodySchema))) : fc.constant(undefined);
  return fc.record({ pathParams, query, body }).map(({ pathParams: values, query: q, body: b }) => ({
    path: route.replace(/\{([^}]+)\}/g, (_, name: string) => encodeURIComponent(values[name] ?? 'x')),
    query: q,
    ...(b !== undefined && b !== null ? { body: b } : {}),
  }));
}
