import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { OPTIONS } from '../lib';
import { NotSupported } from '../lib/core/errors';
import type { Condition } from '../lib/config/options';
import { describeSupport, findOption, validateConfig } from '../lib/config/options';

// LXD's instance options, from LXD's own metadata (provenance on the file's first line). The copy
// in test/fixtures is what CI has (a clean clone has no ../shared); when this machine's
// ../shared/lxd copy is present the two must agree, so the fixture never goes stale unnoticed.
const FIXTURE = path.join(__dirname, 'fixtures', 'lxd-instance-options.tsv');
const SHARED = path.join(__dirname, '..', '..', 'shared', 'lxd', 'instance-options.tsv');

/** Keys lxq has that LXD has not. */
// limits.kernel.*: LXD's older rlimit keys (lxc.prlimit), gone from its current metadata.
const LXQ_ONLY = ['vm.accel', 'vm.saved_boot', 'limits.kernel.*'];

interface LxdOption {
  key: string;
  condition: Condition;
}

function lxdCondition(text: string): Condition {
  if (text === 'virtual machine') return 'vm';
  if (text === 'container' || text === 'unprivileged container') return 'container';
  return 'both'; // empty, or "If supported by image"
}

function readLxd(): LxdOption[] {
  const lines = readFileSync(FIXTURE, 'utf8').split('\n');
  const header = lines[1].split('\t');
  const [k, c] = [header.indexOf('key'), header.indexOf('condition')];
  return lines
    .slice(2)
    .filter((l) => l.trim())
    .map((l) => l.split('\t'))
    .map((f) => ({ key: f[k], condition: lxdCondition(f[c]) }));
}

/** LXD writes a namespace's member as KEYNAME; any member name stands for it here. */
const probeKey = (key: string): string => key.replace(/\.KEYNAME$/, '.example').replace(/\.\*$/, '.example');

test('the LXD fixture is the copy of ../shared/lxd when this machine has it', () => {
  const fixture = readFileSync(FIXTURE, 'utf8');
  expect(fixture.split('\n')[0]).toMatch(/^# LXD's instance options .*canonical\/lxd [0-9a-f]+/);
  if (existsSync(SHARED)) expect(fixture).toBe(readFileSync(SHARED, 'utf8'));
});

test("every declared key is LXD's (or one of lxq's own), honoured on LXD's types or saying where it differs; coverage printed", () => {
  const lxd = readLxd();
  expect(lxd.length).toBeGreaterThan(80);
  const byKey = new Map(lxd.map((o) => [probeKey(o.key), o]));

  for (const spec of OPTIONS) {
    const theirs = byKey.get(probeKey(spec.key));
    if (!theirs) {
      expect([spec.key, LXQ_ONLY.includes(spec.key)]).toEqual([spec.key, true]);
      continue;
    }
    // A difference from LXD's condition is declared, so that the README's table shows it.
    const declared = spec.lxdCondition ?? spec.condition;
    expect([spec.key, declared]).toEqual([spec.key, theirs.condition]);
  }

  const declared = lxd.filter((o) => findOption(probeKey(o.key)));
  const refused = declared.filter((o) => findOption(probeKey(o.key))?.notSupported !== undefined);
  // A cluster's keys: refused on a local host, passed to an LXD server.
  const lxdOnly = declared.filter((o) => findOption(probeKey(o.key))?.localRefusal !== undefined);
  const missing = lxd.filter((o) => !findOption(probeKey(o.key)));
  const on = (t: Condition): number =>
    declared.filter((o) => {
      const s = findOption(probeKey(o.key))!;
      return s.notSupported === undefined && s.localRefusal === undefined && (s.condition === 'both' || s.condition === t);
    }).length;
  console.log(
    `LXD instance options: ${lxd.length}; declared by lxq: ${declared.length} ` +
      `(honoured for containers: ${on('container')}, for VMs: ${on('vm')}; refused with NotSupported: ${refused.length}; LXD servers only: ${lxdOnly.length}); ` +
      `not declared (${missing.length}): ${missing.map((o) => o.key).join(' ')}`,
  );
});

test('a key declared NotSupported is refused with NotSupported naming the key and what is missing, never accepted', () => {
  for (const spec of OPTIONS.filter((o) => o.notSupported !== undefined)) {
    const type = spec.condition === 'vm' ? 'vm' : 'container';
    let err: unknown;
    try {
      validateConfig(type, { [probeKey(spec.key)]: spec.default?.replace(/`/g, '') ?? 'true' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NotSupported);
    expect((err as Error).message).toContain(spec.key.replace(/\.\*$/, ''));
    expect((err as Error).message).toContain(spec.notSupported);
    // The README's cell says the same, or (a key probed on this host) what the host needs, in words fixed on every machine.
    expect(describeSupport(spec)).toContain(spec.hostDependent === undefined ? spec.notSupported : 'NotSupported');
  }
});

test('a key probed on the host is described in the table by what it needs, not by what this machine has', () => {
  for (const spec of OPTIONS.filter((o) => o.hostDependent !== undefined)) {
    expect(describeSupport(spec)).toBe(spec.hostDependent);
    if (spec.notSupported !== undefined) expect(describeSupport(spec)).not.toContain(spec.notSupported);
  }
});
