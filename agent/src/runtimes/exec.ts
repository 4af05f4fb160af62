/** Running runtime CLIs: one place that turns a failed command into a FerryError with its stderr. */
import { execa, type Options } from 'execa';
import { FerryError, type ErrorCode } from '../errors.js';

export interface CommandFailure {
  exitCode: number | undefined;
  stderr: string;
  stdout: string;
}

/** Turns a failure into a specific error (it may read a log file first), or leaves it generic. */
export type Classifier = (f: CommandFailure) => FerryError | undefined | Promise<FerryError | undefined>;

/** Runs argv; on failure lets `classify` turn stderr into a specific error, else a runtime_failed error. */
export async function runCommand(file: string, args: string[], opts: Options & { classify?: Classifier } = {}): Promise<string> {
  const { classify, ...execaOpts } = opts;
  const result = await execa(file, args, { reject: false, stdin: 'ignore', ...execaOpts });
  if (result.exitCode === 0 && !result.failed) return String(result.stdout ?? '');
  const failure: CommandFailure = {
    exitCode: result.exitCode,
    stderr: String(result.stderr ?? '').trim(),
    stdout: String(result.stdout ?? '').trim(),
  };
  const specific = await classify?.(failure);
  if (specific) throw specific;
  const code: ErrorCode = result.failed && result.exitCode === undefined ? 'runtime_unavailable' : 'runtime_failed';
  throw new FerryError(code, `${file} ${args[0] ?? ''} failed: ${failure.stderr || result.shortMessage}`, {
    hint: code === 'runtime_unavailable' ? `install ${file} (scripts/setup-host.sh)` : undefined,
    details: { exitCode: failure.exitCode },
  });
}
