/**
 * A TCP relay that damages data in transit: it forwards every connection to the target unchanged except
 * for one byte, flipped at a given offset of the first client-to-server stream that gets that far. Put
 * between two agents, it shows that a byte damaged on the wire is caught by the receiver, not restored.
 */
import net, { type AddressInfo } from 'node:net';

export interface CorruptingProxy {
  /** host:port to use instead of the target's. */
  address: string;
  /** Set once the byte has been flipped. */
  flipped: Promise<void>;
  close(): Promise<void>;
}

export async function startCorruptingProxy(
  listenHost: string,
  target: { host: string; port: number },
  flipAt: number,
): Promise<CorruptingProxy> {
  let done = false;
  let markFlipped: () => void = () => undefined;
  const flipped = new Promise<void>((r) => {
    markFlipped = r;
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let seen = 0;
    client.on('data', (chunk: Buffer) => {
      if (!done && seen + chunk.length > flipAt) {
        const at = flipAt - seen;
        chunk[at] = (chunk[at] as number) ^ 0xff;
        done = true;
        markFlipped();
      }
      seen += chunk.length;
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    client.on('end', () => upstream.end());
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    address: `${listenHost}:${port}`,
    flipped,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
