/**
 * A host's long operations take `signal` (and copy and import `onProgress`): create, copy and
 * import run as operations of lib/core/abort.ts. An abort kills their helpers; their own error
 * paths (the staging of lib/core/staging.ts, the copy's and import's staging directories) remove
 * what they made, and they reject with Aborted. Kept beside host.ts, which wraps its methods here.
 */
import { checkLongOptions, type LongOptions, longOperation } from '../core/abort';

/** Where each method takes its options, and how its operation is named in an Aborted message. */
const OPERATIONS = {
  create: { options: 1, progress: false, what: (a: unknown[]) => `creating ${String(a[0])}` },
  copy: { options: 2, progress: true, what: (a: unknown[]) => `copying ${String(a[0])} to ${String(a[1])}` },
  import: { options: 1, progress: true, what: (a: unknown[]) => `importing ${String(a[0])}` },
} as const;

type Method = (...args: unknown[]) => Promise<unknown>;

/** Makes `create`, `copy` and `import` of `proto` long operations (see above). */
export function hostLongOperations(proto: Record<keyof typeof OPERATIONS, unknown>): void {
  for (const [name, op] of Object.entries(OPERATIONS) as [keyof typeof OPERATIONS, (typeof OPERATIONS)[keyof typeof OPERATIONS]][]) {
    const inner = proto[name] as Method;
    proto[name] = async function (this: unknown, ...args: unknown[]) {
      const options = args[op.options] as LongOptions | undefined;
      checkLongOptions(options, op.progress);
      return longOperation(op.what(args), options, () => inner.apply(this, args));
    };
  }
}
