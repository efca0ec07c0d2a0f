/** What the host tells the VM driver (lib/host/host.ts makes it). */
import type { Networks } from '../../network/networks';
import type { PoolDriver } from '../../storage/pools/types';
import type { VolumeResolver } from '../../storage/volumes/types';

export interface VmContext {
  /** The host's state directory (where the accelerator verdict is kept). */
  hostDir: string;
  networks: Networks;
  /** The driver of a storage pool by name (none: the dir pool, where VMs made before pools are); without it, on dir. */
  pools?: (pool: string | undefined) => Promise<PoolDriver>;
  /** Custom volumes named by disks (`pool` + `source`): a filesystem one shared with virtiofs, a block one a disk. */
  volumes?: VolumeResolver;
}
