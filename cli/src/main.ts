/** `ferry`: runs an agent or the controller, or talks to them. */
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Command, Option } from 'commander';
import { AgentClient } from '../../agent/src/client.js';
import { agentConfig, DEFAULT_AGENT_PORT } from '../../agent/src/config.js';
import { FerryError } from '../../agent/src/errors.js';
import { startAgent } from '../../agent/src/main.js';
import type { Manifest } from '../../agent/src/store/manifest.js';
import { RUNTIME_NAMES, type RuntimeName } from '../../agent/src/runtimes/types.js';
import { addControllerCommands } from './controller-commands.js';
import { addPolicyCommands } from './policy-commands.js';
import { addTlsCommands, clientTls, type TlsFlags } from './tls-commands.js';
import { addTokenCommands } from './token-commands.js';
import { bytes, fields, ms, table } from './format.js';

interface GlobalOpts {
  agent: string;
  token?: string;
  json?: boolean;
}

const program = new Command('ferry')
  .description('Checkpoint, restore and move running containers with CRIU')
  .option('--agent <url>', 'agent URL', process.env.FERRY_AGENT ?? `http://127.0.0.1:${DEFAULT_AGENT_PORT}`)
  .option('--token <token>', 'agent token (default: $FERRY_TOKEN)')
  .option('--json', 'print JSON instead of tables')
  .option('--tls-ca <file>', 'the cluster CA (mTLS; for servers: accept only its clients) ($FERRY_TLS_CA)')
  .option('--tls-cert <file>', 'this certificate, shown to servers and, by agent and controller, to clients ($FERRY_TLS_CERT)')
  .option('--tls-key <file>', "this certificate's key ($FERRY_TLS_KEY)");

const globals = () => program.opts<GlobalOpts>();
const runtimeOption = () => new Option('-r, --runtime <runtime>', 'container runtime').choices([...RUNTIME_NAMES]);

function client(): AgentClient {
  const { agent, token = process.env.FERRY_TOKEN } = globals();
  if (!token)
    throw new FerryError('bad_request', 'no token: pass --token or set FERRY_TOKEN', { hint: 'use the token the agent was started with' });
  const tls = clientTls(program);
  return new AgentClient(agent, token, tls ? { tls } : {});
}

function print(value: unknown, human: () => string): void {
  console.log(globals().json ? JSON.stringify(value, null, 2) : human());
}

/** Long calls show that they are under way on stderr, so stdout stays clean for --json. */
async function withProgress<T>(label: string, work: Promise<T>): Promise<T> {
  if (globals().json || !process.stderr.isTTY) return work;
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  const t0 = Date.now();
  let i = 0;
  const timer = setInterval(
    () => process.stderr.write(`\r${frames[i++ % frames.length]} ${label} ${((Date.now() - t0) / 1000).toFixed(1)}s`),
    80,
  );
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write('\r\x1b[K');
  }
}

function checkpointSummary(m: Manifest): string {
  const s = m.stats;
  return fields([
    ['checkpoint', m.id],
    ['kind', m.kind],
    ['container', `${m.container.name} (${m.container.runtime})`],
    ['left running', m.leaveRunning ? 'yes' : 'no'],
    ['parent', m.parent],
    ['size', bytes(m.totalBytes)],
    ['CRIU frozen time', ms(s?.frozenTimeMs)],
    ['CRIU memdump time', ms(s?.memdumpTimeMs)],
    ['CRIU memwrite time', ms(s?.memwriteTimeMs)],
    ['pages written', s?.pagesWritten],
    ['pages skipped (parent)', s?.pagesSkippedParent],
    ['checkpoint wall time', ms(m.timings.checkpointMs)],
    ['seal (hash+sync) time', ms(m.timings.sealMs)],
  ]);
}

program
  .command('agent')
  .description('run the node agent')
  .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:7070, $FERRY_LISTEN)')
  .option('--node <name>', 'node name (default: hostname, $FERRY_NODE)')
  .option('--state-dir <dir>', 'images and bundles (default /var/lib/ferry, $FERRY_STATE_DIR)')
  .option('--runtimes <list>', 'enabled runtimes (default runc,podman,docker, $FERRY_RUNTIMES)')
  .option('--runc-root <dir>', "runc's state root (Kubernetes nodes: the CRI runtime's)")
  .option('--podman-root <dir>', "a podman store of this agent's own (several nodes on one machine; default: the host's store)")
  .option('--podman-runroot <dir>', 'its podman --runroot (default: /run/ferry/podman/<hash of the root>)')
  .option('--criu <path>', 'criu binary (default criu from PATH, $FERRY_CRIU)')
  .option('--docker-socket <path>', 'Docker Engine socket')
  .option('--transfer-stall-ms <ms>', 'fail a transfer between agents after this long without progress (default 30000)')
  .option('--ssh-key <file>', 'private key for sending checkpoints to nodes reached over SSH')
  .option('--compress <how>', 'compress kept checkpoints: none, gzip or zstd (default none, $FERRY_COMPRESS)')
  .option('--image-key <file>', 'encrypt kept checkpoints with this 32-byte key (AES-256-GCM; $FERRY_IMAGE_KEY_FILE)')
  .option('--allow-plain-http', 'serve plain HTTP on a non-loopback address (development on a trusted network only)')
  .action(async (opts: Record<string, string | undefined> & { allowPlainHttp?: boolean }) => {
    const cfg = agentConfig({ ...opts, ...program.opts<TlsFlags>(), token: globals().token });
    const { url, agent, app, warning } = await startAgent(cfg, !globals().json);
    if (warning) console.error(warning);
    // Stopped on purpose, the agent lets go of what coordinated checkpoints hold frozen before it exits
    // (killed, it thaws them when it starts again: holds.ts).
    const stop = (signal: NodeJS.Signals) => {
      void Promise.allSettled([agent.releaseAllHolds(), app.close()]).then(() => process.kill(process.pid, signal));
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    const caps = await agent.probe();
    const atRest = agent.store.atRest;
    console.error(
      `ferry agent ${cfg.node} listening on ${url}; CRIU ${caps.criu.version ?? 'unavailable'}, runtimes: ${
        caps.runtimes
          .filter((r) => r.available)
          .map((r) => r.runtime)
          .join(', ') || 'none'
      }; checkpoints kept ${atRest?.key ? `encrypted with ${atRest.key.id}` : 'unencrypted'}, compression ${atRest?.compression ?? 'none'}`,
    );
  });

program
  .command('node')
  .description("the agent's node and capabilities")
  .option('--refresh', 'probe again')
  .action(async (opts: { refresh?: boolean }) => {
    const n = await client().node(opts.refresh);
    print(n, () =>
      [
        fields([
          ['node', n.node],
          ['kernel', `${n.kernel} (${n.arch})`],
          ['CRIU', n.criu.available ? n.criu.version : `unavailable: ${n.criu.problem}`],
          ['dirty memory tracking', n.criu.memDirtyTrack ? 'yes (pre-copy possible)' : 'no (stop-and-copy only)'],
          ['lazy pages', n.criu.lazyPages ? 'yes (post-copy possible)' : `no: ${n.criu.lazyPagesProblem ?? 'not probed'}`],
          ['CPU', n.cpu.model],
        ]),
        '',
        table(
          ['RUNTIME', 'AVAILABLE', 'VERSION / REASON'],
          n.runtimes.map((r) => [r.runtime, r.available ? 'yes' : 'no', r.available ? r.version : r.reason]),
        ),
      ].join('\n'),
    );
  });

program
  .command('ls')
  .description('containers the agent can checkpoint')
  .addOption(runtimeOption())
  .action(async (opts: { runtime?: RuntimeName }) => {
    const list = await client().containers(opts.runtime);
    print(list, () =>
      table(
        ['RUNTIME', 'NAME', 'ID', 'STATE', 'PID'],
        list.map((c) => [c.runtime, c.name, c.id.slice(0, 12), c.state, c.pid]),
      ),
    );
  });

program
  .command('checkpoint <container>')
  .description('checkpoint a running container (it stops unless --leave-running)')
  .addOption(runtimeOption().makeOptionMandatory())
  .option('--leave-running', 'keep the container running after the dump')
  .option('--pre-dump', 'memory-only incremental dump (needs dirty memory tracking)')
  .option('--parent <checkpoint>', 'build on this checkpoint (pre-dump chain)')
  .option('--id <id>', 'checkpoint id (default: generated)')
  .action(
    async (container: string, opts: { runtime: RuntimeName; leaveRunning?: boolean; preDump?: boolean; parent?: string; id?: string }) => {
      const m = await withProgress(`checkpointing ${container}`, client().checkpoint({ container, ...opts }));
      print(m, () => checkpointSummary(m));
    },
  );

program
  .command('checkpoints')
  .description('checkpoints stored on the agent')
  .action(async () => {
    const list = await client().checkpoints();
    print(list, () =>
      table(
        ['ID', 'KIND', 'CONTAINER', 'RUNTIME', 'SIZE', 'FROZEN', 'CREATED'],
        list.map((m) => [m.id, m.kind, m.container.name, m.container.runtime, bytes(m.totalBytes), ms(m.stats?.frozenTimeMs), m.createdAt]),
      ),
    );
  });

program
  .command('describe <checkpoint>')
  .description('one checkpoint with its CRIU figures')
  .action(async (id: string) => {
    const m = await client().getCheckpoint(id);
    print(m, () => checkpointSummary(m));
  });

program
  .command('restore <checkpoint>')
  .description('verify a checkpoint and restore it')
  .option('--name <name>', 'name of the restored container')
  .addOption(runtimeOption())
  .action(async (id: string, opts: { name?: string; runtime?: RuntimeName }) => {
    const r = await withProgress(`restoring ${id}`, client().restore(id, opts));
    print(r, () =>
      fields([
        ['restored', `${r.container.name} (${r.container.runtime}, pid ${r.container.pid ?? '-'})`],
        ['from checkpoint', r.checkpoint],
        ['CRIU restore time', ms(r.stats?.restoreTimeMs)],
        ['pages restored', r.stats?.pagesRestored],
        ['verify time', ms(r.timings.verifyMs)],
        ['restore wall time', ms(r.timings.restoreMs)],
      ]),
    );
  });

program
  .command('rm <checkpoint>')
  .description('delete a checkpoint')
  .action(async (id: string) => {
    await client().deleteCheckpoint(id);
    print({ deleted: id }, () => `deleted ${id}`);
  });

program
  .command('export <checkpoint>')
  .description('write a checkpoint as a tar archive (podman/CRI-O layout)')
  .requiredOption('-o, --output <file>', 'archive to write')
  .action(async (id: string, opts: { output: string }) => {
    await pipeline(await client().exportArchive(id), createWriteStream(opts.output));
    print({ exported: id, file: opts.output }, () => `exported ${id} to ${opts.output}`);
  });

program
  .command('import <file>')
  .description('import a checkpoint archive made by `ferry export`')
  .action(async (file: string) => {
    const m = await client().importArchive(createReadStream(file));
    print(m, () => `imported ${m.id} (${m.container.name}, ${bytes(m.totalBytes)})`);
  });

addControllerCommands(program, { json: () => Boolean(globals().json), print });
addPolicyCommands(program, { json: () => Boolean(globals().json), print });
addTokenCommands(program, { print });
addTlsCommands(program, { print });

program.parseAsync().catch((err: unknown) => {
  if (err instanceof FerryError) {
    if (globals().json) console.error(JSON.stringify(err.toJSON()));
    else {
      console.error(`error: ${err.message}`);
      if (err.hint) console.error(`hint: ${err.hint}`);
      for (const line of err.criuLog ?? []) console.error(`  criu: ${line}`);
    }
  } else console.error(`error: ${(err as Error).message ?? err}`);
  process.exitCode = 1;
});
