/**
 * cloud-init.* options on a VM of `debian/12/cloud`: the NoCloud seed given as a read-only FAT
 * disk labelled cidata (QEMU's vvfat over the VM's cloud-seed/ directory), read by the guest's
 * cloud-init at its first boot: a runcmd, a user from user-data, an ssh key from
 * cloud-init.ssh-keys.*. One VM, booted once (cloud-init's four stages under TCG take most of
 * the boot). The container side, the seed's renewal and bad input are in test/cloud-init.test.ts.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { sh, tempHost, type TestHost } from './helpers/host';

const IMAGE = 'debian/12/cloud';
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0cS10ZXN0LWtleS1ub3QtcmVhbC0wMDAwMDAwMDAw lxq-test';

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  // Cached in the shared store after the first build (the container variant's tree, then the disk).
  await t.host.images.ensure(IMAGE, { type: 'vm' });
}, 1_800_000);
afterAll(async () => t?.dispose());

test('a VM reads the seed from its cidata disk: runcmd, a user from user-data, an ssh key', async () => {
  const userData = ['#cloud-config', 'users:', '  - name: alice', '    shell: /bin/sh', 'runcmd:', `  - [sh, -c, 'echo "$(hostname)" > /var/tmp/runcmd']`, ''].join('\n');
  const vm = await t.host.create(t.name('civm'), {
    image: IMAGE,
    type: 'vm',
    config: { 'limits.memory': '512MiB', 'cloud-init.user-data': userData, 'cloud-init.ssh-keys.main': `alice:${KEY}` },
  });
  try {
    const t0 = Date.now();
    await vm.start({ wait: { for: 'systemd', timeout: 900_000 } });
    console.log(`debian/12/cloud VM with a seed: started and booted (systemd) in ${Date.now() - t0} ms`);
    expect(await sh(vm, 'cat /var/tmp/runcmd; id -un alice; cat /home/alice/.ssh/authorized_keys')).toMatchObject({ code: 0, out: `${vm.name}\nalice\n${KEY}\n` });
    expect(await sh(vm, 'cloud-init status; blkid -s LABEL -o value -t LABEL=cidata')).toMatchObject({ code: 0, out: 'status: done\ncidata\n' });
    console.log((await sh(vm, 'systemd-analyze blame | head -6')).out);
    expect(existsSync(path.join(t.dir, 'instances', vm.name, 'cloud-seed', 'user-data'))).toBe(true);
  } finally {
    await vm.delete({ force: true });
  }
}, 1_800_000);
