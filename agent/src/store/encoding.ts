/**
 * Checkpoints at rest, compressed and encrypted (optional, per agent: --compress, --image-key).
 *
 * A checkpoint holds a process's whole memory. With a key configured, each checkpoint gets its own random
 * data key, stored in its manifest wrapped (AES-256-GCM) by the agent's key; each file is compressed, then
 * encrypted with the data key (AES-256-GCM, random IV, the checkpoint id and file path as associated data,
 * so a file moved into another checkpoint or renamed fails authentication). An encoded file is stored as
 * `<path>.fz`: `IV (12 bytes) | ciphertext | tag (16 bytes)`, or just the compressed bytes without a key.
 *
 * The manifest describes the stored bytes (so verification, transfer and import work unchanged) and,
 * for each encoded file, the plain file's size and sha256, checked again when it is decoded for a restore.
 * CRIU's inventory and pagemaps stay plain: they hold addresses and ids, not contents, and CRIU reads them
 * from a parent when it dumps on top of one.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { FerryError } from '../errors.js';
import type { ManifestFile } from './manifest.js';

export const COMPRESSIONS = ['none', 'gzip', 'zstd'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export interface ImageKey {
  /** Names the key without revealing it: 'k-' and the first 12 hex digits of its sha256. */
  id: string;
  bytes: Buffer;
}

/** What an agent does to the checkpoints it keeps. */
export interface AtRest {
  compression: Compression;
  key?: ImageKey;
}

/** Recorded in a manifest: how its `.fz` files were made. */
export interface Encoding {
  compression: Compression;
  encryption?: { alg: 'aes-256-gcm'; keyId: string; wrappedKey: string };
}

const ENCODED_SUFFIX = '.fz';

/** Where a stored file's plain content goes: an encoded file's path without its .fz. */
export const plainPathOf = (f: ManifestFile) => (f.plain ? f.path.slice(0, -ENCODED_SUFFIX.length) : f.path);
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** 1 MiB stream chunks: with the default 64 KiB, a 64 MiB image is a thousand trips through every stage. */
const CHUNK = 1 << 20;

/** CRIU's bookkeeping that a later dump reads from its parent; the rest is content. */
export const staysPlain = (rel: string) => /(^|\/)(inventory\.img|pagemap-[^/]*\.img)$/.test(rel);

export const atRestActive = (a: AtRest | undefined): a is AtRest => Boolean(a && (a.compression !== 'none' || a.key));

const keyIdOf = (bytes: Buffer) => `k-${createHash('sha256').update(bytes).digest('hex').slice(0, 12)}`;

/** A key file holds 32 bytes: raw, as 64 hex digits, or in base64. */
export async function loadImageKey(file: string): Promise<ImageKey> {
  const raw = await readFile(file).catch((err: Error) => {
    throw new FerryError('bad_request', `cannot read the image key ${file}: ${err.message}`, { details: { field: '--image-key' } });
  });
  const text = raw.toString('utf8').trim();
  const bytes = raw.length === 32 ? raw : /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (bytes.length !== 32) {
    throw new FerryError('bad_request', `the image key ${file} is not 32 bytes (raw, 64 hex digits or base64)`, {
      hint: 'make one with: head -c 32 /dev/urandom > key && chmod 600 key',
      details: { field: '--image-key' },
    });
  }
  return { id: keyIdOf(bytes), bytes };
}

function seal(key: Buffer, plain: Buffer, aad: string): Buffer {
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv).setAAD(Buffer.from(aad));
  return Buffer.concat([iv, c.update(plain), c.final(), c.getAuthTag()]);
}

function unseal(key: Buffer, sealed: Buffer, aad: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES)).setAAD(Buffer.from(aad));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  return Buffer.concat([d.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), d.final()]);
}

/** A new checkpoint's encoding, with its data key (absent without an agent key). */
export function newEncoding(atRest: AtRest, checkpointId: string): { encoding: Encoding; dataKey?: Buffer } {
  if (!atRest.key) return { encoding: { compression: atRest.compression } };
  const dataKey = randomBytes(32);
  const wrappedKey = seal(atRest.key.bytes, dataKey, checkpointId).toString('base64');
  return { encoding: { compression: atRest.compression, encryption: { alg: 'aes-256-gcm', keyId: atRest.key.id, wrappedKey } }, dataKey };
}

/** The data key of an encrypted checkpoint, or a clear refusal naming the key it needs. */
export function dataKeyOf(encoding: Encoding, checkpointId: string, key: ImageKey | undefined): Buffer | undefined {
  const e = encoding.encryption;
  if (!e) return undefined;
  const hint = `start the agent with --image-key naming the key ${e.keyId} (the same key on every node that restores it)`;
  if (!key)
    throw new FerryError('key_unavailable', `checkpoint ${checkpointId} is encrypted with key ${e.keyId}; this agent has no image key`, {
      hint,
    });
  if (key.id !== e.keyId) {
    throw new FerryError('key_unavailable', `checkpoint ${checkpointId} is encrypted with key ${e.keyId}; this agent's key is ${key.id}`, {
      hint,
    });
  }
  try {
    return unseal(key.bytes, Buffer.from(e.wrappedKey, 'base64'), checkpointId);
  } catch {
    throw new FerryError(
      'checkpoint_corrupt',
      `checkpoint ${checkpointId}: its data key does not unwrap with key ${e.keyId} (tampered manifest)`,
      {
        hint: 'restore an older checkpoint or take a new one',
      },
    );
  }
}

/** Counts and hashes what flows through. */
class Tap extends Transform {
  readonly hash = createHash('sha256');
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }
}

/** zstd through Debian's binary (Node 20's zlib has none), as a stream stage. */
function zstd(args: string[]): (source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer> {
  return async function* (source) {
    const child = spawn('zstd', ['-q', '-c', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const exited = new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (err) =>
        reject(new FerryError('runtime_unavailable', `zstd: ${err.message}`, { hint: 'install zstd, or use --compress gzip' })),
      );
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new FerryError('internal', `zstd ${args.join(' ')} failed: ${stderr.trim()}`)),
      );
    });
    exited.catch(() => undefined);
    const feeding = pipeline(source, child.stdin).catch((err: unknown) => err);
    yield* child.stdout as AsyncIterable<Buffer>;
    const fed = await feeding;
    await exited;
    if (fed instanceof Error) throw fed;
  };
}

const compressor = (c: Compression) => (c === 'gzip' ? createGzip({ level: 1 }) : c === 'zstd' ? zstd(['-1', '-T0']) : undefined);
const decompressor = (c: Compression) => (c === 'gzip' ? createGunzip() : c === 'zstd' ? zstd(['-d']) : undefined);

function encrypt(dataKey: Buffer, aad: string): (source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer> {
  return async function* (source) {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv('aes-256-gcm', dataKey, iv).setAAD(Buffer.from(aad));
    yield iv;
    for await (const chunk of source) {
      const out = c.update(chunk);
      if (out.length) yield out;
    }
    const last = c.final();
    if (last.length) yield last;
    yield c.getAuthTag();
  };
}

const aadOf = (checkpointId: string, rel: string) => `${checkpointId}/${rel}`;

/** Encodes dir/rel into dir/rel.fz; returns the manifest entry (stored bytes, and the plain file's figures). */
export async function encodeFile(
  dir: string,
  rel: string,
  checkpointId: string,
  encoding: Encoding,
  dataKey: Buffer | undefined,
): Promise<ManifestFile> {
  const plain = new Tap();
  const stored = new Tap();
  const stages: (NodeJS.ReadWriteStream | ((s: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>))[] = [plain];
  const compress = compressor(encoding.compression);
  if (compress) stages.push(compress);
  if (dataKey) stages.push(encrypt(dataKey, aadOf(checkpointId, rel)));
  stages.push(stored);
  const target = path.join(dir, rel + ENCODED_SUFFIX);
  await (pipeline as (...s: unknown[]) => Promise<void>)(
    createReadStream(path.join(dir, rel), { highWaterMark: CHUNK }),
    ...stages,
    createWriteStream(target, { highWaterMark: CHUNK }),
  );
  return {
    path: rel + ENCODED_SUFFIX,
    size: stored.size,
    sha256: stored.hash.digest('hex'),
    plain: { size: plain.size, sha256: plain.hash.digest('hex') },
  };
}

/**
 * Decodes a stored `.fz` file to target and checks it against the plain figures: a tampered byte, a file
 * from elsewhere or another key fails here, naming the file.
 */
export async function decodeFile(
  storedFile: string,
  target: string,
  entry: ManifestFile,
  checkpointId: string,
  encoding: Encoding,
  dataKey: Buffer | undefined,
): Promise<void> {
  const rel = plainPathOf(entry);
  const damaged = (why: string) =>
    new FerryError('checkpoint_corrupt', `checkpoint ${checkpointId} is damaged: ${rel} ${why}`, {
      hint: 'this checkpoint cannot be restored safely; restore an older checkpoint or take a new one',
      details: { checkpoint: checkpointId, file: rel },
    });
  const stages: unknown[] = [];
  if (dataKey) {
    if (entry.size < IV_BYTES + TAG_BYTES) throw damaged('is too short to be encrypted');
    const fh = await open(storedFile, 'r');
    const iv = Buffer.alloc(IV_BYTES);
    const tag = Buffer.alloc(TAG_BYTES);
    try {
      await fh.read(iv, 0, IV_BYTES, 0);
      await fh.read(tag, 0, TAG_BYTES, entry.size - TAG_BYTES);
    } finally {
      await fh.close();
    }
    const d = createDecipheriv('aes-256-gcm', dataKey, iv).setAAD(Buffer.from(aadOf(checkpointId, rel)));
    d.setAuthTag(tag);
    // An empty file encrypts to IV and tag alone: nothing to read between them.
    const body =
      entry.size > IV_BYTES + TAG_BYTES
        ? createReadStream(storedFile, { start: IV_BYTES, end: entry.size - TAG_BYTES - 1, highWaterMark: CHUNK })
        : Readable.from([]);
    stages.push(body, d);
  } else stages.push(createReadStream(storedFile, { highWaterMark: CHUNK }));
  const decompress = decompressor(encoding.compression);
  if (decompress) stages.push(decompress);
  const plain = new Tap();
  try {
    await (pipeline as (...s: unknown[]) => Promise<void>)(...stages, plain, createWriteStream(target, { highWaterMark: CHUNK }));
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw damaged(
      dataKey ? 'fails authentication (changed, or moved from elsewhere)' : `cannot be decompressed (${(err as Error).message})`,
    );
  }
  if (plain.size !== entry.plain?.size || plain.hash.digest('hex') !== entry.plain?.sha256)
    throw damaged('does not decode to what was stored');
}
