import { NotSupported } from '../errors';
import type { StorageDriver } from './types';

/** The primitives of a type that has no snapshots yet: each refuses, before any side effect. */
export function unsupportedStorage(why: string): StorageDriver {
  const refuse = () => Promise.reject(new NotSupported(why));
  return { capture: refuse, stageRestore: refuse, applyRestore: refuse };
}
