import test from 'ava';
import { twinCreateArgs } from '../src/runtimes/podman-twin.js';

const IMAGE = 'localhost/ferry-busybox:latest';
const IMAGE_ID = '03ce0a8e91b1a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a';
const twin = (createCommand: string[], name = 'twin') => twinCreateArgs({ createCommand, image: IMAGE, imageId: IMAGE_ID }, name);
const reason = (createCommand: string[]) => {
  const got = twin(createCommand);
  return 'reason' in got ? got.reason : `no refusal: ${got.args.join(' ')}`;
};

test('run becomes create under the twin name; global flags and -d go; the container arguments stay as they are', (t) => {
  const got = twin(['podman', '--root', '/x', 'run', '-d', '--name', 'w1', '-e', 'A=1', IMAGE, 'sh', '-d', '--name', 'z']);
  t.deepEqual(got, { args: ['create', '--name=twin', '-e', 'A=1', IMAGE, 'sh', '-d', '--name', 'z'] });
});

test('container run, --name=, clustered -dit and --detach=true', (t) => {
  t.deepEqual(twin(['podman', 'container', 'run', '-dit', '--detach=true', '--name=w1', IMAGE]), {
    args: ['create', '-it', '--name=twin', IMAGE],
  });
});

test('without --name the twin gets one; --preserve-fds goes with its value', (t) => {
  t.deepEqual(twin(['podman', 'run', '--preserve-fds', '2', '-p', '8080:80', IMAGE, 'top']), {
    args: ['create', '--name=twin', '-p', '8080:80', IMAGE, 'top'],
  });
});

test('the image is recognised as typed: short name, implicit latest, id prefix', (t) => {
  for (const typed of ['ferry-busybox', 'ferry-busybox:latest', IMAGE_ID.slice(0, 12), IMAGE_ID]) {
    t.deepEqual(twin(['podman', 'create', typed, 'sh']), { args: ['create', '--name=twin', typed, 'sh'] }, typed);
  }
  t.regex(reason(['podman', 'run', 'other-image', 'sh']), /not among the recorded arguments/);
});

test('refused: --rm and --pod containers, and a command that is not run or create', (t) => {
  t.is(reason(['podman', 'run', '--rm', IMAGE]), 'created with --rm');
  t.is(reason(['podman', 'run', '--pod=p1', IMAGE]), 'created with --pod');
  t.regex(reason([]), /did not record/);
  t.regex(reason(['podman', 'play', 'kube', 'x.yaml']), /did not record/);
});
