/** `ferry tls`: the cluster's CA and certificates; and the TLS identity the CLI itself shows (--tls-*). */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { initCa, issueCertificate } from '../../agent/src/tls/ca.js';
import { type TlsIdentity, tlsFilesFrom } from '../../agent/src/tls/identity.js';
import { FerryError } from '../../agent/src/errors.js';

export interface TlsFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The global --tls-ca/--tls-cert/--tls-key (or $FERRY_TLS_*), as the CLI's client identity; undefined without. */
export function clientTls(program: Command): TlsIdentity | undefined {
  const files = tlsFilesFrom(program.opts<TlsFlags>());
  if (!files) return undefined;
  const read = (f: string, flag: string) => {
    try {
      return readFileSync(f);
    } catch (err) {
      throw new FerryError('bad_request', `cannot read ${flag} ${f}: ${(err as Error).message}`, { details: { field: flag } });
    }
  };
  return { ca: read(files.ca, '--tls-ca'), cert: read(files.cert, '--tls-cert'), key: read(files.key, '--tls-key') };
}

export function addTlsCommands(program: Command, out: { print(value: unknown, human: () => string): void }): void {
  const tls = program.command('tls').description("the cluster's own CA and certificates for mTLS between controller, agents and the CLI");
  tls
    .command('init-ca')
    .description('create a CA: DIR/ca.crt (give it to every service as --tls-ca) and DIR/ca.key (keep it offline)')
    .requiredOption('--dir <dir>', 'where to keep the CA')
    .option('--days <n>', 'validity', '3650')
    .action(async (opts: { dir: string; days: string }) => {
      const made = await initCa(opts.dir, { days: Number(opts.days) });
      out.print(made, () => `CA created: ${made.cert} (share), ${made.key} (keep offline)`);
    });
  tls
    .command('issue <name>')
    .description('issue DIR/NAME.crt and DIR/NAME.key, good for serving and calling, for the addresses others use')
    .requiredOption('--dir <dir>', 'the CA directory')
    .option(
      '--host <address>',
      'an IP address or DNS name the service is reached by (repeat)',
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option('--days <n>', 'validity', '397')
    .action(async (name: string, opts: { dir: string; host: string[]; days: string }) => {
      const made = await issueCertificate(opts.dir, name, { hosts: opts.host, days: Number(opts.days) });
      out.print(
        made,
        () =>
          `issued ${made.cert} and ${made.key} for ${[name, ...opts.host].join(', ')}; run with --tls-ca ${made.ca} --tls-cert ${made.cert} --tls-key ${made.key}`,
      );
    });
}
