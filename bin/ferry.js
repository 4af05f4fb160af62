#!/usr/bin/env node
// Runs the TypeScript sources through tsx in a checkout; an installed package without tsx runs the build.
import { existsSync } from 'node:fs';

const source = new URL('../cli/src/main.ts', import.meta.url);
let useSource = existsSync(source);
if (useSource) {
  try {
    const { register } = await import('tsx/esm/api');
    register();
  } catch {
    useSource = false;
  }
}
await import(useSource ? source.href : new URL('../dist/cli/src/main.js', import.meta.url).href);
