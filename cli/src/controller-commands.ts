/** `ferry controller`, `ferry nodes`, `ferry migrate`, `ferry migrations`: the controller side of the CLI. */
import os from 'node:os';
import type { SshRoute } from '../../agent/src/ssh-tunnel.js';
import { type Command, Option } from 'commander';
import { DEFAULT_AGENT_PORT } from '../../agent/src/config.js';
import { FerryError } from '../../agent/src/errors.js';
import { RUNTIME_NAMES, type RuntimeName } from '../../agent/src/runtimes/types.js';
import { ControllerClient } from '../../controller/src/client.js';
import { controllerConfig, DEFAULT_CONTROLLER_PORT } from '../../controller/src/config.js';
import { startController } from '../../controller/src/main.js';
import { MEMORY_LOADS, type MemoryLoad, STRATEGIES, type MigrationRecord, type Strategy } from '../../controller/src/migration/types.js';
import { bytes, fields, ms, table } from './format.js';
import { clientTls, type TlsFlags } from './tls-commands.js';

export interface CliContext {
  json(): boolean;
  print(value: unknown, human: () => string): void;
}

export function controllerClient(program: Command): ControllerClient {
  const { controller, controllerToken = process.env.FERRY_CONTROLLER_TOKEN } = program.opts<{
    controller: string;
    controllerToken?: string;
  }>();
  if (!controllerToken) {
    throw new FerryError('bad_request', 'no controller token: pass --controller-token or set FERRY_CONTROLLER_TOKEN', {
      hint: 'use the token the controller was started with',
    });
  }
  return new ControllerClient(controller, controllerToken, clientTls(program));
}

/** A commander parser that names the flag when the value is not a positive integer. */
export function positiveInt(flag: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0)
      throw new FerryError('bad_request', `${flag} must be a positive integer of milliseconds, got '${v}'`);
    return n;
  };
}

/** --ssh user@host[:port] with --ssh-host-key, as the API's SshRoute; each flag named when it is wrong. */
export function sshRoute(ssh: string | undefined, hostKey: string | undefined): SshRoute | undefined {
  if (!ssh) {
    if (hostKey) throw new FerryError('bad_request', '--ssh-host-key needs --ssh user@host[:port]', { details: { field: '--ssh' } });
    return undefined;
  }
  const m = /^([a-z_][a-z0-9_.-]*)@([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?$/.exec(ssh);
  if (!m?.[1] || !m[2]) throw new FerryError('bad_request', `--ssh '${ssh}' is not user@host[:port]`, { details: { field: '--ssh' } });
  if (!hostKey || !/^SHA256:[A-Za-z0-9+/]{43}$/.test(hostKey)) {
    throw new FerryError('bad_request', `--ssh-host-key '${hostKey ?? ''}' is not a SHA256:... fingerprint`, {
      hint: 'run ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the node and pass what it prints after the size',
      details: { field: '--ssh-host-key' },
    });
  }
  return { username: m[1], host: m[2].replace(/^\[|\]$/g, ''), ...(m[3] ? { port: Number(m[3]) } : {}), hostKey };
}

export function migrationSummary(m: MigrationRecord): string {
  const f = m.figures;
  return fields([
    ['migration', m.id],
    ['status', m.status],
    ['container', `${m.source.containerName} (${m.source.runtime})`],
    ['from -> to', `${m.source.node} -> ${m.target.node}`],
    ['strategy', m.strategy ? `${m.strategy.used} (${m.strategy.reason})` : '-'],
    ['pre-copy rounds', m.rounds.length ? `${m.rounds.length} (${m.precopyStop ?? 'under way'})` : undefined],
    ['estimated downtime', ms(f.estimatedDowntimeMs)],
    ['CRIU frozen time', ms(f.frozenTimeMs)],
    ['downtime (dump start to restored)', ms(f.downtimeMs)],
    ['transferred', f.bytesSent === undefined ? '-' : `${bytes(f.bytesSent)} in ${ms(f.transferMs)}`],
    ['total time', ms(f.totalMs)],
    ['failed step', m.error ? `${m.error.step}: ${m.error.code}: ${m.error.message}` : undefined],
    ['rollback', m.rollback?.outcome],
  ]);
}

interface ControllerFlags {
  allowPlainHttp?: boolean;
  listen?: string;
  database?: string;
  agentTimeout: number;
  agentLongTimeout: number;
  healthCheck: number;
  kube?: boolean;
  kubeconfig?: string;
  leaseNamespace?: string;
  leaseName: string;
  identity?: string;
  leaseDuration: number;
  renewDeadline: number;
  retryPeriod: number;
  agentSelector?: string;
  agentNamespace?: string;
  agentPort: number;
  runtimeClass: string;
}

export function addControllerCommands(program: Command, ctx: CliContext): void {
  program
    .option('--controller <url>', 'controller URL', process.env.FERRY_CONTROLLER ?? `http://127.0.0.1:${DEFAULT_CONTROLLER_PORT}`)
    .option('--controller-token <token>', 'controller token (default: $FERRY_CONTROLLER_TOKEN)');
  const client = () => controllerClient(program);

  program
    .command('controller')
    .description('run the controller (standalone on an embedded SQLite store; --kube: on Kubernetes too)')
    .option('--listen <host:port>', `address to listen on (default 127.0.0.1:${DEFAULT_CONTROLLER_PORT}, $FERRY_CONTROLLER_LISTEN)`)
    .option('--database <file>', 'SQLite file (default /var/lib/ferry/controller.db, $FERRY_CONTROLLER_DB)')
    .option('--agent-timeout <ms>', 'limit of quick calls to agents (probe, list, delete)', positiveInt('--agent-timeout'), 15_000)
    .option('--agent-long-timeout <ms>', 'limit of checkpoint, restore and transfer calls', positiveInt('--agent-long-timeout'), 1_800_000)
    .option(
      '--health-check <ms>',
      'how often agents are probed (a lost node is noticed within this)',
      positiveInt('--health-check'),
      10_000,
    )
    .option('--kube', 'Kubernetes mode: reconcile CheckpointPolicy objects; of several replicas, the Lease holder acts')
    .option('--kubeconfig <file>', 'kubeconfig for --kube (default: in-cluster service account, else $KUBECONFIG)')
    .option('--lease-namespace <ns>', 'namespace of the leader Lease (default $POD_NAMESPACE, else ferry-system)')
    .option('--lease-name <name>', 'name of the leader Lease', 'ferry-controller')
    .option('--identity <id>', 'this replica in the Lease (default $POD_NAME, else host name and pid)')
    .option('--lease-duration <ms>', 'a leader silent this long is replaced', positiveInt('--lease-duration'), 15_000)
    .option('--renew-deadline <ms>', 'a leader that has not renewed for this long stops acting', positiveInt('--renew-deadline'), 10_000)
    .option('--retry-period <ms>', 'how often the Lease is renewed or tried', positiveInt('--retry-period'), 2_000)
    .option('--agent-selector <labels>', 'with --kube: register the agent pods with these labels as nodes (token: $FERRY_AGENT_TOKEN)')
    .option('--agent-namespace <ns>', 'namespace of the agent pods (default: the Lease namespace)')
    .option('--agent-port <port>', 'port the agents listen on', positiveInt('--agent-port'), DEFAULT_AGENT_PORT)
    .option('--runtime-class <name>', "with --kube: the RuntimeClass of ferry-runc, for a pod migration's replacement pod", 'ferry')
    .option('--allow-plain-http', 'serve plain HTTP on a non-loopback address (development on a trusted network only)')
    .action(async (opts: ControllerFlags) => {
      const { controllerToken } = program.opts<{ controllerToken?: string }>();
      if (opts.kube && opts.renewDeadline >= opts.leaseDuration) {
        throw new FerryError('bad_request', '--renew-deadline must be shorter than --lease-duration', {
          details: { field: '--renew-deadline' },
        });
      }
      if (opts.agentSelector && !opts.kube) {
        throw new FerryError('bad_request', '--agent-selector needs --kube', { details: { field: '--agent-selector' } });
      }
      const agentToken = process.env.FERRY_AGENT_TOKEN;
      if (opts.agentSelector && !agentToken) {
        throw new FerryError('bad_request', "--agent-selector needs the agents' token in $FERRY_AGENT_TOKEN", {
          details: { field: 'FERRY_AGENT_TOKEN' },
        });
      }
      const tls = Boolean(program.opts<TlsFlags>().tlsCa);
      const leaseNamespace = opts.leaseNamespace ?? process.env.POD_NAMESPACE ?? 'ferry-system';
      const cfg = controllerConfig({
        ...(opts.listen ? { listen: opts.listen } : {}),
        ...(opts.database ? { database: opts.database } : {}),
        ...(controllerToken ? { token: controllerToken } : {}),
        agentTimeouts: { quickMs: opts.agentTimeout, longMs: opts.agentLongTimeout },
        healthCheckMs: opts.healthCheck,
        ...program.opts<TlsFlags>(),
        ...(opts.allowPlainHttp ? { allowPlainHttp: true } : {}),
        ...(opts.kube
          ? {
              kube: {
                ...(opts.kubeconfig ? { kubeconfig: opts.kubeconfig } : {}),
                leaseNamespace,
                leaseName: opts.leaseName,
                identity: opts.identity ?? process.env.POD_NAME ?? `${os.hostname()}-${process.pid}`,
                leaseDurationMs: opts.leaseDuration,
                renewDeadlineMs: opts.renewDeadline,
                retryPeriodMs: opts.retryPeriod,
                runtimeClass: opts.runtimeClass,
                ...(opts.agentSelector && agentToken
                  ? {
                      agents: {
                        namespace: opts.agentNamespace ?? leaseNamespace,
                        labelSelector: opts.agentSelector,
                        port: opts.agentPort,
                        token: agentToken,
                        scheme: tls ? ('https' as const) : ('http' as const),
                      },
                    }
                  : {}),
              },
            }
          : {}),
      });
      const c = await startController(cfg, !ctx.json());
      if (c.warning) console.error(c.warning);
      console.error(
        `ferry controller listening on ${c.url}; store ${cfg.database}${c.recovered.length ? `; settling ${c.recovered.length} unfinished migration(s)` : ''}${cfg.kube ? `; kubernetes mode as ${cfg.kube.identity}` : ''}`,
      );
    });

  const nodes = program.command('nodes').description('nodes the controller migrates between');
  nodes
    .command('ls', { isDefault: true })
    .description('registered nodes and their health')
    .action(async () => {
      const list = await client().nodes();
      ctx.print(list, () =>
        table(
          ['NAME', 'URL', 'HEALTHY', 'CRIU', 'DIRTY TRACKING', 'LAST ERROR'],
          list.map((n) => [
            n.name,
            n.url,
            n.healthy ? 'yes' : 'no',
            n.capabilities?.criu.version,
            n.capabilities ? (n.capabilities.criu.memDirtyTrack ? 'yes' : 'no') : undefined,
            n.lastError,
          ]),
        ),
      );
    });
  nodes
    .command('add <name> <url>')
    .description("register a node's agent (probed with its token first)")
    .requiredOption('--node-token <token>', "the agent's token")
    .option('--ssh <user@host[:port]>', 'send checkpoints to this node through SSH (the URL is then as the node itself sees its agent)')
    .option('--ssh-host-key <SHA256:...>', "the node's pinned host key fingerprint (ssh-keygen -lf), needed with --ssh")
    .action(async (name: string, url: string, opts: { nodeToken: string; ssh?: string; sshHostKey?: string }) => {
      const n = await client().registerNode(name, url, opts.nodeToken, sshRoute(opts.ssh, opts.sshHostKey));
      const via = n.ssh ? `, transfers over SSH to ${n.ssh.username}@${n.ssh.host}:${n.ssh.port ?? 22}` : '';
      ctx.print(n, () => `registered ${n.name} at ${n.url} (CRIU ${n.capabilities?.criu.version ?? '?'})${via}`);
    });

  program
    .command('migrate <container>')
    .description('move a running container to another node, following its progress')
    .requiredOption('--from <node>', 'node the container runs on')
    .requiredOption('--to <node>', 'target node')
    .addOption(new Option('-r, --runtime <runtime>', 'container runtime').choices([...RUNTIME_NAMES]).makeOptionMandatory())
    .addOption(new Option('--strategy <strategy>', 'migration strategy').choices([...STRATEGIES]).default('auto'))
    .option('--max-downtime <ms>', 'downtime target for pre-copy', positiveInt('--max-downtime'))
    .addOption(
      new Option(
        '--memory-load <how>',
        "how the target loads memory on restore (lazy: after the container resumes, from the target's images)",
      )
        .choices([...MEMORY_LOADS])
        .default('auto'),
    )
    .option('--no-follow', 'return once the migration is accepted')
    .action(
      async (
        container: string,
        opts: {
          from: string;
          to: string;
          runtime: RuntimeName;
          strategy: Strategy;
          maxDowntime?: number;
          memoryLoad: MemoryLoad;
          follow: boolean;
        },
      ) => {
        const c = client();
        const started = await c.migrate({
          container: { node: opts.from, runtime: opts.runtime, name: container },
          targetNode: opts.to,
          strategy: opts.strategy,
          memoryLoad: opts.memoryLoad,
          ...(opts.maxDowntime ? { maxDowntimeMs: opts.maxDowntime } : {}),
        });
        await followToEnd(c, started, opts.follow, ctx);
      },
    );

  program
    .command('migrate-pod <namespace/name>')
    .description('Kubernetes mode: move a running pod to another node (its containers together), following its progress')
    .requiredOption('--to <node>', 'target node')
    .option('--ready-timeout <ms>', 'how long the replacement pod may take to run', positiveInt('--ready-timeout'))
    .option('--no-follow', 'return once the migration is accepted')
    .action(async (ref: string, opts: { to: string; readyTimeout?: number; follow: boolean }) => {
      const [namespace, name, ...rest] = ref.split('/');
      if (!namespace || !name || rest.length) {
        throw new FerryError('bad_request', `<namespace/name> must look like shop/orders-0, not '${ref}'`, {
          details: { field: 'namespace/name' },
        });
      }
      const c = client();
      const started = await c.migratePod({
        pod: { namespace, name },
        targetNode: opts.to,
        ...(opts.readyTimeout ? { readyTimeoutMs: opts.readyTimeout } : {}),
      });
      await followToEnd(c, started, opts.follow, ctx);
    });

  program
    .command('migrations')
    .description('migrations, newest first')
    .action(async () => {
      const list = await client().migrations();
      ctx.print(list, () =>
        table(
          ['ID', 'STATUS', 'STEP', 'CONTAINER', 'FROM', 'TO', 'STRATEGY', 'DOWNTIME'],
          list.map((m) => [
            m.id,
            m.status,
            m.step,
            m.source.containerName,
            m.source.node,
            m.target.node,
            m.strategy?.used,
            ms(m.figures.downtimeMs),
          ]),
        ),
      );
    });

  program
    .command('cancel <migration>')
    .description('cancel a migration; it rolls back at its next step')
    .action(async (id: string) => {
      const m = await client().cancel(id);
      ctx.print(m, () => `cancellation of ${m.id} requested (now at ${m.step}); follow it with: ferry migration ${m.id} --follow`);
    });

  nodes
    .command('rm <name>')
    .description('forget a node')
    .action(async (name: string) => {
      await client().removeNode(name);
      ctx.print({ removed: name }, () => `removed ${name}`);
    });

  program
    .command('migration <id>')
    .description('one migration; --follow streams its events until it ends')
    .option('--follow', 'stream events until the migration ends')
    .action(async (id: string, opts: { follow?: boolean }) => {
      const c = client();
      const m = opts.follow ? await follow(c, id, ctx) : await c.migration(id);
      ctx.print(m, () => migrationSummary(m));
    });
}

/** After POST /migrate: says it was accepted, or follows it to its end, prints the summary and fails the exit code unless it succeeded. */
async function followToEnd(c: ControllerClient, started: MigrationRecord, following: boolean, ctx: CliContext): Promise<void> {
  if (!following) return ctx.print(started, () => `migration ${started.id} accepted`);
  const m = await follow(c, started.id, ctx);
  ctx.print(m, () => migrationSummary(m));
  if (m.status !== 'succeeded') process.exitCode = 1;
}

/** Prints each event as a line on stderr (stdout stays for the result) and returns the final record. */
async function follow(c: ControllerClient, id: string, ctx: CliContext): Promise<MigrationRecord> {
  for await (const e of c.events(id)) {
    if (!ctx.json()) console.error(`${e.at.slice(11, 23)}  ${(e.step ?? '').padEnd(10)} ${e.message}`);
  }
  return c.migration(id);
}
