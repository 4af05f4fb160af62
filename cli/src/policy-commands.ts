/** `ferry policy apply|ls|describe|run|rm`: checkpoint policies on the controller. */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { FerryError } from '../../agent/src/errors.js';
import type { Policy, PolicyDocument, PolicyRun } from '../../controller/src/policy/types.js';
import { type CliContext, controllerClient } from './controller-commands.js';
import { bytes, fields, ms, table } from './format.js';

/** Every document in a YAML or JSON file (JSON is YAML); a syntax error names the file and line. */
export async function readPolicyFile(file: string): Promise<PolicyDocument[]> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new FerryError('bad_request', `cannot read ${file}: ${err.code ?? err.message}`, { details: { field: '-f' } });
  });
  const docs = parseAllDocuments(text);
  const out: PolicyDocument[] = [];
  for (const d of Array.isArray(docs) ? docs : [docs]) {
    const bad = d.errors[0];
    if (bad) {
      const line = bad.linePos?.[0]?.line;
      throw new FerryError('bad_request', `${file}${line ? `:${line}` : ''}: ${bad.message.split('\n')[0]}`, { details: { field: '-f' } });
    }
    const value = d.toJS() as unknown;
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new FerryError('bad_request', `${file}: each document must be a CheckpointPolicy object`, { details: { field: '-f' } });
    }
    out.push(value as PolicyDocument);
  }
  if (!out.length) throw new FerryError('bad_request', `${file} holds no policy`, { details: { field: '-f' } });
  return out;
}

const when = (iso?: string) =>
  iso
    ? new Date(iso)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
    : undefined;
const schedule = (p: Policy) =>
  'every' in p.spec.schedule
    ? `every ${p.spec.schedule.every}`
    : 'cron' in p.spec.schedule
      ? `cron ${p.spec.schedule.cron}`
      : `adaptive (${p.spec.schedule.adaptive.formula ?? 'daly'})`;

export function policySummary(p: Policy): string {
  const s = p.status;
  return fields([
    ['policy', p.metadata.name],
    ['phase', s.phase],
    ['selector', JSON.stringify(p.spec.selector)],
    ['schedule', schedule(p)],
    ['interval', `${ms(s.interval.ms)} (${s.interval.reason})`],
    ['retention', p.spec.retention ? JSON.stringify(p.spec.retention) : 'keep all'],
    ['incremental', s.incremental],
    ['last run', when(s.lastRunAt)],
    ['last success', when(s.lastSuccessAt)],
    ['next run', when(s.nextRunAt)],
    ['cost', s.cost ? `frozen ${ms(s.cost.frozenMs)}, checkpoint ${ms(s.cost.totalMs)}` : undefined],
    ['containers', s.containers],
    ['checkpoints kept', s.checkpoints],
    ['failures in a row', s.consecutiveFailures],
    ['last error', s.lastError ? `${s.lastError.code}: ${s.lastError.message} (${when(s.lastError.at)})` : undefined],
  ]);
}

const runsTable = (runs: PolicyRun[]) =>
  table(
    ['RUN', 'TRIGGER', 'STATUS', 'STARTED', 'CHECKPOINTS', 'DELETED', 'NOTE'],
    runs.map((r) => [r.id, r.trigger, r.status, when(r.startedAt), r.checkpoints.length, r.deleted.length, r.error?.message ?? r.message]),
  );

export function addPolicyCommands(program: Command, ctx: CliContext): void {
  const client = () => controllerClient(program);
  const policy = program.command('policy').description('checkpoint policies: which containers, how often, how many to keep');
  policy
    .command('apply')
    .description('create or replace the policies in a YAML or JSON file (the same document as the CheckpointPolicy resource)')
    .requiredOption('-f, --file <file>', 'policy file; several documents separated by ---')
    .action(async (opts: { file: string }) => {
      const applied: Policy[] = [];
      for (const doc of await readPolicyFile(opts.file)) applied.push(await client().applyPolicy(doc));
      ctx.print(applied, () =>
        applied
          .map(
            (p) => `policy ${p.metadata.name} applied (generation ${p.metadata.generation}); next run ${when(p.status.nextRunAt) ?? '-'}`,
          )
          .join('\n'),
      );
    });
  policy
    .command('ls', { isDefault: true })
    .description('policies and how they are doing')
    .action(async () => {
      const list = await client().policies();
      ctx.print(list, () =>
        table(
          ['NAME', 'PHASE', 'SCHEDULE', 'INTERVAL', 'CONTAINERS', 'KEPT', 'LAST SUCCESS', 'NEXT RUN', 'LAST ERROR'],
          list.map((p) => [
            p.metadata.name,
            p.status.phase,
            schedule(p),
            ms(p.status.interval.ms),
            p.status.containers,
            p.status.checkpoints,
            when(p.status.lastSuccessAt),
            when(p.status.nextRunAt),
            p.status.lastError?.message,
          ]),
        ),
      );
    });
  policy
    .command('describe <name>')
    .description("a policy's status, its recent runs and the checkpoints it keeps")
    .action(async (name: string) => {
      const [p, runs, checkpoints, recoveries] = await Promise.all([
        client().policy(name),
        client().policyRuns(name),
        client().policyCheckpoints(name),
        client().policyRecoveries(name),
      ]);
      ctx.print({ policy: p, runs, checkpoints, recoveries }, () =>
        [
          policySummary(p),
          '',
          'recent runs:',
          runsTable(runs.slice(0, 10)),
          '',
          'checkpoints kept:',
          table(
            ['ID', 'CONTAINER', 'NODES', 'TAKEN', 'SIZE', 'FROZEN', 'STATE'],
            checkpoints.map((c) => [
              c.id,
              c.containerName,
              [c.node, ...(c.copies ?? [])].join(','),
              when(c.createdAt),
              bytes(c.bytes),
              ms(c.frozenMs),
              c.state,
            ]),
          ),
          ...(recoveries.length
            ? [
                '',
                'recoveries after a lost node:',
                table(
                  ['CONTAINER', 'LOST NODE', 'RESTORED ON', 'FROM', 'WORK LOST', 'FENCE', 'ERROR'],
                  recoveries.map((r) => [
                    r.containerName,
                    r.lostNode,
                    r.targetNode,
                    r.checkpoint,
                    ms(r.lostWorkMs),
                    r.fence,
                    r.error?.message,
                  ]),
                ),
              ]
            : []),
        ].join('\n'),
      );
    });
  policy
    .command('events <name>')
    .description("follow a policy's events as they happen (runs, checkpoints, deletions, recoveries) until interrupted")
    .action(async (name: string) => {
      for await (const e of client().policyEvents(name)) {
        ctx.print(e, () => `${when(e.at)}  ${e.type.padEnd(17)} ${e.message}`);
      }
    });
  policy
    .command('run <name>')
    .description('run a policy now, outside its schedule, and wait for it')
    .action(async (name: string) => {
      const r = await client().runPolicy(name);
      ctx.print(r, () => runsTable([r]));
      if (r.status === 'failed') process.exitCode = 1;
    });
  policy
    .command('rm <name>')
    .description('delete a policy and the checkpoints it kept')
    .action(async (name: string) => {
      const r = await client().deletePolicy(name);
      ctx.print(r, () =>
        [
          `policy ${name} deleted with ${r.deleted.length} checkpoint(s)`,
          ...r.left.map((l) => `left ${l.id} on ${l.node}: ${l.error} (delete it there: ferry --agent URL rm ID)`),
        ].join('\n'),
      );
    });
}
