/**
 * The lifecycle events of any source (a local host's hub, a remote host's websocket) as an async
 * iterator with a bounded buffer: `host.events()`.
 */
import { InvalidArgument } from '../core/errors';
import type { LifecycleEvent } from './lifecycle';

/**
 * Options of `host.events()`: the signal that ends the stream, and the buffer a slow reader may fill.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * for await (const e of host.events({ signal: ac.signal })) console.log(e.action, e.name);
 * ```
 */
export interface EventsOptions {
  /** Ends the iteration. */
  signal?: AbortSignal;
  /** Events kept for a consumer that falls behind; older ones are dropped (and counted). Default 1000. */
  buffer?: number;
}

/**
 * `host.events()`: an async iterator over the lifecycle events, ended by `signal` or `return()`;
 * it collects from its creation on, and `ready` resolves as the host's `ready()`.
 *
 * @example
 * ```ts
 * const events: LifecycleIterator = host.events({ signal: AbortSignal.timeout(60_000) });
 * await events.ready;
 * for await (const e of events) console.log(e.action, e.name, events.dropped);
 * ```
 */
export type LifecycleIterator = AsyncIterableIterator<LifecycleEvent> & { readonly dropped: number; ready: Promise<void> };

/** What the iterator needs of a source of lifecycle events (a local host's hub, a remote host's websocket). */
export interface LifecycleSource {
  /** Adds a listener; every event after it returns reaches it. */
  subscribe(fn: (e: LifecycleEvent) => void): void;
  unsubscribe(fn: (e: LifecycleEvent) => void): void;
  /** Resolves once the source is followed (see Host.ready). */
  ready(): Promise<void>;
}

/** The lifecycle events of any source (a local host's hub, a remote host's websocket) as an iterator with a bounded buffer. */
export function lifecycleEvents(source: LifecycleSource, options: EventsOptions = {}): LifecycleIterator {
  const limit = options.buffer ?? 1000;
  if (!Number.isInteger(limit) || limit < 1) throw new InvalidArgument(`events buffer must be a positive integer, got ${limit}`);
  const queue: LifecycleEvent[] = [];
  let dropped = 0;
  let wake: (() => void) | undefined;
  let done = options.signal?.aborted ?? false;
  const onEvent = (e: LifecycleEvent) => {
    let lost = 0;
    if (queue.length >= limit) {
      lost = 1 + (queue.shift()!.dropped ?? 0);
      dropped++;
    }
    queue.push(e);
    // The oldest event kept says how many were lost just before it.
    if (lost) queue[0] = { ...queue[0], dropped: (queue[0].dropped ?? 0) + lost };
    wake?.();
  };
  let subscribed = !done;
  const finish = () => {
    done = true;
    if (subscribed) source.unsubscribe(onEvent);
    subscribed = false;
    wake?.();
  };
  if (subscribed) source.subscribe(onEvent);
  const ready = source.ready();
  ready.catch(() => undefined); // next() reports it
  options.signal?.addEventListener('abort', finish, { once: true });
  const iterator = {
    get dropped() {
      return dropped;
    },
    ready,
    [Symbol.asyncIterator]() {
      return iterator;
    },
    async next(): Promise<IteratorResult<LifecycleEvent>> {
      await ready;
      while (queue.length === 0 && !done) await new Promise<void>((r) => (wake = r));
      wake = undefined;
      if (queue.length) return { value: queue.shift()!, done: false };
      return { value: undefined, done: true };
    },
    async return(): Promise<IteratorResult<LifecycleEvent>> {
      finish();
      return { value: undefined, done: true };
    },
  };
  return iterator;
}
