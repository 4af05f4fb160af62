/**
 * The rules Kubernetes applies to a CRD's openAPIV3Schema before it accepts the CRD (apiextensions.k8s.io/v1
 * "structural schema"), as a checker: the CRD test runs it on what Ferry ships (and on a schema that is not
 * structural, to see it refuse), and the API stand-in can refuse a CRD that breaks them, as a real API
 * server does. Each problem names the JSON path of the node at fault.
 */
import type { SchemaNode } from '../../../controller/src/kube/crd.js';

const JUNCTORS = ['oneOf', 'anyOf', 'allOf'] as const;
/** What a branch of a junctor may not say: only value validation lives there. */
const NOT_IN_JUNCTOR = ['type', 'additionalProperties', 'default', 'description', 'nullable', 'x-kubernetes-preserve-unknown-fields'];

/** An empty list means Kubernetes would accept the schema as structural. */
export function structuralProblems(root: SchemaNode): string[] {
  const problems: string[] = [];
  checkNode(root, '', problems, true);
  const metadata = root.properties?.metadata;
  if (metadata?.properties) {
    for (const key of Object.keys(metadata.properties)) {
      if (key !== 'name' && key !== 'generateName')
        problems.push(`.properties.metadata.${key}: only name and generateName may be restricted`);
    }
  }
  return problems;
}

function checkNode(node: SchemaNode, at: string, problems: string[], needsType: boolean): void {
  const free = node['x-kubernetes-int-or-string'] === true || node['x-kubernetes-preserve-unknown-fields'] === true;
  if (needsType && !node.type && !free) problems.push(`${at || '.'}: every field needs a type`);
  if (node.additionalProperties === false) problems.push(`${at}.additionalProperties: false is not allowed (unknown fields are pruned)`);
  if (node.properties && node.additionalProperties !== undefined) {
    problems.push(`${at}: properties and additionalProperties are mutually exclusive`);
  }
  if ((node.properties || node.additionalProperties) && node.type && node.type !== 'object') {
    problems.push(`${at}: properties need type object`);
  }
  if (node.type === 'array' && !node.items) problems.push(`${at}: an array needs items`);
  for (const [key, child] of Object.entries(node.properties ?? {})) checkNode(child, `${at}.properties.${key}`, problems, true);
  if (typeof node.additionalProperties === 'object') checkNode(node.additionalProperties, `${at}.additionalProperties`, problems, true);
  if (node.items) checkNode(node.items, `${at}.items`, problems, true);
  for (const junctor of JUNCTORS) {
    for (const [i, branch] of (node[junctor] ?? []).entries()) checkBranch(node, branch, `${at}.${junctor}[${i}]`, problems);
  }
  if (node.not) checkBranch(node, node.not, `${at}.not`, problems);
}

/** A junctor branch validates values only: every field it names must be specified in the node around it. */
function checkBranch(outer: SchemaNode, branch: SchemaNode, at: string, problems: string[]): void {
  const intOrString = outer['x-kubernetes-int-or-string'] === true;
  for (const key of NOT_IN_JUNCTOR) {
    // The one exception: anyOf [{type: integer}, {type: string}] under x-kubernetes-int-or-string.
    if (key === 'type' && intOrString && (branch.type === 'integer' || branch.type === 'string')) continue;
    if (branch[key] !== undefined) problems.push(`${at}.${key}: not allowed inside a junctor`);
  }
  for (const [key, child] of Object.entries(branch.properties ?? {})) {
    const declared = outer.properties?.[key];
    if (!declared) problems.push(`${at}.properties.${key}: must also be specified outside the junctor`);
    else checkBranch(declared, child, `${at}.properties.${key}`, problems);
  }
  if (branch.items) {
    if (!outer.items) problems.push(`${at}.items: must also be specified outside the junctor`);
    else checkBranch(outer.items, branch.items, `${at}.items`, problems);
  }
  for (const junctor of JUNCTORS) {
    for (const [i, b] of (branch[junctor] ?? []).entries()) checkBranch(outer, b, `${at}.${junctor}[${i}]`, problems);
  }
}
