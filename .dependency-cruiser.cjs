/**
 * The house rules (README, "Layout"), checked by `npm run lint`:
 * cli → host → drivers/{container, vm, remote} → instance (the contract and the common base) →
 * neutral rooms (devices, storage, network, images, events, config) → qmp, native → core. lib/native/ is the addon's
 * typed surface in two layers: sys.ts (no liblxc, anyone may use it) and lxc.ts (liblxc, loaded
 * on first use; only what genuinely needs liblxc imports it, so that VMs and remote hosts never map it).
 * Violations that predate a rule are listed in .dependency-cruiser-known-violations.json; the
 * house work removes them, and nothing new may join them (`depcruise-baseline` rewrites that
 * list only when one is fixed).
 */
const DRIVERS = ['container', 'vm', 'remote'];
const NEUTRAL = '^lib/(devices|storage|network|images|events|config|core|qmp)/';
/** What may import lib/native/lxc.ts: the container driver alone. */
const LIBLXC_USERS = '^lib/(drivers/container/|native/)';

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A cycle makes the load order (and what a layer may know) depend on who imports first; a cycle of type-only imports has no load order and is allowed.',
      from: { path: '^lib/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    ...DRIVERS.map((driver) => ({
      name: `driver-${driver}-alone`,
      severity: 'error',
      comment: 'Drivers never import each other: what two of them share belongs to instance/ or a neutral room.',
      from: { path: `^lib/drivers/${driver}/` },
      to: { path: `^lib/drivers/(${DRIVERS.filter((d) => d !== driver).join('|')})/` },
    })),
    {
      name: 'neutral-knows-no-driver',
      severity: 'error',
      comment: 'Devices, storage, network, images, events, config and core never import a driver, the host or the CLI: drivers apply what they describe.',
      from: { path: NEUTRAL },
      to: { path: '^lib/((drivers|host|cli)/|index\\.ts$)' },
    },
    {
      name: 'instance-knows-no-driver',
      severity: 'error',
      comment: 'The contract and the common base are what drivers build on: they never import a driver, the host or the CLI.',
      from: { path: '^lib/instance/' },
      to: { path: '^lib/((drivers|host|cli)/|index\\.ts$)' },
    },
    {
      name: 'driver-knows-no-host',
      severity: 'error',
      comment: 'A driver is used by the host, never the other way.',
      from: { path: '^lib/drivers/' },
      to: { path: '^lib/((host|cli)/|index\\.ts$)' },
    },
    {
      name: 'core-is-the-floor',
      severity: 'error',
      comment: 'lib/core (errors, units, helper processes, files, staging, locks, the serial queue) imports nothing of lxq but itself and the system-call layer.',
      from: { path: '^lib/core/' },
      to: { path: '^lib/', pathNot: '^lib/(core/|native/sys\\.ts$)' },
    },
    {
      name: 'qmp-knows-nothing-of-lxq',
      severity: 'error',
      comment: 'lib/qmp is a QMP and guest-agent client of its own (exported as lxq/qmp).',
      from: { path: '^lib/qmp/' },
      to: { path: '^lib/', pathNot: '^lib/qmp/' },
    },
    {
      name: 'native-knows-nothing-of-lxq',
      severity: 'error',
      comment: 'lib/native is the addon and its types: it imports nothing of lxq but lib/core/errors.ts.',
      from: { path: '^lib/native/' },
      to: { path: '^lib/', pathNot: '^lib/(native/|core/errors\\.ts$)' },
    },
    {
      name: 'liblxc-only-where-needed',
      severity: 'error',
      comment: 'lib/native/lxc.ts loads liblxc: only the container driver (and what reads a container through liblxc) imports it; everything else uses lib/native/sys.ts.',
      from: { path: '^lib/', pathNot: LIBLXC_USERS },
      to: { path: '^lib/native/lxc\\.ts$' },
    },
    {
      name: 'library-knows-no-cli',
      severity: 'error',
      comment: 'The CLI is a user of the library, never the other way.',
      from: { path: '^lib/', pathNot: '^lib/cli/' },
      to: { path: '^lib/cli/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(dist|build|docs)/' },
  },
};
