/**
 * qemu-ga shared between processes (qga-broker.ts): in a VM whose image has no lxq agent, every
 * exec goes through qemu-ga, whose port QEMU serves to one client at a time. While this process's
 * command holds it, another process (the lxq CLI) execs through the holder's qga-mux.sock, and a
 * QgaClient of this process's own speaks qemu-ga's protocol there: sync, commands, errors, bad
 * lines. One vm/default boot.
 */
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { Host, type VirtualMachine } from '../lib';
import { QgaClient, QmpCommandError } from '../lib/qmp';
import { lxqArgv, runNode, SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

jest.setTimeout(300_000);

let t: TestHost;
let vm: VirtualMachine;

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
  // vm/default with a record that says its image has no lxq agent: lxq then uses qemu-ga for
  // everything, as for such an image (the guest's qemu-ga serves either way). Made by another
  // Host object so that t.host reads the edited record.
  const maker = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  const name = t.name('qgas');
  await maker.create(name, { type: 'vm', image: 'vm/default', config: { 'limits.memory': '256MiB' } });
  await maker.close();
  const file = path.join(t.host.instancesDir, name, 'lxq.json');
  const record = JSON.parse(await fs.readFile(file, 'utf8'));
  delete record.imageMeta.lxqAgentPortName;
  await fs.writeFile(file, JSON.stringify(record));
  vm = (await t.host.get(name)) as VirtualMachine;
  await vm.start();
  await vm.wait({ for: 'agent', timeout: 180_000 });
}, 600_000);

afterAll(async () => {
  await t?.dispose();
}, 120_000);

test("the lxq CLI execs in the VM through qemu-ga while this process's command holds qemu-ga's port", async () => {
  expect((await vm.state()).agent).toBe('qemu-ga');
  // Ends only once /tmp/go exists: the port stays this process's until then (guest-exec-status polls).
  const held = await vm.spawn(['/bin/sh', '-c', 'while [ ! -e /tmp/go ]; do sleep 0.1; done; echo released']);
  let exited = false;
  void held.exit.then(() => (exited = true));
  const mux = path.join(t.host.instancesDir, vm.name, 'qga-mux.sock');
  expect((await fs.stat(mux)).isSocket()).toBe(true);
  const r = await runNode([...lxqArgv(t.dir), 'exec', vm.name, '--', '/bin/sh', '-c', 'hostname; test -e /tmp/go || echo waiting']);
  expect([r.code, r.stdout, r.stderr]).toEqual([0, `${vm.name}\nwaiting\n`, '']);
  expect(exited).toBe(false);
  await vm.exec(['touch', '/tmp/go']);
  expect(await held.exit).toEqual({ exitCode: 0, signal: null });
});

test("a QgaClient on qga-mux.sock: synced, answered in order beside the holder's commands, errors as qemu-ga's; a bad line is answered, an oversized one ends only that peer", async () => {
  const held = await vm.spawn(['/bin/sh', '-c', 'while [ ! -e /tmp/go2 ]; do sleep 0.1; done']);
  const mux = path.join(t.host.instancesDir, vm.name, 'qga-mux.sock');
  const peer = await QgaClient.connect(mux, { timeout: 30_000 });
  try {
    await peer.ping();
    const [info, host] = await Promise.all([peer.execute<{ version: string }>('guest-info'), peer.execute<{ 'host-name': string }>('guest-get-host-name')]);
    expect(info.version).toMatch(/^\d+\./);
    expect(host['host-name']).toBe(vm.name);
    const e = await peer.execute('guest-no-such-command').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpCommandError);
    expect((e as QmpCommandError).errorClass).toBe('CommandNotFound');
    await peer.sync();

    // Raw lines: not JSON gets qemu-ga's error and the connection goes on; a line longer than
    // the broker takes ends that connection, not the holder's.
    const raw = net.createConnection({ path: mux });
    const got: Buffer[] = [];
    raw.on('data', (d) => got.push(d));
    raw.on('error', () => undefined); // EPIPE once the broker ended it
    const closed = new Promise((r) => raw.on('close', r));
    raw.write('this is not json\n{"execute":"guest-ping"}\n');
    const deadline = Date.now() + 30_000;
    while (Buffer.concat(got).toString().split('\n').length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const lines = Buffer.concat(got).toString().trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual([{ error: { class: 'GenericError', desc: expect.any(String) } }, { return: {} }]);
    const chunk = Buffer.alloc(1024 * 1024, 'a');
    for (let i = 0; i < 65 && !raw.destroyed; i++) raw.write(chunk);
    await closed;

    await peer.ping();
    await vm.exec(['touch', '/tmp/go2']);
    expect(await held.exit).toEqual({ exitCode: 0, signal: null });
  } finally {
    await peer.close();
  }
});
