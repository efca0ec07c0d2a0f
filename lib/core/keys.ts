/**
 * Options objects refuse keys they do not know (a typo such as `{ confg: … }` is an error, not a
 * silently ignored key). Each options type declares its keys once, as an object literal the
 * compiler checks against the type: a key added to the type without being listed here (or
 * listed without being in the type) does not compile.
 */
import { InvalidArgument } from './errors';

/** The keys of an options type `T`, every one of them listed (`{ key: true, … }`). */
export function optionKeys<T extends object>(keys: { [K in keyof Required<T>]: true }): readonly string[] {
  return Object.freeze(Object.keys(keys));
}

/** InvalidArgument naming the first key of `options` that is not `known`, and the known ones. */
export function refuseUnknownKeys(what: string, options: unknown, known: readonly string[]): void {
  if (options === null || typeof options !== 'object') return;
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new InvalidArgument(`unknown ${what} option ${JSON.stringify(key)}; known: ${known.map((k) => `"${k}"`).join(', ')}`);
    }
  }
}
