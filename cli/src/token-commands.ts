/** `ferry token create`: a token limited in scope and lifetime, derived from a service's secret (agent/src/api/tokens.ts). */
import { type Command, Option } from 'commander';
import { createToken, SCOPES, type Scope } from '../../agent/src/api/tokens.js';
import { FerryError } from '../../agent/src/errors.js';
import { parseDuration } from '../../controller/src/policy/units.js';

export function addTokenCommands(program: Command, out: { print(value: unknown, human: () => string): void }): void {
  const token = program.command('token').description('tokens limited in scope and time, for people, dashboards and scrapers');
  token
    .command('create')
    .description("derive a token from a service's secret; nothing is stored, changing the secret revokes them all")
    .addOption(
      new Option('--scope <scope>', 'read: GET routes only (lists, events, metrics); act: everything').choices([...SCOPES]).default('read'),
    )
    .option('--ttl <duration>', 'lifetime, e.g. 1h, 7d', '24h')
    .addOption(new Option('--for <service>', 'whose secret signs it').choices(['controller', 'agent']).default('controller'))
    .action((opts: { scope: Scope; ttl: string; for: 'controller' | 'agent' }) => {
      const globals = program.opts<{ token?: string; controllerToken?: string }>();
      const secret =
        opts.for === 'controller'
          ? (globals.controllerToken ?? process.env.FERRY_CONTROLLER_TOKEN)
          : (globals.token ?? process.env.FERRY_TOKEN);
      if (!secret) {
        const where = opts.for === 'controller' ? '--controller-token or FERRY_CONTROLLER_TOKEN' : '--token or FERRY_TOKEN';
        throw new FerryError('bad_request', `no ${opts.for} secret to sign with: set ${where}`, {
          hint: `the secret the ${opts.for} was started with`,
        });
      }
      const ttlSeconds = parseDuration(opts.ttl, '--ttl') / 1000;
      const value = createToken(secret, opts.scope, ttlSeconds);
      const expiresAt = new Date(Date.now() + ttlSeconds * 1000).toISOString();
      out.print({ token: value, scope: opts.scope, for: opts.for, expiresAt }, () => value);
    });
}
