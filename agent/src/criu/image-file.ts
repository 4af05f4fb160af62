/**
 * CRIU's image files: two 32-bit magics, then messages each preceded by its 32-bit little-endian length
 * (CRIU's pb_write_one). The messages stay bytes here; protobuf.ts reads their fields.
 */
export interface ImageFile {
  magic: Buffer;
  messages: Buffer[];
}

export function readImage(buf: Buffer, what: string): ImageFile {
  if (buf.length < 8) throw new Error(`${what}: shorter than its magic`);
  const messages: Buffer[] = [];
  for (let at = 8; at < buf.length; ) {
    if (at + 4 > buf.length) throw new Error(`${what}: ends inside a message size`);
    const size = buf.readUInt32LE(at);
    if (at + 4 + size > buf.length) throw new Error(`${what}: ends inside a message`);
    messages.push(buf.subarray(at + 4, at + 4 + size));
    at += 4 + size;
  }
  return { magic: buf.subarray(0, 8), messages };
}

export function writeImage(image: ImageFile): Buffer {
  const parts: Buffer[] = [image.magic];
  for (const msg of image.messages) {
    const size = Buffer.alloc(4);
    size.writeUInt32LE(msg.length);
    parts.push(size, msg);
  }
  return Buffer.concat(parts);
}
