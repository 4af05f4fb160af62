/**
 * A pre-copy round chain merged into one image set on the target while the rounds arrive, so that the
 * final dump restores without parents.
 *
 * Why: CRIU restores every page a final dump left in its parents eagerly, even with lazy pages (their
 * pagemap entries carry PE_PARENT and never PE_LAZY), so after pre-copy the whole memory was copied in
 * while the container was down (measured in the lab: 1 GiB, 2.8-3.5 s of a 6.2 s downtime). Flagging
 * the in-parent entries lazy hung CRIU 4.1.1's lazy-pages daemon (docs/architecture.md). A set without
 * parents is what CRIU's lazy restore handles: every page can then load after the container resumed.
 *
 * How: the first round has no parent and holds every page; its pages file is copied aside once (off the
 * downtime: the source runs on meanwhile). Each later round, and at last the final dump, has its own
 * pages written over that copy in place, at the offset each page has in it (the data of a pagemap's
 * PE_PRESENT entries follows one another in pagemap order). At the end the final dump's images are
 * linked into a new directory with pagemaps that list the copy's layout, every page present. This holds
 * while the processes keep their memory layout, as a pre-copied workload does; a page outside the first
 * round's layout (a new mapping), a process that appeared, or a final dump whose pages differ from the
 * layout make the merge give up (Unmergeable), and the restore reads the chain as before.
 */
import { copyFile, link, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { markLazy, readLazyRule } from './lazy-rule.js';
import { decodePagemap, encodePagemap, PAGE_SIZE, type Pagemap, type PagemapEntry, PE_PARENT, PE_PRESENT, pagesFileOf } from './pagemap.js';

const PAGE = BigInt(PAGE_SIZE);
/** Pages copied per read and write: large enough for few system calls, small enough to hold in memory. */
const CHUNK_PAGES = 1024;
const PROCESS_PAGEMAP = /^pagemap-(\d+)\.img$/;
const SHMEM_PAGEMAP = /^pagemap-shmem-\d+\.img$/;

export class Unmergeable extends Error {}

interface Run {
  vaddr: bigint;
  nrPages: number;
  /** Where the run's first page is in the merged data file, in pages. */
  at: number;
}

interface ProcessPages {
  runs: Run[];
  data: string;
}

/** Adjacent runs joined: two layouts hold the same pages exactly when their coalesced runs are equal. */
function coalesce(entries: { vaddr: bigint; nrPages: number }[]): { vaddr: bigint; nrPages: number }[] {
  const out: { vaddr: bigint; nrPages: number }[] = [];
  for (const e of entries) {
    const last = out.at(-1);
    if (last && last.vaddr + BigInt(last.nrPages) * PAGE === e.vaddr) last.nrPages += e.nrPages;
    else out.push({ vaddr: e.vaddr, nrPages: e.nrPages });
  }
  return out;
}

/** The run holding vaddr (runs sorted by address), or undefined. */
function runOf(runs: Run[], vaddr: bigint): Run | undefined {
  let [lo, hi] = [0, runs.length - 1];
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = runs[mid] as Run;
    if (vaddr < r.vaddr) hi = mid - 1;
    else if (vaddr >= r.vaddr + BigInt(r.nrPages) * PAGE) lo = mid + 1;
    else return r;
  }
  return undefined;
}

async function processPagemaps(imageDir: string): Promise<Map<string, Pagemap>> {
  const out = new Map<string, Pagemap>();
  for (const name of await readdir(imageDir)) {
    const pid = PROCESS_PAGEMAP.exec(name)?.[1];
    if (pid) out.set(pid, decodePagemap(await readFile(path.join(imageDir, name)), name));
  }
  return out;
}

export class MergedRounds {
  private constructor(
    private readonly dir: string,
    private readonly processes: Map<string, ProcessPages>,
  ) {}

  /** Starts from a round without a parent (imageDir: its CRIU images), working in `dir`. */
  static async start(imageDir: string, dir: string): Promise<MergedRounds> {
    if ((await readdir(imageDir)).includes('parent')) throw new Unmergeable('the first round has a parent');
    await mkdir(dir, { recursive: true });
    const processes = new Map<string, ProcessPages>();
    try {
      for (const [pid, pagemap] of await processPagemaps(imageDir)) {
        const runs: Run[] = [];
        let at = 0;
        for (const e of pagemap.entries) {
          if (!(e.flags & PE_PRESENT) || e.flags & PE_PARENT) throw new Unmergeable(`pagemap-${pid}.img has pages it does not hold`);
          runs.push({ vaddr: e.vaddr, nrPages: e.nrPages, at });
          at += e.nrPages;
        }
        const data = path.join(dir, `pages-${pid}.data`);
        await copyFile(path.join(imageDir, pagesFileOf(pagemap)), data);
        if ((await stat(data)).size !== at * PAGE_SIZE) throw new Unmergeable(`${pagesFileOf(pagemap)} is not the size its pagemap says`);
        processes.set(pid, { runs, data });
      }
      return new MergedRounds(dir, processes);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Writes a later round's (or the final dump's) pages over the merged copy. */
  async apply(imageDir: string): Promise<void> {
    for (const [pid, pagemap] of await processPagemaps(imageDir)) {
      const proc = this.processes.get(pid);
      if (!proc) throw new Unmergeable(`process ${pid} appeared after the first round`);
      const [from, to] = await Promise.all([open(path.join(imageDir, pagesFileOf(pagemap)), 'r'), open(proc.data, 'r+')]);
      try {
        let cursor = 0;
        for (const e of pagemap.entries) {
          if (e.flags & PE_PRESENT) {
            await copyPages(e, from, cursor, to, proc.runs, pid);
            cursor += e.nrPages * PAGE_SIZE;
          } else if (!(e.flags & PE_PARENT)) {
            throw new Unmergeable(`pagemap-${pid}.img has an entry neither present nor in its parent (flags ${e.flags})`);
          }
        }
      } finally {
        await Promise.all([from.close(), to.close()]);
      }
    }
  }

  /**
   * Applies the final dump (finalDir: a checkpoint directory, its CRIU images in checkpoint/) and lays out
   * in outDir a checkpoint directory to restore from: the final dump's files linked, its process pagemaps
   * rewritten to the merged layout, every page present (lazy where CRIU's rule allows, when `lazy`), the
   * merged data as their pages files, and no parent. The merged copy is used up.
   */
  async finish(finalDir: string, outDir: string, opts: { lazy: boolean }): Promise<{ pages: number; lazyPages: number }> {
    const imageDir = path.join(finalDir, 'checkpoint');
    await this.apply(imageDir);
    const pagemaps = await processPagemaps(imageDir);
    if (pagemaps.size !== this.processes.size) throw new Unmergeable('the final dump has other processes than the rounds');
    const rule = opts.lazy ? await readLazyRule(imageDir) : undefined;
    const written = new Map<string, Buffer>();
    const moves: [string, string][] = [];
    let [pages, lazyPages] = [0, 0];
    for (const [pid, pagemap] of pagemaps) {
      const proc = this.processes.get(pid) as ProcessPages;
      const layout = coalesce(proc.runs);
      const wanted = coalesce(pagemap.entries);
      if (JSON.stringify(layout, bigints) !== JSON.stringify(wanted, bigints)) {
        throw new Unmergeable(`process ${pid}'s memory layout changed since the first round`);
      }
      let entries: PagemapEntry[] = layout.map((r) => ({ ...r, flags: PE_PRESENT }));
      if (rule) entries = markLazy(entries, rule, pid);
      for (const e of entries) {
        pages += e.nrPages;
        if (e.flags !== PE_PRESENT) lazyPages += e.nrPages;
      }
      written.set(`pagemap-${pid}.img`, encodePagemap({ ...pagemap, entries }));
      moves.push([proc.data, pagesFileOf(pagemap)]);
    }
    const replaced = new Set([...written.keys(), ...moves.map(([, name]) => name), 'parent']);
    const outImages = path.join(outDir, 'checkpoint');
    await mkdir(outImages, { recursive: true });
    for (const name of await readdir(imageDir)) {
      if (SHMEM_PAGEMAP.test(name)) {
        const shmem = decodePagemap(await readFile(path.join(imageDir, name)), name);
        if (shmem.entries.some((e) => e.flags & PE_PARENT)) throw new Unmergeable(`${name}: shared memory left in the rounds`);
      }
      if (!replaced.has(name)) await link(path.join(imageDir, name), path.join(outImages, name));
    }
    for (const name of await readdir(finalDir)) {
      if (name !== 'checkpoint') await link(path.join(finalDir, name), path.join(outDir, name));
    }
    for (const [name, content] of written) await writeFile(path.join(outImages, name), content);
    for (const [data, name] of moves) await rename(data, path.join(outImages, name));
    await this.dispose();
    return { pages, lazyPages };
  }

  dispose(): Promise<void> {
    return rm(this.dir, { recursive: true, force: true });
  }
}

const bigints = (_key: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);

/** Copies entry e's pages, at `cursor` in `from`, to their places in the merged data. */
async function copyPages(e: PagemapEntry, from: FileHandle, cursor: number, to: FileHandle, runs: Run[], pid: string): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(e.nrPages, CHUNK_PAGES) * PAGE_SIZE);
  let [vaddr, left, pos] = [e.vaddr, e.nrPages, cursor];
  while (left > 0) {
    const run = runOf(runs, vaddr);
    if (!run) throw new Unmergeable(`process ${pid} has a page at 0x${vaddr.toString(16)} the first round did not`);
    const into = Number((vaddr - run.vaddr) / PAGE);
    const n = Math.min(left, run.nrPages - into, CHUNK_PAGES);
    const bytes = n * PAGE_SIZE;
    const { bytesRead } = await from.read(buf, 0, bytes, pos);
    if (bytesRead !== bytes) throw new Unmergeable(`pages-*.img of process ${pid} is shorter than its pagemap says`);
    await to.write(buf, 0, bytes, (run.at + into) * PAGE_SIZE);
    vaddr += BigInt(n) * PAGE;
    left -= n;
    pos += bytes;
  }
}
