/**
 * liblxc 5.0.2 hangs a start whose container's first process dies while it still talks to its
 * monitor (here: a `security.syscalls.deny` of `sendmsg`, which liblxc calls after loading the
 * filter). lxq's start watch sees the monitor's zombie child and ends it: the start fails with
 * a typed error, leaves no monitor, no cgroup and no mount of its own behind, and the container starts once
 * the key is taken away.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

import { OperationFailed } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

const monitors = (name: string) => execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith('[lxc monitor]') && l.endsWith(` ${name}`));
const cgroups = (name: string) =>
  readdirSync('/sys/fs/cgroup').flatMap((h) => {
    try {
      return readdirSync(`/sys/fs/cgroup/${h}`).filter((d) => d.startsWith('lxc.') && d.includes(`.${name}`)).map((d) => `${h}/${d}`);
    } catch {
      return [];
    }
  });
const mounts = (name: string) => readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.includes(`/${name}/`));

test('a start whose first process is killed by its own syscall filter fails instead of hanging, and leaves nothing behind', async () => {
  const c = await t.host.create(t.name('deny'), { image: 'busybox', config: { 'security.syscalls.deny': 'sendmsg' } });
  const mountedBefore = mounts(c.name); // the pool's own (an overlay root stays mounted while the container exists)
  await expect(c.start()).rejects.toThrow(OperationFailed);
  await expect(c.start()).rejects.toThrow(/first process died/);
  expect(await c.status()).toBe('stopped');
  expect(monitors(c.name)).toEqual([]);
  expect(cgroups(c.name)).toEqual([]);
  expect(mounts(c.name)).toEqual(mountedBefore);
  await c.update({ 'security.syscalls.deny': null });
  await c.start();
  expect((await c.exec(['true'])).exitCode).toBe(0);
  await c.delete({ force: true });
  expect(cgroups(c.name)).toEqual([]);
}, 300_000);
