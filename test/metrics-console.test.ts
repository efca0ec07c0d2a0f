/**
 * Following console logs and reading usage, on a real busybox container and a real vm/default VM
 * (booted once): `console.follow()` sees lines written after the call and after a restart and
 * ends on abort; the VM's log is stamped for `console.log({ since })`; `host.metrics()` / `lxq metrics` is well-formed OpenMetrics with LXD's names;
 * `stats()` yields samples until aborted.
 */
import { spawnSync } from 'node:child_process';
import { promises as fs, readlinkSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { InvalidArgument } from '../lib/core/errors';
import type { Instance, InstanceStats } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import { stamped } from './helpers/console-times';
import { lxqArgv, tempHost, type TestHost } from './helpers/host';
import { screenShows, tmux } from './helpers/tmux';

let CLI: string[];
let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  CLI = lxqArgv(t.dir);
  await t.host.images.ensure('busybox');
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
});

function lxq(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Reads a follow in the background: `lines` so far, `until` waits for a line matching. */
function follower(i: Instance, tail = 0) {
  const ac = new AbortController();
  const lines: string[] = [];
  const done = (async () => {
    for await (const line of i.console.follow({ tail, signal: ac.signal, interval: 100 })) lines.push(line);
  })();
  return {
    lines,
    done,
    abort: () => ac.abort(),
    until: async (re: RegExp, ms = 60_000) => {
      const end = Date.now() + ms;
      while (!lines.some((l) => re.test(l))) {
        if (Date.now() > end) throw new Error(`no line matching ${re} within ${ms} ms; got ${JSON.stringify(lines.slice(-10))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** This process's open files (to see that a follow left none open). */
function openFiles(): string[] {
  return readdirSync('/proc/self/fd').map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return '';
    }
  });
}

interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * A small OpenMetrics text parser (https://openmetrics.io): every line a HELP, TYPE, or sample
 * of a family declared before it, a counter's samples named `<family>_total`, families not
 * interleaved, `# EOF` last. Throws on anything else.
 */
function parseOpenMetrics(text: string): { types: Map<string, string>; samples: ParsedSample[] } {
  expect(text.endsWith('# EOF\n')).toBe(true);
  const lines = text.slice(0, -1).split('\n');
  expect(lines.pop()).toBe('# EOF');
  const types = new Map<string, string>();
  const samples: ParsedSample[] = [];
  const done = new Set<string>();
  let current: string | undefined;
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  for (const line of lines) {
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line))) {
      const [, kind, family, rest] = m;
      if (family !== current) {
        if (done.has(family)) throw new Error(`family ${family} interleaved: ${line}`);
        if (current) done.add(current);
        current = family;
      }
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'unknown', 'info', 'stateset', 'histogram', 'gaugehistogram', 'summary'].includes(rest)) throw new Error(`bad type: ${line}`);
        if (types.has(family)) throw new Error(`second TYPE for ${family}`);
        types.set(family, rest);
      }
      continue;
    }
    m = new RegExp(`^(${NAME})(?:\\{((?:${NAME}="(?:[^"\\\\\\n]|\\\\[\\\\"n])*")(?:,${NAME}="(?:[^"\\\\\\n]|\\\\[\\\\"n])*")*)?\\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$`).exec(line);
    if (!m) throw new Error(`not a sample: ${JSON.stringify(line)}`);
    const [, name, labelText, value] = m;
    const type = current && types.get(current);
    if (!current || !type) throw new Error(`sample without a TYPE before it: ${line}`);
    if (type === 'counter' ? name !== `${current}_total` : name !== current) throw new Error(`sample ${name} is not of family ${current} (${type})`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (labelText ?? '').matchAll(new RegExp(`(${NAME})="((?:[^"\\\\]|\\\\.)*)"`, 'g'))) labels[k] = v.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    if (type === 'counter' && Number(value) < 0) throw new Error(`negative counter: ${line}`);
    samples.push({ name, labels, value: Number(value) });
  }
  return { types, samples };
}

/** The samples of `metric` for instance `name`. */
function of(p: ReturnType<typeof parseOpenMetrics>, metric: string, name: string): ParsedSample[] {
  return p.samples.filter((s) => s.name === metric && s.labels.name === name);
}
const sum = (s: ParsedSample[]) => s.reduce((a, x) => a + x.value, 0);

test('the OpenMetrics parser of this file refuses what is malformed', () => {
  expect(() => parseOpenMetrics('x 1\n# EOF\n')).toThrow(/without a TYPE/);
  expect(() => parseOpenMetrics('# TYPE x counter\nx 1\n# EOF\n')).toThrow(/not of family/);
  expect(() => parseOpenMetrics('# TYPE x gauge\nx{a="1} 1\n# EOF\n')).toThrow(/not a sample/);
  expect(() => parseOpenMetrics('# TYPE x gauge\nx 1\n')).toThrow();
  expect(parseOpenMetrics('# TYPE x counter\nx_total{a="b\\"c"} 1\n# EOF\n').samples).toEqual([{ name: 'x_total', labels: { a: 'b"c' }, value: 1 }]);
});

test('container: follow sees new lines, through a restart, and ends on abort with nothing left open; tail; bad options', async () => {
  const c = await t.host.create(t.name('follow'), { image: 'busybox' });
  await c.start();
  expect(() => c.console.follow({ tail: -1 })).toThrow(InvalidArgument);
  expect(() => c.console.follow({ bogus: 1 } as never)).toThrow(InvalidArgument);
  expect(() => c.console.follow({ interval: 0 })).toThrow(InvalidArgument);

  const f = follower(c);
  await c.exec(['/bin/sh', '-c', 'printf "\\nfollow-before-restart\\n" >/dev/console']);
  await f.until(/^follow-before-restart$/);
  await c.restart({ force: true });
  await c.exec(['/bin/sh', '-c', 'printf "\\nfollow-after-restart\\n" >/dev/console']);
  await f.until(/^follow-after-restart$/);
  f.abort();
  await f.done; // the iteration ends, without an error
  expect(openFiles().filter((p) => p.endsWith(c.console.path))).toEqual([]);

  // tail: the last lines already written, then what comes.
  await c.exec(['/bin/sh', '-c', 'printf "\\ntail-1\\ntail-2\\n" >/dev/console']);
  // The console's monitor writes the log after the command has ended: the tail is taken once it has.
  await stamped(c.console.path, 'tail-2');
  const g = follower(c, 2);
  await g.until(/^tail-2$/);
  expect(g.lines.slice(0, 2)).toEqual(['tail-1', 'tail-2']);
  g.abort();
  await g.done;

  // The command line: the last line, then a follow in a real terminal ended by Ctrl-C.
  expect(lxq('console', c.name, '--show-log', '--tail', '1')).toMatchObject({ status: 0, stdout: expect.stringMatching(/^tail-2\r?\n$/) }); // as written (a tty's \r\n)
  expect(lxq('console', c.name, '--tail', '1')).toMatchObject({ status: 1, stderr: expect.stringMatching(/--follow, --tail and --since go with --show-log/) });
  expect(lxq('console', c.name, '--show-log', '--tail', 'x')).toMatchObject({ status: 1 });
  const session = `lxq-follow-${process.pid}`;
  const rc = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-follow-')), 'rc');
  try {
    // bash, not sh: Ctrl-C reaches the whole foreground group, and dash dies of it before it can
    // write the status; bash waits to see whether the command handled it.
    await tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', `bash -c '${[process.execPath, ...CLI].join(' ')} console ${c.name} --show-log -f --tail 1; echo rc=$? > ${rc}; sleep 60'`);
    await screenShows(session, /^tail-2$/m, 60_000);
    await c.exec(['/bin/sh', '-c', 'printf "\\nfrom-the-terminal\\n" >/dev/console']);
    await screenShows(session, /^from-the-terminal$/m, 60_000);
    await tmux('send-keys', '-t', session, 'C-c');
    const end = Date.now() + 60_000;
    while (!(await fs.readFile(rc, 'utf8').catch(() => ''))) {
      if (Date.now() > end) throw new Error('lxq console -f did not end on Ctrl-C');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await fs.readFile(rc, 'utf8')).toBe('rc=0\n');
  } finally {
    await tmux('kill-session', '-t', session).catch(() => undefined);
    await fs.rm(path.dirname(rc), { recursive: true, force: true });
  }
  await c.delete({ force: true });
}, 300_000);

test('container: metrics show its memory and a CPU counter that grows with a busy loop; stats yields samples until aborted', async () => {
  const c = await t.host.create(t.name('metrics'), { image: 'busybox' });
  const stopped = await t.host.create(t.name('stopped'), { image: 'busybox' });
  await c.start();
  const first = parseOpenMetrics(await t.host.metrics());
  expect(first.types.get('lxd_cpu_seconds')).toBe('counter');
  expect(first.types.get('lxd_procs_total')).toBe('gauge');
  expect(first.samples.filter((s) => s.labels.name === stopped.name)).toEqual([]); // only running instances
  expect(sum(of(first, 'lxd_memory_RSS_bytes', c.name))).toBeGreaterThan(0);
  expect(of(first, 'lxd_procs_total', c.name)[0]).toMatchObject({ labels: { name: c.name, project: 'default', type: 'container' } });
  expect(of(first, 'lxd_procs_total', c.name)[0].value).toBeGreaterThan(0);
  expect(of(first, 'lxd_network_receive_bytes_total', c.name).map((s) => s.labels.device)).toContain('lo');
  const cpuBefore = sum(of(first, 'lxd_cpu_seconds_total', c.name));
  for (const s of of(first, 'lxd_cpu_seconds_total', c.name)) expect(['user', 'system']).toContain(s.labels.mode);

  await c.exec(['/bin/sh', '-c', 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done']);
  // The command line prints the same text.
  const cli = lxq('metrics');
  expect(cli.status).toBe(0);
  const after = parseOpenMetrics(cli.stdout);
  expect(sum(of(after, 'lxd_cpu_seconds_total', c.name))).toBeGreaterThan(cpuBefore);

  const ac = new AbortController();
  const samples: InstanceStats[] = [];
  for await (const s of c.stats({ interval: 200, signal: ac.signal })) {
    samples.push(s);
    if (samples.length === 2) ac.abort();
    expect(samples.length).toBeLessThanOrEqual(2); // nothing after the abort
  }
  expect(samples).toHaveLength(2);
  expect(samples[0].cpu.percent).toBeNull();
  expect(samples[1].cpu.percent).toBeGreaterThanOrEqual(0);
  expect(samples[1].cpu.usageNs).toBeGreaterThanOrEqual(samples[0].cpu.usageNs);
  expect(samples[1].memory.usageBytes).toBeGreaterThan(0);
  expect(samples[1].processes).toBeGreaterThan(0);
  expect(samples[1].network.lo.receivedBytes.perSecond).toBeGreaterThanOrEqual(0);
  expect(() => c.stats({ interval: 0 })).toThrow(InvalidArgument);
  expect(() => c.stats({ every: 1 } as never)).toThrow(InvalidArgument);
  await c.delete({ force: true });
  await stopped.delete();
}, 300_000);

test('vm: follow sees its boot and a line written on its serial port; metrics show its vCPUs, memory and root disk', async () => {
  const vm = await t.host.create(t.name('vmfollow'), { type: 'vm', image: 'vm/default' });
  const f = follower(vm); // before the first start: no log yet
  await vm.start();
  await f.until(/\S/, 120_000); // the boot's first lines
  await (vm as VmInstance).waitForAgent(180_000);
  await vm.exec(['/bin/sh', '-c', 'printf "\\nvm-follow-line\\n" >/dev/ttyS0']);
  await f.until(/^vm-follow-line$/);
  f.abort();
  await f.done;
  // since: QEMU's serial log is stamped as a container's console log is.
  await stamped(vm.console.path, 'vm-follow-line');
  const since = new Date();
  while (Date.now() <= since.getTime()) await new Promise((r) => setTimeout(r, 1));
  await vm.exec(['/bin/sh', '-c', 'printf "\\nvm-since-line\\n" >/dev/ttyS0']);
  await stamped(vm.console.path, 'vm-since-line');
  const recent = await vm.console.log({ since });
  expect(recent).toMatch(/vm-since-line/);
  expect(recent).not.toMatch(/vm-follow-line/);

  const p = parseOpenMetrics(await t.host.metrics());
  const cpu = of(p, 'lxd_cpu_seconds_total', vm.name);
  expect(cpu.length).toBeGreaterThan(0);
  expect(cpu[0].labels).toMatchObject({ name: vm.name, project: 'default', type: 'virtual-machine' });
  expect(sum(cpu)).toBeGreaterThan(0);
  // vm/default has lxq's agent: the guest's own memory and process count.
  expect(of(p, 'lxd_memory_MemTotal_bytes', vm.name)[0].value).toBeGreaterThan(0);
  expect(of(p, 'lxd_memory_MemAvailable_bytes', vm.name)[0].value).toBeGreaterThan(0);
  expect(of(p, 'lxd_procs_total', vm.name)[0].value).toBeGreaterThan(0);
  expect(of(p, 'lxd_disk_read_bytes_total', vm.name).find((s) => s.labels.device === 'root')?.value).toBeGreaterThan(0);
  // security.agent.metrics=false: QEMU's figures only, the guest is not asked.
  await vm.update({ 'security.agent.metrics': 'false' });
  const hostSide = parseOpenMetrics(await t.host.metrics());
  expect(sum(of(hostSide, 'lxd_cpu_seconds_total', vm.name))).toBeGreaterThan(0);
  expect(of(hostSide, 'lxd_memory_MemAvailable_bytes', vm.name)).toEqual([]);
  expect(of(hostSide, 'lxd_procs_total', vm.name)).toEqual([]);
  await vm.update({ 'security.agent.metrics': 'true' });

  const samples: InstanceStats[] = [];
  const ac = new AbortController();
  for await (const s of vm.stats({ interval: 200, signal: ac.signal })) if (samples.push(s) === 2) ac.abort();
  expect(samples[1].cpu.percent).toBeGreaterThanOrEqual(0);
  expect(samples[1].disk.root.readBytes.total).toBeGreaterThan(0);
  await vm.delete({ force: true });
}, 600_000);
