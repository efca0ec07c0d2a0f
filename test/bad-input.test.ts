/**
 * Bad input is refused with a typed error before anything on disk changes.
 */
import { readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, describeOptions, Instance, InvalidArgument, InvalidState, NotFound, NotSupported, OPTIONS } from '../lib';
import { validateConfig } from '../lib/config/options';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
let existing: Instance;

beforeAll(async () => {
  t = await tempHost();
  existing = await t.host.create(t.name('exists'), { image: 'busybox' });
});
afterAll(async () => {
  await t?.dispose();
});

/** A snapshot of the host directory: every path and its mtime. */
function snapshot(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (p.includes('/rootfs/')) continue;
      out.push(`${p}:${statSync(p).mtimeMs}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(t.dir);
  return out.sort();
}

async function refusedWithoutChange(p: Promise<unknown>, type: new (...a: never[]) => Error, message?: RegExp): Promise<void> {
  const before = snapshot();
  const err = await p.then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(type);
  if (message) expect((err as Error).message).toMatch(message);
  expect(snapshot()).toEqual(before);
}

describe('instance names', () => {
  const bad: unknown[] = ['', '..', '.', 'a/b', '/abs', 'x'.repeat(64), '1abc', '-abc', 'abc-', 'a b', 'a_b', 'é', 'a\0b', undefined, 42];
  test.each(bad.map((n) => [JSON.stringify(n) ?? String(n), n]))('create refuses %s', async (_label, name) => {
    await refusedWithoutChange(t.host.create(name as string, { image: 'busybox' }), InvalidArgument, /name/);
  });

  test('63 characters is accepted, 64 is not', async () => {
    const name = 'a'.repeat(63);
    const c = await t.host.create(name, { image: 'busybox' });
    expect(c.name).toBe(name);
    await c.delete();
  });

  test('get and a bad name: InvalidArgument; an unknown name: NotFound', async () => {
    await expect(t.host.get('../etc')).rejects.toBeInstanceOf(InvalidArgument);
    await expect(t.host.get('nosuchthing')).rejects.toBeInstanceOf(NotFound);
  });

  test('a duplicate name: AlreadyExists, and the existing instance is untouched', async () => {
    await refusedWithoutChange(t.host.create(existing.name, { image: 'busybox' }), AlreadyExists);
    expect(await existing.status()).toBe('stopped');
  });
});

describe('options', () => {
  test('an unknown key is refused and the error lists close matches', async () => {
    await refusedWithoutChange(
      t.host.create(t.name('opt'), { image: 'busybox', config: { 'limits.memroy': '1GiB' } as never }),
      InvalidArgument,
      /unknown option "limits.memroy".*did you mean "limits.memory"/,
    );
    expect(() => validateConfig('container', { 'limit.cpu': '1' })).toThrow(/did you mean "limits.cpu"/);
  });

  test.each([
    ['limits.memory', 'lots', /bad value for "limits.memory"/],
    ['limits.memory', '1MiB', /floor/],
    ['limits.memory', '0', /out of range|floor/],
    ['limits.memory', '150%', /percentage/],
    ['limits.cpu', 'two', /CPU count/],
    ['limits.cpu', '999', /between 1 and/],
    ['limits.cpu', '0-99', /does not exist/],
    ['limits.processes', '-1', /positive integer/],
    ['limits.processes', '1.5', /positive integer/],
    ['security.privileged', 'yes', /"true" or "false"/],
    ['raw.lxc', 'not a config line', /lxc.<key> = <value>/],
    ['raw.lxc', 'lxc.rootfs.path = dir:/etc', /managed by lxq/],
    ['environment.1BAD', 'x', /environment variable names/],
    ['environment.OK', 'a\nb', /holds a newline/],
  ])('%s = %j is refused', async (key, value, message) => {
    await refusedWithoutChange(t.host.create(t.name('opt'), { image: 'busybox', config: { [key]: value } as never }), InvalidArgument, message);
  });

  test('a raw.lxc key liblxc does not know is refused by liblxc, before anything is written', async () => {
    await refusedWithoutChange(
      t.host.create(t.name('opt'), { image: 'busybox', config: { 'raw.lxc': 'lxc.bogus.key = 1' } }),
      InvalidArgument,
      /liblxc rejects "lxc.bogus.key = 1"/,
    );
  });

  test('options of the other type are refused, naming the condition', async () => {
    await refusedWithoutChange(
      t.host.create(t.name('opt'), { image: 'busybox', config: { 'raw.qemu': '-no-reboot' } }),
      InvalidArgument,
      /"raw.qemu" applies to vm instances only/,
    );
    expect(() => validateConfig('vm', { 'limits.processes': '10' })).toThrow(/applies to container instances only/);
    expect(() => validateConfig('vm', { 'raw.lxc': 'lxc.arch = x86_64' })).toThrow(/container instances only/);
  });

  test("an LXD cluster's keys (cluster.evacuate, placement.group) are NotSupported on a local host, in create, update and profiles; over LXD they are checked and passed", async () => {
    for (const [key, value] of [['cluster.evacuate', 'stop'], ['placement.group', 'spread1']]) {
      await refusedWithoutChange(t.host.create(t.name('clu'), { image: 'busybox', config: { [key]: value } }), NotSupported, new RegExp(`"${key.replace('.', '\\.')}".*no member of an LXD cluster`));
      await refusedWithoutChange(existing.update({ [key]: value }), NotSupported, /no member of an LXD cluster/);
      await refusedWithoutChange(t.host.profiles.create(t.name('clu'), { config: { [key]: value } }), NotSupported, /no member of an LXD cluster/);
      // What RemoteHost and RemoteInstance check before sending: the value as LXD checks it.
      expect(validateConfig('vm', { [key]: value }, 'remote')).toEqual({ [key]: value });
    }
    expect(() => validateConfig('container', { 'cluster.evacuate': 'later' }, 'remote')).toThrow(/bad value for "cluster\.evacuate": expected one of "auto", "migrate", "live-migrate", "stop"/);
    expect(() => validateConfig('container', { 'placement.group': '.hidden' }, 'remote')).toThrow(InvalidArgument);
    expect(() => validateConfig('container', { 'placement.group': 'a b' }, 'remote')).toThrow(/placement group name holds only/);
  });

  test('a config that is not an object, or a value that is not a scalar, is refused', async () => {
    await refusedWithoutChange(t.host.create(t.name('opt'), { image: 'busybox', config: 'x' as never }), InvalidArgument);
    await refusedWithoutChange(t.host.create(t.name('opt'), { image: 'busybox', config: { 'user.x': { a: 1 } } as never }), InvalidArgument);
  });

  test('control characters that could add a line or key to a generated file are refused, naming the option', async () => {
    const cases: Array<[string, string]> = [
      ['environment.A', 'x\nlxc.hook.pre-start = /bin/true'],
      ['environment.A', 'x\rlxc.hook.pre-start = /bin/true'],
      ['user.note', 'a\u001bb'],
      ['user.note', 'a\u0000b'],
      ['raw.lxc', 'lxc.environment = A=1\r\nlxc.environment = B=2'],
      ['limits.memory', '64MiB\u007f'],
    ];
    for (const [key, value] of cases) {
      await refusedWithoutChange(t.host.create(t.name('ctl'), { image: 'busybox', config: { [key]: value } }), InvalidArgument, new RegExp(`option "${key.replace('.', '\\.')}"`));
      await refusedWithoutChange(existing.update({ [key]: value }), InvalidArgument, /holds a/);
    }
    // A tab is whitespace inside a value; raw.lxc takes several lines.
    expect(validateConfig('container', { 'user.note': 'a\tb', 'raw.lxc': 'lxc.environment = A=1\nlxc.environment = B=2' })).toEqual({ 'user.note': 'a\tb', 'raw.lxc': 'lxc.environment = A=1\nlxc.environment = B=2' });
    await refusedWithoutChange(t.host.networks.create(t.name('n'), { 'ipv4.address': '10.9.8.1/24\nx' }), InvalidArgument, /network key "ipv4\.address"/);
  });

  test('update with a bad value is refused and the stored config is unchanged', async () => {
    const before = { ...existing.config };
    await refusedWithoutChange(existing.update({ 'limits.memory': 'lots' }), InvalidArgument);
    await refusedWithoutChange(existing.update({ 'no.such': null } as never), InvalidArgument);
    expect(existing.config).toEqual(before);
  });

  test('every option is declared once, with a condition and a description, and documented', () => {
    const keys = OPTIONS.map((o) => o.key);
    expect(new Set(keys).size).toBe(keys.length);
    for (const o of OPTIONS) {
      expect(['container', 'vm', 'both']).toContain(o.condition);
      expect(o.description.length).toBeGreaterThan(10);
      expect(describeOptions()).toContain(`\`${o.key}\``);
    }
  });

  test('values are normalized to strings (numbers, booleans)', () => {
    expect(validateConfig('container', { 'limits.processes': 20, 'security.privileged': false })).toEqual({
      'limits.processes': '20',
      'security.privileged': 'false',
    });
  });
});

describe('unknown keys of options objects', () => {
  test('create refuses an unknown top-level key, naming it and the known ones, and writes nothing', async () => {
    const name = t.name('key');
    await refusedWithoutChange(
      t.host.create(name, { image: 'busybox', confg: { 'limits.cpu': '1' } } as never),
      InvalidArgument,
      /unknown create option "confg"; known: "type", "image", "config"/,
    );
    await expect(t.host.get(name)).rejects.toBeInstanceOf(NotFound);
  });

  test('stop, exec, spawn and files.write refuse unknown keys before doing anything', async () => {
    await refusedWithoutChange(existing.stop({ timout: 5 } as never), InvalidArgument, /unknown stop option "timout"; known: "timeout", "force"/);
    // A stopped instance would refuse with InvalidState: the key is checked first.
    await refusedWithoutChange(existing.exec(['true'], { timeot: 5 } as never), InvalidArgument, /unknown exec option "timeot"; known: .*"timeout"/);
    await refusedWithoutChange(existing.spawn(['true'], { stdin: 'x' } as never), InvalidArgument, /unknown spawn option "stdin"/);
    await refusedWithoutChange(existing.files.write('/etc/motd', 'x', { mod: 0o644 } as never), InvalidArgument, /unknown write option "mod"; known: "mode", "uid", "gid"/);
    expect(await existing.status()).toBe('stopped');
  });
});

describe('images, types and states', () => {
  test('an unknown image is refused with the list of images', async () => {
    await refusedWithoutChange(t.host.create(t.name('img'), { image: 'ubuntu/22.04' }), InvalidArgument, /unknown image "ubuntu\/22.04"; available: "busybox"/);
    await refusedWithoutChange(t.host.create(t.name('img'), {} as never), InvalidArgument, /image/);
  });

  test('an unknown type is refused', async () => {
    await refusedWithoutChange(t.host.create(t.name('typ'), { type: 'jail' as never, image: 'busybox' }), InvalidArgument, /unknown instance type/);
  });

  test('operations in the wrong state are refused with InvalidState and change nothing', async () => {
    await refusedWithoutChange(existing.freeze(), InvalidState, /cannot freeze .*: it is stopped/);
    await refusedWithoutChange(existing.unfreeze(), InvalidState);
    await refusedWithoutChange(existing.stop({ timeout: -5 }), InvalidArgument);
  });
});
