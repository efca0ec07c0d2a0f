/**
 * The modules Host uses for some operations only, each loaded on first use: the VM driver (QEMU,
 * QMP, the guest agent) by a host of VMs, the rest by create, copy, import and metrics. A command that
 * finds and drives instances (`lxq list`, `lxq exec`) loads none of them: start-up is most of its
 * time (BENCHMARKS.md, CLI start-up).
 */
/* eslint-disable @typescript-eslint/no-require-imports -- loaded on first use (see above) */
export const vmDriver = (): typeof import('../drivers/vm/vm') => require('../drivers/vm/vm');
export const configOptions = (): typeof import('../config/options') => require('../config/options');
export const nic = (): typeof import('../devices/nic') => require('../devices/nic');
export const validate = (): typeof import('../devices/validate') => require('../devices/validate');
export const idmapAlloc = (): typeof import('../drivers/container/idmap-alloc') => require('../drivers/container/idmap-alloc');
export const archive = (): typeof import('../storage/archive') => require('../storage/archive');
export const move = (): typeof import('../storage/move') => require('../storage/move');
export const foreign = (): typeof import('../instance/foreign') => require('../instance/foreign');
export const meta = (): typeof import('../images/meta') => require('../images/meta');
export const openmetrics = (): typeof import('../instance/openmetrics') => require('../instance/openmetrics');
export const autostarter = (): typeof import('./autostart') => require('./autostart');
export const snapshotScheduler = (): typeof import('./scheduler') => require('./scheduler');
/* eslint-enable @typescript-eslint/no-require-imports */
