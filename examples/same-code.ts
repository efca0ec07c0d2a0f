/**
 * One program, two instance types: the same code runs a command and moves a file in a busybox
 * container and in a vm/default VM (QEMU, TCG when KVM does not really work). Run as root:
 * `node dist/examples/same-code.js`.
 */
import { Host, Instance, InstanceType } from '../lib';

async function tryOut(host: Host, type: InstanceType): Promise<void> {
  const name = `same-${type}-${process.pid}`;
  const instance: Instance = await host.create(name, {
    type,
    image: type === 'vm' ? 'vm/default' : 'busybox',
    config: { 'limits.memory': '256MiB', 'environment.GREETING': `hello from a ${type}` },
  });
  try {
    const t0 = performance.now();
    await instance.start();
    // In a VM, exec and files go through the QEMU guest agent; they wait for it to answer.
    const r = await instance.exec(['sh', '-c', 'echo "$GREETING: $(uname -sr)"'], { timeout: 60_000 });
    console.log(`${type}: ${r.stdout.toString().trim()}  (answered ${((performance.now() - t0) / 1000).toFixed(1)} s after start)`);
    await instance.files.write('/tmp/note.txt', `written by lxq into a ${type}\n`);
    console.log(`${type}: read back "${(await instance.files.read('/tmp/note.txt')).toString().trim()}"`);
    const s = await instance.state();
    console.log(`${type}: ${s.status}, pid ${s.pid}, ${s.memory.usageBytes === null ? 'memory unknown' : `${(s.memory.usageBytes / 2 ** 20).toFixed(1)} MiB`}`);
    await instance.stop({ timeout: 15_000 });
  } finally {
    await instance.delete({ force: true });
  }
}

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_PATH });
  for (const type of ['container', 'vm'] as const) await tryOut(host, type);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
