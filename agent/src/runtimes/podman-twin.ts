/**
 * The command that creates, on another node, a twin of a podman container: same image, same options, same
 * command, not started. A migration prepares the twin while the source still runs, and restores into it in
 * place, which costs podman far less than `restore --import` creating the container inside the downtime
 * (README, "Migration: Ferry stop-and-copy vs podman export/import").
 *
 * The source is podman's own record of how the container was made (`CreateCommand`, what `podman generate
 * systemd --new` replays too). Only the options before the image are touched: the container's own
 * arguments after it pass unchanged, whatever they look like. Anything this cannot replay faithfully is
 * refused with a reason, and the caller falls back to export and import.
 */

export interface TwinSource {
  /** podman's CreateCommand: argv as typed, `podman [global flags] (container)? run|create [options] IMAGE [ARG...]`. */
  createCommand: string[];
  /** The image as podman names it (`inspect .ImageName`) and its id: how the image argument is recognised. */
  image: string;
  imageId: string;
}

/** Options of `podman run` that `podman create` refuses; the value says whether a separate value follows. */
const RUN_ONLY = new Map([
  ['-d', false],
  ['--detach', false],
  ['--sig-proxy', false],
  ['--preserve-fds', true],
]);
/** Options a twin must not carry: --rm containers cannot be checkpointed in place (podman refuses). */
const REFUSED = new Set(['--rm', '--pod']);

/**
 * The arguments after `podman` (global flags excluded: the target's own store flags go there) that create
 * the twin under `name`, or why there are none.
 */
export function twinCreateArgs(src: TwinSource, name: string): { args: string[] } | { reason: string } {
  const argv = src.createCommand;
  const sub = argv.findIndex((a, i) => i > 0 && (a === 'run' || a === 'create'));
  if (sub < 0) return { reason: 'podman did not record how the container was created (made through the API?)' };
  const image = argv.findIndex((a, i) => i > sub && namesImage(a, src));
  if (image < 0) return { reason: `the image ${src.image} is not among the recorded arguments` };

  const options: string[] = [];
  let named = false;
  for (let i = sub + 1; i < image; i++) {
    const arg = argv[i] as string;
    const flag = arg.split('=', 1)[0] as string;
    if (REFUSED.has(flag)) return { reason: `created with ${flag}` };
    if (RUN_ONLY.has(flag)) {
      if (RUN_ONLY.get(flag) && !arg.includes('=')) i++;
      continue;
    }
    // Short boolean flags come clustered (-dit): keep the cluster without d.
    if (/^-[dit]+$/.test(arg)) {
      const kept = arg.replaceAll('d', '');
      if (kept !== '-') options.push(kept);
      continue;
    }
    if (flag === '--name') {
      named = true;
      options.push(`--name=${name}`);
      if (!arg.includes('=')) i++; // its value
      continue;
    }
    options.push(arg);
  }
  if (!named) options.unshift(`--name=${name}`);
  return { args: ['create', ...options, ...argv.slice(image)] };
}

/** The image argument as typed: a name podman resolved to `image`, a short name of it, or an id prefix. */
function namesImage(arg: string, src: TwinSource): boolean {
  if (arg.startsWith('-')) return false;
  if (arg === src.image || arg === src.imageId) return true;
  if (/^[0-9a-f]{12,64}$/.test(arg) && src.imageId.startsWith(arg)) return true;
  const withTag = arg.includes(':') || arg.includes('@') ? arg : `${arg}:latest`;
  return src.image === withTag || src.image.endsWith(`/${withTag}`);
}
