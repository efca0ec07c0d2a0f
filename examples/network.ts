/**
 * Networking: two containers and a VM on one lxq bridge; one container serves HTTP (busybox
 * httpd), the other container and the VM fetch from it by DNS name, and the host fetches from
 * the addresses the network gave it (IPv4 by DHCP, IPv6 by SLAAC) and through a proxy device on
 * one of its own loopback ports.
 * Run as root: `node dist/examples/network.js`.
 */
import * as http from 'node:http';
import * as net from 'node:net';

import { Host } from '../lib';

/** A loopback port of the host that nothing listens on now. */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

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
  const network = await host.networks.create(`lxqex${tag}`.slice(0, 15), { 'ipv4.nat': 'false', 'ipv6.address': 'auto' }); // a free /24 and a ULA /64 of its own
  const nic = { eth0: { type: 'nic' as const, network: network.name } };
  const web = await host.create(`web-${tag}`, { image: 'busybox', devices: nic });
  const client = await host.create(`client-${tag}`, { image: 'busybox', devices: nic });
  const vm = await host.create(`vm-${tag}`, { type: 'vm', image: 'vm/default', devices: nic });
  try {
    await Promise.all([web.start(), client.start(), vm.start()]);
    const [webAddress] = await Promise.all([web.waitForAddress(), client.waitForAddress(), vm.waitForAddress({ timeout: 120_000 })]);
    console.log(`network ${network.name}: ${network.cidr}; ${web.name} has ${webAddress}`);
    await web.exec(['sh', '-c', 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && httpd -p 80 -h /www']);
    for (const i of [client, vm]) {
      const r = await i.exec(['wget', '-qO-', `http://${web.name}.${network.domain}/`], { timeout: 60_000 });
      console.log(`${i.type} ${i.name} fetched: ${r.stdout.toString().trim()}`);
    }
    console.log(`host fetched: ${(await get(`http://${webAddress}/`)).trim()}`);
    const webAddress6 = await web.waitForAddress({ family: 'inet6' });
    console.log(`host fetched over IPv6 [${webAddress6}]: ${(await get(`http://[${webAddress6}]/`)).trim()}`);
    // A proxy device: a port on the host's loopback forwarded to the server's port 80.
    const port = await freePort();
    await web.addDevice('http', { type: 'proxy', listen: `tcp:127.0.0.1:${port}`, connect: 'tcp:127.0.0.1:80' });
    console.log(`host fetched through 127.0.0.1:${port}: ${(await get(`http://127.0.0.1:${port}/`)).trim()}`);
    console.log('leases:', (await network.leases()).map((l) => `${l.hostname}=${l.address}`).sort().join(' '));
  } finally {
    for (const i of [web, client, vm]) await i.delete({ force: true });
    await host.networks.delete(network.name);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
