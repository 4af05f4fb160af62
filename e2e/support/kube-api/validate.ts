/**
 * Validates a custom resource against its CRD version's schema the way the Kubernetes API server does:
 * fields the schema does not declare are pruned (and, under kubectl's default strict field validation,
 * refused); the OpenAPI v3 value validations apply; then the CEL rules (x-kubernetes-validations) run with
 * `self` bound to the value they are written on. Errors carry the field path as the API server reports it
 * (spec.selector.names[0]). Used by the tests and by the API stand-in, never by Ferry itself.
 */
import { evaluate } from '@marcbachmann/cel-js';
import { Ajv, type ErrorObject } from 'ajv';
import type { SchemaNode } from '../../../controller/src/kube/crd.js';

export interface FieldError {
  field: string;
  message: string;
}

export interface CustomResourceCheck {
  /** Empty when the API server would store the object. */
  errors: FieldError[];
  /** The object as it would be stored: unknown fields pruned. */
  pruned: Record<string, unknown>;
}

interface CelRule {
  rule: string;
  message?: string;
  fieldPath?: string;
}

const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
const compiled = new WeakMap<SchemaNode, ReturnType<typeof ajv.compile>>();

export function checkCustomResource(schema: SchemaNode, doc: Record<string, unknown>, strict = true): CustomResourceCheck {
  const unknown: string[] = [];
  const pruned = prune(schema, doc, '', unknown) as Record<string, unknown>;
  const errors: FieldError[] = strict ? unknown.map((field) => ({ field, message: `unknown field "${field}"` })) : [];
  const validate = compiled.get(schema) ?? ajv.compile(withoutMetadata(schema));
  compiled.set(schema, validate);
  if (!validate(pruned)) errors.push(...(validate.errors ?? []).map(fromAjv));
  // The API server runs CEL only on objects that pass the schema: a rule may rely on the types.
  if (!errors.length) runRules(schema, pruned, '', errors);
  return { errors, pruned };
}

/** ObjectMeta is the API server's, validated apart; only the name restriction a CRD may add is kept. */
function withoutMetadata(schema: SchemaNode): SchemaNode {
  const { metadata, ...rest } = schema.properties ?? {};
  const name = metadata?.properties?.name;
  return { ...schema, properties: { ...rest, metadata: { type: 'object', ...(name ? { properties: { name } } : {}) } } };
}

function prune(schema: SchemaNode | undefined, value: unknown, at: string, unknown: string[]): unknown {
  if (!schema || schema['x-kubernetes-preserve-unknown-fields'] === true) return value;
  if (Array.isArray(value)) return value.map((v, i) => prune(schema.items, v, `${at}[${i}]`, unknown));
  if (typeof value !== 'object' || value === null) return value;
  if (at === '.metadata') return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const field = `${at}.${key}`;
    const declared =
      schema.properties?.[key] ?? (typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined);
    if (declared) out[key] = prune(declared, v, field, unknown);
    else if (schema.additionalProperties === true) out[key] = v;
    else unknown.push(field.slice(1));
  }
  return out;
}

function fromAjv(e: ErrorObject): FieldError {
  const field = e.instancePath
    .split('/')
    .slice(1)
    .map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`))
    .join('')
    .slice(1);
  const missing =
    e.keyword === 'required' ? `${field ? `${field}.` : ''}${(e.params as { missingProperty: string }).missingProperty}` : undefined;
  return { field: missing ?? (field || '<root>'), message: missing ? 'Required value' : (e.message ?? e.keyword) };
}

function runRules(schema: SchemaNode, value: unknown, at: string, errors: FieldError[]): void {
  if (value === undefined || value === null) return;
  for (const r of (schema['x-kubernetes-validations'] as CelRule[] | undefined) ?? []) {
    let ok: unknown;
    try {
      ok = evaluate(r.rule, { self: value });
    } catch (err) {
      ok = `${(err as Error).message}`;
    }
    if (ok !== true) {
      const field = `${at}${r.fieldPath ?? ''}`.slice(1) || '<root>';
      errors.push({ field, message: typeof ok === 'string' ? `rule error: ${ok}` : (r.message ?? `failed rule: ${r.rule}`) });
    }
  }
  for (const [key, child] of Object.entries(schema.properties ?? {})) {
    runRules(child, (value as Record<string, unknown>)[key], `${at}.${key}`, errors);
  }
  if (schema.items && Array.isArray(value)) {
    for (const [i, v] of value.entries()) runRules(schema.items, v, `${at}[${i}]`, errors);
  }
}
