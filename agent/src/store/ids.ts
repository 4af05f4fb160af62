/** Names that reach the filesystem are checked here, so nothing a client sends can leave the image root. */
import { randomBytes } from 'node:crypto';
import { FerryError } from '../errors.js';

const CHECKPOINT_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;
/** Container names as docker/podman allow them, without anything a path could use. */
const CONTAINER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

export function newCheckpointId(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:TZ.]/g, '')
    .slice(0, 14);
  return `ck-${stamp}-${randomBytes(4).toString('hex')}`;
}

export function assertCheckpointId(id: string, field = 'id'): string {
  if (!CHECKPOINT_ID.test(id)) {
    throw new FerryError('bad_request', `${field} '${id}' is not a checkpoint id`, {
      hint: 'checkpoint ids are lowercase letters, digits, - and _ (as listed by ferry checkpoints)',
      details: { field },
    });
  }
  return id;
}

export function assertContainerRef(ref: string, field = 'container'): string {
  if (!CONTAINER_NAME.test(ref) || ref.includes('..')) {
    throw new FerryError('bad_request', `${field} '${ref}' is not a valid container name or id`, {
      hint: 'use letters, digits, _ . - only (no slashes, no ..)',
      details: { field },
    });
  }
  return ref;
}
