/**
 * What the host tells the container driver (where containers live, what this machine is like,
 * its pools and volumes), and what any process can ask liblxc of a container by name alone.
 */
import type { Networks } from '../../network/networks';
import type { ContainerImageMeta } from '../../images/meta';
import type { PoolDriver } from '../../storage/pools/types';
import type { VolumeResolver } from '../../storage/volumes/types';
import { apparmorEnabled, type CgroupLayout, detectCgroupLayout, detectIdMap, type IdMap } from './host-facts';
import { lxc } from '../../native/lxc';

/** What the host tells the container driver: where containers live and what this machine is like. */
export interface ContainerContext {
  lxcpath: string;
  networks: Networks;
  layout: CgroupLayout;
  apparmor: boolean;
  /** Read on first need: privileged-only programs work without /etc/subuid. */
  idmap(): IdMap;
  /** The driver of a storage pool by name (none: the dir pool of containers made before pools); without it, every container is on dir. */
  pools?: (pool: string | undefined) => Promise<PoolDriver>;
  /** Custom volumes named by disk devices (`pool` + `source`); without it, such devices are refused. */
  volumes?: VolumeResolver;
}

/** `networks` is read on first need: finding a container's status or running a command never loads lib/network. */
export function containerContext(lxcpath: string, networks: () => Networks, pools?: (pool: string | undefined) => Promise<PoolDriver>, volumes?: VolumeResolver): ContainerContext {
  let idmap: IdMap | undefined;
  return {
    lxcpath,
    get networks() {
      return networks();
    },
    layout: detectCgroupLayout(),
    apparmor: apparmorEnabled(),
    idmap: () => (idmap ??= detectIdMap()),
    ...(pools ? { pools } : {}),
    ...(volumes ? { volumes } : {}),
  };
}

/** A container's init pid, read through liblxc's command socket the way any process can (for host-wide events). */
export async function containerMainPid(lxcpath: string, name: string): Promise<number | null> {
  const h = new (lxc().Container)(name, lxcpath);
  try {
    const pid = await h.initPid();
    return pid > 0 ? pid : null;
  } finally {
    h.release();
  }
}

/** An image as a container's create takes it: its name, root filesystem and metadata. */
export interface ContainerImage {
  name: string;
  rootfs: string;
  meta: ContainerImageMeta;
}
