/**
 * A host's long operations take `signal` (and copy and import `onProgress`): create, copy and
 * import run as operations of lib/core/abort.ts. An abort kills their helpers; their own error
 * paths (the staging of lib/core/staging.ts, the copy's and import's staging directories) remove
 * what they made, and they reject with Aborted. Kept beside host.ts, which wraps its methods here.
 */
import { longMethods } from '../core/abort';

/** Makes `create`, `copy` and `import` of `proto` long operations (see above). */
export function hostLongOperations(proto: object): void {
  longMethods(proto, {
    create: { options: 1, progress: false, what: (a) => `creating ${String(a[0])}` },
    copy: { options: 2, progress: true, what: (a) => `copying ${String(a[0])} to ${String(a[1])}` },
    import: { options: 1, progress: true, what: (a) => `importing ${String(a[0])}` },
  });
}
