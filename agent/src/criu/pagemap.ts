/**
 * CRIU's pagemap images (pagemap-<pid>.img): which pages of a process an image set holds, and how. After the
 * PagemapHead (pages_id = 1: the data is in pages-<pages_id>.img), one PagemapEntry per run of pages
 * (vaddr = 1, nr_pages = 2, in_parent = 3, flags = 4; criu/images/pagemap.proto). The data of the entries
 * flagged PE_PRESENT follows one another in the pages file, in the pagemap's order; PE_PARENT entries are
 * in a parent image set; a restore with lazy pages leaves PE_LAZY entries to the lazy-pages daemon.
 */
import { readImage, type ImageFile, writeImage } from './image-file.js';
import { encodeMessage, numberField, readFields } from './protobuf.js';

export const PE_PARENT = 1 << 0;
export const PE_LAZY = 1 << 1;
export const PE_PRESENT = 1 << 2;
export const PAGE_SIZE = 4096;

export interface PagemapEntry {
  vaddr: bigint;
  nrPages: number;
  flags: number;
}

export interface Pagemap {
  image: ImageFile;
  /** The pages file that holds the PE_PRESENT entries' data: pages-<pagesId>.img. */
  pagesId: number;
  entries: PagemapEntry[];
}

/** One PagemapEntry; refuses fields it does not know rather than drop them when written back. */
function decodeEntry(msg: Buffer): PagemapEntry {
  const fields = readFields(msg);
  const unknown = fields.find((f) => f.field < 1 || f.field > 4 || typeof f.value !== 'bigint');
  if (unknown) throw new Error(`a pagemap entry has a field ${unknown.field} Ferry does not know`);
  // Images from before flags existed said in_parent instead.
  const flags = Number(numberField(fields, 4) ?? 0n) | (numberField(fields, 3) ? PE_PARENT : 0);
  return { vaddr: numberField(fields, 1) ?? 0n, nrPages: Number(numberField(fields, 2) ?? 0n), flags };
}

const encodeEntry = (e: PagemapEntry): Buffer =>
  encodeMessage([
    [1, e.vaddr],
    [2, BigInt(e.nrPages)],
    [4, BigInt(e.flags)],
  ]);

export function decodePagemap(buf: Buffer, what = 'pagemap image'): Pagemap {
  const image = readImage(buf, what);
  const head = image.messages[0];
  if (!head) throw new Error(`${what}: no head`);
  const pagesId = numberField(readFields(head), 1);
  if (pagesId === undefined) throw new Error(`${what}: its head names no pages file`);
  return { image, pagesId: Number(pagesId), entries: image.messages.slice(1).map(decodeEntry) };
}

export function encodePagemap(p: Pagemap): Buffer {
  return writeImage({ magic: p.image.magic, messages: [p.image.messages[0] as Buffer, ...p.entries.map(encodeEntry)] });
}

export const pagesFileOf = (p: Pagemap): string => `pages-${p.pagesId}.img`;
