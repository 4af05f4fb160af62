/**
 * The little of the protobuf wire format that CRIU's stats images use: varint and length-delimited fields.
 * A hand-written reader avoids a protobuf runtime and generated code for two small messages.
 */
export type FieldValue = bigint | Uint8Array;

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

/** Decodes one message into field number -> last value seen (CRIU's stats fields are never repeated). */
export function decodeMessage(buf: Uint8Array): Map<number, FieldValue> {
  const fields = new Map<number, FieldValue>();
  let pos = 0;
  while (pos < buf.length) {
    const [key, afterKey] = readVarint(buf, pos);
    const field = Number(key >> 3n);
    const wireType = Number(key & 7n);
    if (wireType === 0) {
      const [value, next] = readVarint(buf, afterKey);
      fields.set(field, value);
      pos = next;
    } else if (wireType === 2) {
      const [len, start] = readVarint(buf, afterKey);
      const end = start + Number(len);
      if (end > buf.length) throw new Error(`field ${field} runs past the end of the message`);
      fields.set(field, buf.subarray(start, end));
      pos = end;
    } else if (wireType === 1 || wireType === 5) {
      pos = afterKey + (wireType === 1 ? 8 : 4);
    } else {
      throw new Error(`unsupported wire type ${wireType} for field ${field}`);
    }
  }
  return fields;
}
