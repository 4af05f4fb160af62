/**
 * Which pages a restore may leave to CRIU's lazy-pages daemon, by the rule CRIU applies to the pages it
 * dumps itself (criu/mem.c: vma_entry_can_be_lazy, and not a thread's stack page), for image sets Ferry
 * writes pagemaps for (merged-rounds.ts):
 *
 *   - only inside VMAs that are MAP_ANONYMOUS and MAP_PRIVATE and not MAP_LOCKED, and not the vDSO, vvar
 *     or vsyscall area (the restorer registers exactly those with userfaultfd; a page left lazy anywhere
 *     else would never be filled), nor MAP_HUGETLB (a margin);
 *   - never the page holding a thread's stack pointer, nor the pages on either side of it (a margin:
 *     CRIU needs the stack before userfaultfd is set up).
 *
 * Stack pointers are read for x86_64 only; on other machines nothing is made lazy.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { readImage } from './image-file.js';
import { PAGE_SIZE, PE_LAZY, type PagemapEntry } from './pagemap.js';
import { type Field, messageFields, numberField, readFields } from './protobuf.js';

const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_LOCKED = 0x2000;
const MAP_HUGETLB = 0x40000;
const VMA_AREA_VSYSCALL = 1 << 2;
const VMA_AREA_VDSO = 1 << 3;
const VMA_AREA_VVAR = 1 << 12;
const MTYPE_X86_64 = 1n;
const PAGE = BigInt(PAGE_SIZE);

interface Vma {
  start: bigint;
  end: bigint;
  lazy: boolean;
}

/** Per process (by pid) its VMAs, and the pages that stay eager whatever their VMA. */
export interface LazyRule {
  vmas: Map<string, Vma[]>;
  eager: Set<bigint>;
}

const firstMessage = (buf: Buffer, what: string): Field[] => {
  const msg = readImage(buf, what).messages[0];
  if (!msg) throw new Error(`${what}: no entry`);
  return readFields(msg);
};

function vmasOf(mm: Buffer, what: string): Vma[] {
  return messageFields(firstMessage(mm, what), 14)
    .map((raw) => {
      const f = readFields(raw);
      const flags = Number(numberField(f, 6) ?? 0n);
      const status = Number(numberField(f, 7) ?? 0n);
      const lazy =
        (flags & MAP_ANONYMOUS) !== 0 &&
        (flags & MAP_PRIVATE) !== 0 &&
        (flags & (MAP_LOCKED | MAP_HUGETLB)) === 0 &&
        (status & (VMA_AREA_VDSO | VMA_AREA_VSYSCALL | VMA_AREA_VVAR)) === 0;
      return { start: numberField(f, 1) ?? 0n, end: numberField(f, 2) ?? 0n, lazy };
    })
    .sort((a, b) => (a.start < b.start ? -1 : 1));
}

/** A thread's stack pointer from its core image; undefined for machines other than x86_64. */
function stackPointerOf(core: Buffer, what: string): bigint | undefined {
  const f = firstMessage(core, what);
  if (numberField(f, 1) !== MTYPE_X86_64) return undefined;
  const info = messageFields(f, 2)[0];
  const gpregs = info ? messageFields(readFields(info), 2)[0] : undefined;
  const sp = gpregs ? numberField(readFields(gpregs), 20) : undefined;
  if (sp === undefined) throw new Error(`${what}: no stack pointer`);
  return sp;
}

/** The rule for an image directory's processes; throws, saying why, where it cannot be read. */
export async function readLazyRule(imageDir: string): Promise<LazyRule> {
  const names = await readdir(imageDir);
  const read = (name: string) => readFile(path.join(imageDir, name));
  const eager = new Set<bigint>();
  for (const core of names.filter((n) => /^core-\d+\.img$/.test(n))) {
    const sp = stackPointerOf(await read(core), core);
    if (sp === undefined) throw new Error(`${core} is not an x86_64 thread: Ferry reads stack pointers of x86_64 only`);
    const page = (sp / PAGE) * PAGE;
    for (const p of [page - PAGE, page, page + PAGE]) eager.add(p);
  }
  const vmas = new Map<string, Vma[]>();
  for (const mm of names.filter((n) => /^mm-\d+\.img$/.test(n))) {
    vmas.set(/^mm-(\d+)\.img$/.exec(mm)?.[1] as string, vmasOf(await read(mm), mm));
  }
  return { vmas, eager };
}

/**
 * The entries of process `pid` split where laziness changes (VMA bounds, the eager stack pages), each run
 * flagged PE_LAZY where the rule allows. Cut at bounds rather than walked page by page: an entry can be
 * 1 GiB. Splitting moves no data: runs keep their order, and so their place in the pages file.
 */
export function markLazy(entries: PagemapEntry[], rule: LazyRule, pid: string): PagemapEntry[] {
  const vmas = rule.vmas.get(pid);
  if (!vmas) throw new Error(`no mm-${pid}.img for pagemap-${pid}.img`);
  return entries.flatMap((e) => {
    const end = e.vaddr + BigInt(e.nrPages) * PAGE;
    const inside = (x: bigint) => x > e.vaddr && x < end;
    const cuts = new Set<bigint>([e.vaddr, end]);
    for (const v of vmas) for (const x of [v.start, v.end]) if (inside(x)) cuts.add(x);
    for (const p of rule.eager) for (const x of [p, p + PAGE]) if (inside(x)) cuts.add(x);
    const sorted = [...cuts].sort((a, b) => (a < b ? -1 : 1));
    const runs: PagemapEntry[] = [];
    for (let i = 0; i + 1 < sorted.length; i++) {
      const [from, to] = [sorted[i] as bigint, sorted[i + 1] as bigint];
      const vma = vmas.find((v) => v.start <= from && from < v.end);
      const flags = vma?.lazy && !rule.eager.has(from) ? e.flags | PE_LAZY : e.flags & ~PE_LAZY;
      const nrPages = Number((to - from) / PAGE);
      const last = runs.at(-1);
      if (last && last.flags === flags) last.nrPages += nrPages;
      else runs.push({ vaddr: from, nrPages, flags });
    }
    return runs;
  });
}
