/**
 * No value adds a line, a key or an option to a file lxq generates: the shared guard
 * (lib/core/guard.ts) and each writer that calls it — the liblxc config, dnsmasq's hosts file and
 * command line, the nftables ruleset, QEMU's command line — given hostile values. The good output
 * is checked by the real parsers (liblxc through a container, `nft -c`, `dnsmasq --test`, QEMU).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { InvalidArgument } from '../lib';
import { lxcConfigText } from '../lib/drivers/container/lxc-config';
import { launchArgs, optionString } from '../lib/drivers/vm/devices';
import type { VmImage } from '../lib/images/meta';
import { dnsmasqArgs, type DnsmasqSettings, hostsText } from '../lib/network/dnsmasq';
import { natRuleset } from '../lib/network/nftables';
import { qemuOptionValue, refuseControlChars, refuseInField } from '../lib/core/guard';
import { qemuArgsForImage } from '../lib/drivers/vm/qemu-args';
import { tempHost, TestHost } from './helpers/host';

const HOSTILE = 'x\nlxc.hook.pre-start = /bin/sh -c id';

/** The error `f` throws (fails the test if it returns). */
function thrownBy(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'lxq-genfiles-'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('the guard', () => {
  test.each([
    ['a newline', 'a\nb', /holds a newline \(U\+000A\) at offset 1/],
    ['a carriage return', 'a\rb', /holds a carriage return \(U\+000D\) at offset 1/],
    ['a NUL', 'a\0b', /holds a NUL \(U\+0000\) at offset 1/],
    ['an escape', 'a\x1b[2Jb', /holds a control character \(U\+001B\) at offset 1/],
    ['a DEL', 'ab\x7f', /holds a DEL \(U\+007F\) at offset 2/],
    ['a tab, unless allowed', 'a\tb', /holds a tab \(U\+0009\) at offset 1/],
  ])('refuses %s, naming where', (_what, value, message) => {
    const err = thrownBy(() => refuseControlChars('the test file: "key"', value));
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(/^the test file: "key": /);
    expect(err.message).toMatch(message);
  });

  test('passes ordinary text through, and a tab where allowed', () => {
    expect(refuseControlChars('f', 'héllo wörld = 1, "2"; #3')).toBe('héllo wörld = 1, "2"; #3');
    expect(refuseControlChars('f', 'a\tb', { allowTab: true })).toBe('a\tb');
    expect(() => refuseControlChars('f', 'a\nb', { allowTab: true })).toThrow(InvalidArgument);
  });

  test('QEMU option values: "," doubled, control characters refused', () => {
    expect(qemuOptionValue('-drive file', '/srv/a,if=none,file=/etc/shadow')).toBe('/srv/a,,if=none,,file=/etc/shadow');
    expect(() => qemuOptionValue('-drive file', '/srv/a\n-device foo')).toThrow(/^the QEMU command line: -drive file: .*newline/);
  });

  test('comma-separated fields: "," refused', () => {
    expect(() => refuseInField('hosts', 'web,10.0.0.9')).toThrow(/hosts: "web,10.0.0.9" holds a ","; it would add a field/);
    expect(refuseInField('hosts', 'web')).toBe('web');
  });
});

describe('the liblxc config', () => {
  test('a hostile value is refused, naming the key', () => {
    const err = thrownBy(() => lxcConfigText([['lxc.uts.name', 'c1'], ['lxc.environment', HOSTILE]]));
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(/^the liblxc config: "lxc.environment": "x\\nlxc.hook.pre-start = \/bin\/sh -c id" holds a newline/);
    expect(() => lxcConfigText([['lxc.environment', 'A=1\rlxc.hook.start = /x']])).toThrow(/carriage return/);
    expect(() => lxcConfigText([['lxc.environment', 'A=1\0']])).toThrow(/NUL/);
  });

  test('a hostile key is refused: a control character, a "=", a space, or not an lxc key', () => {
    expect(() => lxcConfigText([['lxc.a\nlxc.hook.pre-start', '/x']])).toThrow(/^the liblxc config: a key: .*newline/);
    expect(() => lxcConfigText([['lxc.hook.pre-start=/bin/sh', 'x']])).toThrow(/"lxc.hook.pre-start=\/bin\/sh" is not a liblxc key/);
    expect(() => lxcConfigText([['lxc.a b', 'x']])).toThrow(/is not a liblxc key/);
    expect(() => lxcConfigText([['hook', 'x']])).toThrow(/"hook" is not a liblxc key/);
  });

  test('ordinary items, a tab inside a value included, are written one per line', () => {
    expect(lxcConfigText([['lxc.uts.name', 'c1'], ['lxc.environment', 'A=x\ty']]).split('\n').slice(1)).toEqual(['lxc.uts.name = c1', 'lxc.environment = A=x\ty', '']);
  });

  describe('through a real container', () => {
    let t: TestHost;
    beforeAll(async () => {
      t = await tempHost();
    });
    afterAll(async () => {
      await t?.dispose();
    });

    // The options' own check refuses first now, with the guard's words; the writer's check stays behind it.
    test('an option value carrying a carriage return is refused at create; nothing is made', async () => {
      const name = t.name('env');
      const err = await t.host.create(name, { image: 'busybox', config: { 'environment.A': 'x\rlxc.hook.pre-start = /bin/sh -c id' } }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidArgument);
      expect(err.message).toMatch(/"(A=)?x\\rlxc.hook.pre-start = \/bin\/sh -c id" holds a carriage return \(U\+000D\)/);
      expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
    });

    test('a device path carrying one is refused naming the device and key; nothing is made', async () => {
      const name = t.name('dev');
      const err = await t.host.create(name, { image: 'busybox', devices: { d: { type: 'disk', source: scratch, path: '/mnt/a\rb' } } }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidArgument);
      expect(err.message).toMatch(/^device "d": bad value for "path": "\/mnt\/a\\rb" holds a carriage return/);
      expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
    });

    test('an update carrying one is refused and the config file stays as it was', async () => {
      const c = await t.host.create(t.name('upd'), { image: 'busybox', config: { 'environment.A': 'tab\there' } });
      const config = path.join(t.dir, 'instances', c.name, 'config');
      const before = execFileSync('cat', [config], { encoding: 'utf8' });
      const record = execFileSync('cat', [path.join(t.dir, 'instances', c.name, 'lxq.json')], { encoding: 'utf8' });
      expect(before).toContain('\nlxc.environment = A=tab\there\n');
      const err = await c.update({ 'environment.B': '1\rlxc.hook.pre-start = /bin/sh -c id' }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidArgument);
      expect(err.message).toMatch(/holds a carriage return \(U\+000D\)/);
      expect(execFileSync('cat', [config], { encoding: 'utf8' })).toBe(before);
      expect(c.config['environment.B']).toBeUndefined();
      expect(execFileSync('cat', [path.join(t.dir, 'instances', c.name, 'lxq.json')], { encoding: 'utf8' })).toBe(record);
      // The tab is harmless: liblxc reads the value with it.
      await c.start();
      expect((await c.exec(['sh', '-c', 'printf %s "$A"'])).stdout.toString()).toBe('tab\there');
    });
  });
});

describe('dnsmasq', () => {
  const settings = (over: Partial<DnsmasqSettings> = {}): DnsmasqSettings => ({
    dir: scratch,
    bridge: 'lxqtest0',
    cidr: '10.250.7.1/24',
    dhcp: true,
    ranges: [],
    domain: 'lxq',
    ...over,
  });

  test('the hosts file: a name, MAC or address carrying a newline or a "," is refused', () => {
    expect(() => hostsText([{ hwaddr: '00:16:3e:00:00:01', name: HOSTILE }])).toThrow(/^dnsmasq's hosts file: the entry of .*newline/);
    expect(() => hostsText([{ hwaddr: '00:16:3e:00:00:01', name: 'web,10.250.7.66' }])).toThrow(/holds a ","; it would add a field/);
    expect(() => hostsText([{ hwaddr: '00:16:3e:00:00:01\n00:16:3e:00:00:02', name: 'web' }])).toThrow(InvalidArgument);
    expect(() => hostsText([{ hwaddr: '00:16:3e:00:00:01', address: '10.250.7.9,set:x', name: 'web' }])).toThrow(InvalidArgument);
    expect(hostsText([{ hwaddr: '00:16:3e:00:00:01', address: '10.250.7.9', name: 'web' }, { hwaddr: '00:16:3e:00:00:02', name: 'db' }])).toBe(
      '00:16:3e:00:00:01,10.250.7.9,web\n00:16:3e:00:00:02,db\n',
    );
    expect(hostsText([])).toBe('');
  });

  test('the command line: a hostile domain or DHCP range is refused', () => {
    expect(() => dnsmasqArgs(settings({ domain: 'lxq\n--dhcp-script=/tmp/x' }))).toThrow(/^dnsmasq's configuration for "lxqtest0": domain: .*newline/);
    expect(() => dnsmasqArgs(settings({ domain: 'lxq/10.0.0.1' }))).toThrow(/is not a domain name/);
    expect(() => dnsmasqArgs(settings({ domain: 'a,b' }))).toThrow(/is not a domain name/);
    expect(() => dnsmasqArgs(settings({ ranges: ['10.250.7.2,set:evil-10.250.7.9'] }))).toThrow(/DHCP range: .* holds a ","/);
    expect(() => dnsmasqArgs(settings({ bridge: 'br\n0' }))).toThrow(/newline/);
  });

  test('good settings: dnsmasq itself finds the command line well-formed', () => {
    const args = dnsmasqArgs(settings({ ranges: ['10.250.7.10-10.250.7.20'], cidr6: 'fd42:1:2:3::1/64' }));
    expect(args).toContain('--dhcp-range=10.250.7.10,10.250.7.20,255.255.255.0,3600');
    const r = spawnSync('dnsmasq', [...args, '--test'], { encoding: 'utf8' });
    expect(r.stderr.trim()).toBe('dnsmasq: syntax check OK.');
    expect(r.status).toBe(0);
  });
});

describe('the nftables ruleset', () => {
  test('a bridge or subnet that would change the ruleset is refused', () => {
    expect(() => natRuleset('net1', 'br0" accept\n  }\n}\ntable ip evil {', '10.0.0.0/24', 'ip')).toThrow(/^the nftables ruleset of network "net1": bridge: .*newline/);
    expect(() => natRuleset('net1', 'br0" accept; #', '10.0.0.0/24', 'ip')).toThrow(/bridge: "br0\\" accept; #" is not an interface name/);
    expect(() => natRuleset('net1', 'br0', '10.0.0.0/24 masquerade; drop', 'ip')).toThrow(/subnet: .* is not an address and prefix/);
    expect(() => natRuleset('net1', 'br0', '10.0.0.0/24\n', 'ip')).toThrow(/newline/);
    expect(() => natRuleset('net1', 'br0', '10.0.0.0/24', 'inet; flush ruleset' as never)).toThrow(/family: expected "ip" or "ip6"/);
  });

  test.each([
    ['ip', '10.250.7.0/24'],
    ['ip6', 'fd42:1:2:3::/64'],
  ] as const)('a good %s ruleset: nft checks it (-c, nothing applied)', (family, subnet) => {
    const text = natRuleset('net1', 'lxqtest0', subnet, family);
    expect(text).toContain(`    iifname "lxqtest0" accept\n`);
    const r = spawnSync('nft', ['-c', '-f', '-'], { input: text, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('the QEMU command line', () => {
  const image = (over: Partial<VmImage> = {}): VmImage => ({ dir: scratch, kernel: '/k', initrd: '/i', disk: '/d.qcow2', kernelVersion: '6', cmdline: 'console=ttyS0', ...over });
  const opts = (dir: string) => ({
    disk: path.join(dir, 'disk.qcow2'),
    qmpSocket: path.join(dir, 'qmp.sock'),
    qgaSocket: path.join(dir, 'qga.sock'),
    serialLog: path.join(dir, 'console.log'),
    serialSocket: path.join(dir, 'console.sock'),
    memoryMiB: 256,
    cpus: 1,
    accel: 'tcg' as const,
  });

  test('a path carrying "," cannot add an option: every comma inside a value is doubled', () => {
    const dir = path.join(scratch, 'vm,if=none,file=/etc/shadow');
    const args = qemuArgsForImage(image(), opts(dir));
    const drive = args[args.indexOf('-drive') + 1];
    expect(drive).toBe(`file=${scratch}/vm,,if=none,,file=/etc/shadow/disk.qcow2,if=virtio,format=qcow2,discard=unmap`);
    const qmp = args[args.indexOf('-qmp') + 1];
    expect(qmp).toBe(`unix:${scratch}/vm,,if=none,,file=/etc/shadow/qmp.sock,server=on,wait=off`);
  });

  test('a control character anywhere is refused', () => {
    expect(() => qemuArgsForImage(image(), opts(path.join(scratch, 'vm\n-device')))).toThrow(/^the QEMU command line: -drive file: .*newline/);
    expect(() => qemuArgsForImage(image({ kernel: '/boot/k\r' }), opts(scratch))).toThrow(/^the QEMU command line: .*carriage return/);
    expect(() => qemuArgsForImage(image(), { ...opts(scratch), appendCmdline: 'lxq.hostname=a\0b' })).toThrow(/NUL/);
  });

  test('device option strings: values escaped, keys checked', () => {
    expect(optionString({ driver: 'virtio-blk-pci', id: 'dev-a', serial: 'a,drive=evil', bus: 'lxq-port0' }, 'driver')).toBe('virtio-blk-pci,id=dev-a,serial=a,,drive=evil,bus=lxq-port0');
    expect(() => optionString({ driver: 'virtio-blk-pci', serial: HOSTILE }, 'driver')).toThrow(/^the QEMU command line: virtio-blk-pci serial: .*newline/);
    expect(() => optionString({ driver: 'virtio-blk-pci', 'id=x,drive': 'y' }, 'driver')).toThrow(/is not an option key/);
  });

  test('launch arguments of a block disk in a directory carrying ",": JSON, one value', async () => {
    const dir = path.join(scratch, 'devs,x=y');
    const args = await launchArgs(dir, { data: { type: 'disk', source: path.join(dir, 'data.img') } }, new Map([['data', { kind: 'file' as const, format: 'raw' as const }]]), { mib: 256, hugepages: false });
    const blockdev = JSON.parse(args[args.indexOf('-blockdev') + 1]);
    expect(blockdev.file.filename).toBe(path.join(dir, 'data.img'));
    expect(args).toContain('virtio-blk-pci,id=dev-data,drive=lxq-data,serial=data,bus=lxq-port0');
  });

  test('QEMU itself reads an escaped path as one file name', () => {
    const dir = path.join(scratch, 'q,if=none');
    mkdirSync(dir, { recursive: true });
    const o = opts(dir);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', o.disk, '1M']);
    const args = qemuArgsForImage(image(), o);
    const drive = args[args.indexOf('-drive') + 1];
    const r = spawnSync('qemu-system-x86_64', ['-machine', 'q35,accel=tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-S', '-monitor', 'stdio', '-drive', drive], {
      input: 'info block\nquit\n',
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`: ${o.disk} (qcow2)`);
  });
});
