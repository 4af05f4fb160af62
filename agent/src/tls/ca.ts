/**
 * The cluster's own certificate authority, made with the openssl command (Debian's): one CA, then one
 * certificate per node (and one for the controller, and for each person's CLI), each good for serving
 * and for calling (serverAuth and clientAuth), naming the addresses others reach it by. Keys are
 * ECDSA P-256. Rotation: issue new certificates from the same CA and restart the service; to replace
 * the CA, give every service a bundle holding both CAs in --tls-ca while certificates are reissued.
 */
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { FerryError } from '../errors.js';
import { pathExists } from '../store/files.js';

export interface IssuedFiles {
  cert: string;
  key: string;
  ca: string;
}

/** `openssl req` flags for a new ECDSA P-256 key, unencrypted (services read it at start, unattended). */
const NEW_P256_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

async function openssl(args: string[], input?: string): Promise<void> {
  const r = await execa('openssl', args, { reject: false, ...(input !== undefined ? { input } : {}) });
  if (r.exitCode !== 0) {
    throw new FerryError('internal', `openssl ${args[0]} failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`, {
      hint: 'install openssl (Debian: apt install openssl)',
    });
  }
}

/** Creates DIR/ca.key and DIR/ca.crt; refuses to overwrite an existing CA. */
export async function initCa(dir: string, opts: { days?: number; name?: string } = {}): Promise<{ cert: string; key: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const key = path.join(dir, 'ca.key');
  const cert = path.join(dir, 'ca.crt');
  if ((await pathExists(key)) || (await pathExists(cert))) {
    throw new FerryError('conflict', `${dir} already holds a CA`, {
      hint: 'issue certificates from it with `ferry tls issue`, or choose another --dir',
    });
  }
  await openssl([
    'req',
    '-x509',
    '-new',
    ...NEW_P256_KEY,
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    String(opts.days ?? 3650),
    '-subj',
    `/CN=${opts.name ?? 'Ferry CA'}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await chmod(key, 0o600);
  return { cert, key };
}

/** Issues DIR/NAME.crt and DIR/NAME.key from the CA in DIR, for the given addresses and DNS names. */
export async function issueCertificate(dir: string, name: string, opts: { hosts?: string[]; days?: number } = {}): Promise<IssuedFiles> {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/.test(name)) {
    throw new FerryError('bad_request', `certificate name '${name}' is not a plain name (letters, digits, . _ -)`, {
      details: { field: 'name' },
    });
  }
  const ca = path.join(dir, 'ca.crt');
  const caKey = path.join(dir, 'ca.key');
  if (!(await pathExists(caKey)))
    throw new FerryError('not_found', `no CA in ${dir}`, { hint: 'create one with `ferry tls init-ca --dir DIR`' });
  const hosts = [...new Set([name, ...(opts.hosts ?? [])])];
  const san = hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  await openssl(['req', '-new', ...NEW_P256_KEY, '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  await writeFile(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth,clientAuth',
      `subjectAltName=${san}`,
    ].join('\n'),
  );
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca,
    '-CAkey',
    caKey,
    '-CAcreateserial',
    '-out',
    cert,
    '-days',
    String(opts.days ?? 397),
    '-extfile',
    ext,
  ]);
  await chmod(key, 0o600);
  await Promise.all([csr, ext].map((f) => rm(f, { force: true })));
  return { cert, key, ca };
}
