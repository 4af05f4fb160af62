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
 * linked into a new directory with pagemaps that list the copy's layout, every page present.
 *
 * A round whose pages are not the copy's (a heap grew, a mapping came or went, a process started or
 * ended) is its new layout: every pagemap lists all of a process's pages, those held by a parent
 * included, so the copy is rewritten in that round's order, its own pages from its pages file and the
 * rest from the copy (one more full copy of that process's memory; in the background for a round, inside
 * the downtime for the final dump, where it still costs less than CRIU reading the chain). What cannot be
 * merged (a page in a parent that the copy does not hold, shared memory left in the rounds) gives up
 * (Unmergeable), and the restore reads the chain as before.
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

  /** Merges a later round's (or the final dump's) pages into the copy: in place, or in its new layout. */
  async apply(imageDir: string): Promise<void> {
    await this.merge(imageDir, await processPagemaps(imageDir));
  }

  private async merge(imageDir: string, pagemaps: Map<string, Pagemap>): Promise<void> {
    for (const [pid, proc] of this.processes) {
      if (pagemaps.has(pid)) continue;
      // The process ended: its pages have nowhere to go.
      this.processes.delete(pid);
      await rm(proc.data, { force: true });
    }
    for (const [pid, pagemap] of pagemaps) {
      const proc = this.processes.get(pid);
      const from = await open(path.join(imageDir, pagesFileOf(pagemap)), 'r');
      try {
        for (const e of pagemap.entries) {
          if (!(e.flags & (PE_PRESENT | PE_PARENT))) {
            throw new Unmergeable(`pagemap-${pid}.img has an entry neither present nor in its parent (flags ${e.flags})`);
          }
        }
        if (proc && sameLayout(proc.runs, pagemap.entries)) await overwrite(pid, proc, pagemap.entries, from);
        else this.processes.set(pid, await this.relayout(pid, proc, pagemap.entries, from));
      } finally {
        await from.close();
      }
    }
  }

  /** The copy of process pid rewritten in the order of `entries`: present pages from `from`, the rest from the old copy. */
  private async relayout(pid: string, old: ProcessPages | undefined, entries: PagemapEntry[], from: FileHandle): Promise<ProcessPages> {
    const data = path.join(this.dir, `pages-${pid}.data`);
    const next = `${data}.next`;
    const [to, previous] = await Promise.all([open(next, 'w'), old ? open(old.data, 'r') : undefined]);
    const runs: Run[] = [];
    try {
      let [cursor, at] = [0, 0];
      for (const e of entries) {
        if (e.flags & PE_PRESENT) {
          await copyPages(from, cursor, to, at * PAGE_SIZE, e.nrPages);
          cursor += e.nrPages * PAGE_SIZE;
        } else {
          for (const piece of piecesOf(old?.runs ?? [], e, pid)) {
            await copyPages(previous as FileHandle, piece.at * PAGE_SIZE, to, (at + piece.offset) * PAGE_SIZE, piece.nrPages);
          }
        }
        runs.push({ vaddr: e.vaddr, nrPages: e.nrPages, at });
        at += e.nrPages;
      }
    } finally {
      await Promise.all([to.close(), previous?.close()]);
    }
    await rename(next, data);
    return { runs, data };
  }

  /**
   * Applies the final dump (finalDir: a checkpoint directory, its CRIU images in checkpoint/) and lays out
   * in outDir a checkpoint directory to restore from: the final dump's files linked, its process pagemaps
   * rewritten to the merged layout, every page present (lazy where CRIU's rule allows, when `lazy`), the
   * merged data as their pages files, and no parent. The merged copy is used up.
   */
  async finish(finalDir: string, outDir: string, opts: { lazy: boolean }): Promise<{ pages: number; lazyPages: number }> {
    const imageDir = path.join(finalDir, 'checkpoint');
    const pagemaps = await processPagemaps(imageDir);
    await this.merge(imageDir, pagemaps);
    if (pagemaps.size !== this.processes.size) throw new Unmergeable('the final dump has other processes than the rounds');
    const rule = opts.lazy ? await readLazyRule(imageDir) : undefined;
    const written = new Map<string, Buffer>();
    const moves: [string, string][] = [];
    let [pages, lazyPages] = [0, 0];
    for (const [pid, pagemap] of pagemaps) {
      const proc = this.processes.get(pid) as ProcessPages;
      if (!sameLayout(proc.runs, pagemap.entries)) throw new Unmergeable(`process ${pid}'s pages do not match the merged layout`);
      let entries: PagemapEntry[] = coalesce(proc.runs).map((r) => ({ ...r, flags: PE_PRESENT }));
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

const sameLayout = (runs: Run[], entries: PagemapEntry[]): boolean =>
  JSON.stringify(coalesce(runs), bigints) === JSON.stringify(coalesce(entries), bigints);

/**
 * Where the pages of entry e are in a copy laid out as `runs`: pieces of e (offset: pages into e) and
 * where each starts in the copy (at, in pages). A page the copy does not hold cannot be merged.
 */
function* piecesOf(runs: Run[], e: PagemapEntry, pid: string): Generator<{ offset: number; at: number; nrPages: number }> {
  let offset = 0;
  while (offset < e.nrPages) {
    const vaddr = e.vaddr + BigInt(offset) * PAGE;
    const run = runOf(runs, vaddr);
    if (!run) throw new Unmergeable(`process ${pid} has a page at 0x${vaddr.toString(16)} that no earlier round held`);
    const into = Number((vaddr - run.vaddr) / PAGE);
    const nrPages = Math.min(e.nrPages - offset, run.nrPages - into);
    yield { offset, at: run.at + into, nrPages };
    offset += nrPages;
  }
}

/** Writes the present entries' pages (read in order from `from`) over a copy whose layout holds them all. */
async function overwrite(pid: string, proc: ProcessPages, entries: PagemapEntry[], from: FileHandle): Promise<void> {
  const to = await open(proc.data, 'r+');
  try {
    let cursor = 0;
    for (const e of entries) {
      if (!(e.flags & PE_PRESENT)) continue;
      for (const piece of piecesOf(proc.runs, e, pid)) {
        await copyPages(from, cursor + piece.offset * PAGE_SIZE, to, piece.at * PAGE_SIZE, piece.nrPages);
      }
      cursor += e.nrPages * PAGE_SIZE;
    }
  } finally {
    await to.close();
  }
}

/** Copies nrPages pages from `from` at byte fromPos to `to` at byte toPos, a chunk at a time. */
async function copyPages(from: FileHandle, fromPos: number, to: FileHandle, toPos: number, nrPages: number): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(nrPages, CHUNK_PAGES) * PAGE_SIZE);
  for (let done = 0; done < nrPages; ) {
    const bytes = Math.min(nrPages - done, CHUNK_PAGES) * PAGE_SIZE;
    const { bytesRead } = await from.read(buf, 0, bytes, fromPos + done * PAGE_SIZE);
    if (bytesRead !== bytes) throw new Unmergeable('a pages file is shorter than its pagemap says');
    await to.write(buf, 0, bytes, toPos + done * PAGE_SIZE);
    done += bytes / PAGE_SIZE;
  }
}
