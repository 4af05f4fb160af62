/** `tsx e2e/support/start-counter.ts ID DIR`: starts the counting busybox container under runc (demo, benches). */
import { startRuncCounter } from './runc.js';

const [id, dir] = process.argv.slice(2);
if (!id || !dir) {
  console.error('usage: start-counter.ts ID DIR');
  process.exit(2);
}
await startRuncCounter(id, dir);
