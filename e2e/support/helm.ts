/**
 * Renders helm/ferry as `helm template` would, with e2e/support/helm-render (Go text/template + sprig from
 * Debian's packages, the engine Helm uses), built once per source version into a cache directory. helm
 * itself cannot be installed on these machines.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';

const run = promisify(execFile);
const SOURCE_DIR = fileURLToPath(new URL('./helm-render', import.meta.url));
export const CHART_DIR = fileURLToPath(new URL('../../helm/ferry', import.meta.url));

export interface RenderedChart {
  /** Each manifest with the template it came from. */
  manifests: { source: string; object: Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } } }[];
  notes: string;
  /** values.yaml with the given values laid over it, as the templates saw them. */
  values: Record<string, unknown>;
}

let building: Promise<string> | undefined;

function buildRenderer(): Promise<string> {
  building ??= (async () => {
    const source = await readFile(path.join(SOURCE_DIR, 'main.go'));
    const dir = path.join(os.tmpdir(), `ferry-helm-render-${createHash('sha256').update(source).digest('hex').slice(0, 16)}`);
    const bin = path.join(dir, 'helm-render');
    if (await stat(bin).catch(() => undefined)) return bin;
    await mkdir(dir, { recursive: true });
    const partial = `${bin}.${process.pid}.partial`;
    // GOPATH mode on Debian's Go packages: no module download, nothing but what apt installed.
    const env = { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOCACHE: path.join(dir, 'cache'), GOFLAGS: '' };
    await run('go', ['build', '-o', partial, '.'], { cwd: SOURCE_DIR, env }).catch((err: { stderr?: string }) => {
      throw new Error(`building helm-render failed (scripts/setup-host.sh installs golang-go and sprig): ${err.stderr ?? String(err)}`);
    });
    await rename(partial, bin);
    return bin;
  })();
  building.catch(() => {
    building = undefined;
  });
  return building;
}

export async function renderChart(
  values: Record<string, unknown> = {},
  release = 'ferry',
  namespace = 'ferry-system',
): Promise<RenderedChart> {
  const bin = await buildRenderer();
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-helm-'));
  try {
    const valuesFile = path.join(scratch, 'values.json');
    const valuesOut = path.join(scratch, 'merged.json');
    await writeFile(valuesFile, JSON.stringify(values));
    const { stdout, stderr } = await run(
      bin,
      ['-chart', CHART_DIR, '-values', valuesFile, '-values-out', valuesOut, '-name', release, '-namespace', namespace],
      {
        maxBuffer: 16 << 20,
      },
    );
    const manifests = parseAllDocuments(stdout)
      .map((doc) => ({ source: /# Source: (\S+)/.exec(String(doc.commentBefore ?? ''))?.[1] ?? '?', object: doc.toJS() }))
      .filter((m) => m.object) as RenderedChart['manifests'];
    return { manifests, notes: stderr, values: JSON.parse(await readFile(valuesOut, 'utf8')) };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
