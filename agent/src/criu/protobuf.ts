/**
 * The little of the protobuf wire format that CRIU's images need here: stats (stats.ts), and pagemaps,
 * memory maps and thread cores (pagemap.ts, lazy-rule.ts). Fields are read generically, by number and wire
 * type: a hand-written reader avoids a protobuf runtime and generated code for a few messages.
 */
export type FieldValue = bigint | Uint8Array;

export interface Field {
  field: number;
  /** Varints and fixed-width numbers as bigint, length-delimited ones (messages, strings, packed) as bytes. */
  value: FieldValue;
}

export function readVarint(buf: Uint8Array, pos: number): [value: bigint, next: number] {
  let result = 0n;
  let shift = 0n;
  for (let i = pos; i < buf.length; i++) {
    const byte = buf[i] as number;
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, i + 1];
    shift += 7n;
    if (shift > 63n) break;
  }
  throw new Error(`malformed varint at offset ${pos}`);
}

export function writeVarint(value: bigint, out: number[]): void {
  let v = value;
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? byte | 0x80 : byte);
  } while (v);
}

/** Every field of one message, in order, repeated ones as often as they occur. */
export function readFields(buf: Uint8Array): Field[] {
  const fields: Field[] = [];
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  while (pos < buf.length) {
    const [key, afterKey] = readVarint(buf, pos);
    const field = Number(key >> 3n);
    const wireType = Number(key & 7n);
    if (wireType === 0) {
      const [value, next] = readVarint(buf, afterKey);
      fields.push({ field, value });
      pos = next;
    } else if (wireType === 2) {
      const [len, start] = readVarint(buf, afterKey);
      const end = start + Number(len);
      if (end > buf.length) throw new Error(`field ${field} runs past the end of the message`);
      fields.push({ field, value: buf.subarray(start, end) });
      pos = end;
    } else if (wireType === 1 || wireType === 5) {
      const width = wireType === 1 ? 8 : 4;
      if (afterKey + width > buf.length) throw new Error(`field ${field} runs past the end of the message`);
      fields.push({ field, value: wireType === 1 ? view.readBigUInt64LE(afterKey) : BigInt(view.readUInt32LE(afterKey)) });
      pos = afterKey + width;
    } else {
      throw new Error(`unsupported wire type ${wireType} for field ${field}`);
    }
  }
  return fields;
}

/** One message as field number -> last value seen (proto2 keeps the last of a field given twice). */
export function decodeMessage(buf: Uint8Array): Map<number, FieldValue> {
  return new Map(readFields(buf).map((f) => [f.field, f.value]));
}

/** The last value of a number field, or undefined. */
export function numberField(fields: Field[], n: number): bigint | undefined {
  const f = fields.filter((x) => x.field === n && typeof x.value === 'bigint').at(-1);
  return f?.value as bigint | undefined;
}

/** Every value of a length-delimited (message) field. */
export function messageFields(fields: Field[], n: number): Uint8Array[] {
  return fields.filter((x) => x.field === n && typeof x.value !== 'bigint').map((x) => x.value as Uint8Array);
}

/** A message from [field, value] pairs: bigints as varints, bytes as length-delimited. */
export function encodeMessage(fields: [number, bigint | Uint8Array][]): Buffer {
  const out: number[] = [];
  for (const [field, value] of fields) {
    if (typeof value === 'bigint') {
      writeVarint(BigInt(field << 3), out);
      writeVarint(value, out);
    } else {
      writeVarint(BigInt((field << 3) | 2), out);
      writeVarint(BigInt(value.length), out);
      out.push(...value);
    }
  }
  return Buffer.from(out);
}
