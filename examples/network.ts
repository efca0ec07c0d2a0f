/**
 * Networking: two containers and a VM on one lxq bridge; one container serves HTTP (busybox
 * httpd), the other container and the VM fetch from it by DNS name, and the host fetches from
 * the address the network gave it. Run as root: `node dist/examples/network.js`.
 */
import * as http from 'node:http';

import { Host } from '../lib';

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

async function main(): Promise<void> {
  // LXQ_HOST / LXQ_IMAGES: another state directory and image store (the test suite's).
  const host = await Host.open({ path: process.env.LXQ_HOST, images: process.env.LXQ_IMAGES });
  const tag = process.pid.toString(36);
  const net = await host.networks.create(`lxqex${tag}`.slice(0, 15), { 'ipv4.nat': 'false' }); // a free /24 of its own
  const nic = { eth0: { type: 'nic' as const, network: net.name } };
  const web = await host.create(`web-${tag}`, { image: 'busybox', devices: nic });
  const client = await host.create(`client-${tag}`, { image: 'busybox', devices: nic });
  const vm = await host.create(`vm-${tag}`, { type: 'vm', image: 'vm/default', devices: nic });
  try {
    await Promise.all([web.start(), client.start(), vm.start()]);
    const [webAddress] = await Promise.all([web.waitForAddress(), client.waitForAddress(), vm.waitForAddress({ timeout: 120_000 })]);
    console.log(`network ${net.name}: ${net.cidr}; ${web.name} has ${webAddress}`);
    await web.exec(['sh', '-c', 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && httpd -p 80 -h /www']);
    for (const i of [client, vm]) {
      const r = await i.exec(['wget', '-qO-', `http://${web.name}.${net.domain}/`], { timeout: 60_000 });
      console.log(`${i.type} ${i.name} fetched: ${r.stdout.toString().trim()}`);
    }
    console.log(`host fetched: ${(await get(`http://${webAddress}/`)).trim()}`);
    console.log('leases:', (await net.leases()).map((l) => `${l.hostname}=${l.address}`).sort().join(' '));
  } finally {
    for (const i of [web, client, vm]) await i.delete({ force: true });
    await host.networks.delete(net.name);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
