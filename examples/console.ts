/**
 * The console: what a container's init prints, and its console shell driven from a program
 * (what `lxq console NAME` does for a person). A VM's serial port works the same way.
 * Run as root: `node dist/examples/console.js`.
 */
import { Host } from '../lib';

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_HOST, ...(process.env.LXQ_IMAGES ? { images: process.env.LXQ_IMAGES } : {}) });
  const c = await host.create(`console-${process.pid}`, { image: 'busybox' });
  try {
    await c.start();
    const stream = await c.console.attach();
    let screen = '';
    stream.on('data', (d: Buffer) => (screen += d.toString()));
    const waitFor = async (text: string) => {
      while (!screen.includes(text)) await new Promise((r) => setTimeout(r, 50));
    };
    stream.write('\n'); // Enter starts the console's shell
    await waitFor('/ # ');
    stream.write('echo "$((6 * 7)) from $(tty)"\n');
    await waitFor('42 from /dev/console');
    console.log('the console shell answered: 42 from /dev/console');
    stream.destroy(); // detach; the container keeps running
    console.log(`boot output kept in ${c.console.path}:`);
    console.log((await c.console.log()).split('\n').filter((l) => l.includes('lxq busybox')).map((l) => l.trimEnd()).join('\n'));
  } finally {
    await c.delete({ force: true });
    await host.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
