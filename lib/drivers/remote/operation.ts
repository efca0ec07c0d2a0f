/**
 * Waiting on an LXD background operation for a long operation with a signal or a progress
 * callback (lib/core/abort.ts): short waits (1 s) so that LXD's progress (the operation's
 * `metadata.progress` — `stage`, `percent`, `processed` — or the `<stage>_progress` text such as
 * "Unpack: 45% (12.5MB/s)") reaches onProgress, and an abort cancels the operation
 * (`DELETE /1.0/operations/{id}`) where LXD can; where it cannot, the wait stops and the error
 * says that the server may still finish it.
 */
import { reportProgress, unlessAborted } from '../../core/abort';
import { Aborted, Timeout } from '../../core/errors';
import type { LxdClient } from './client';

const ABORTED = Symbol('aborted');

/** The finished operation (what `GET …/wait` gives), or Aborted once the current signal fires. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
export async function waitWatched(client: LxdClient, opPath: string, query: URLSearchParams, what: string, timeoutS: number): Promise<any> {
  const deadline = Date.now() + timeoutS * 1000;
  const q = new URLSearchParams(query);
  q.set('timeout', '1');
  for (;;) {
    const op = await unlessAborted(
      client.request('GET', `${opPath}/wait?${q}`, undefined, { timeoutMs: 11_000 }).then((r) => r.metadata),
      () => ABORTED,
    );
    if (op === ABORTED) throw await cancel(client, opPath, query, what);
    reportLxdProgress(op.metadata);
    if ((op.status_code !== 103 && op.status_code !== 105) || Date.now() > deadline) return op;
  }
}

/** Cancels the operation if LXD lets us; the Aborted error says which. */
async function cancel(client: LxdClient, opPath: string, query: URLSearchParams, what: string): Promise<Aborted> {
  const q = new URLSearchParams(query);
  q.delete('timeout');
  const s = q.toString();
  const refused = await client.request('DELETE', s ? `${opPath}?${s}` : opPath, undefined, { timeoutMs: 10_000 }).then(
    () => undefined,
    (e: Error) => (e instanceof Timeout ? 'no answer' : e.message),
  );
  return new Aborted(
    refused === undefined
      ? `LXD ${what} was aborted: the server's operation was cancelled`
      : `LXD ${what} was aborted: the server could not cancel its operation (${refused}), which may still finish there; lxq stopped waiting`,
  );
}

/** LXD's progress fields of an operation's metadata, if any, to the current operation's onProgress. */
function reportLxdProgress(metadata: Record<string, unknown> | null | undefined): void {
  if (!metadata || typeof metadata !== 'object') return;
  const p = metadata.progress as { stage?: string; percent?: string; processed?: string } | undefined;
  const textKey = Object.keys(metadata).find((k) => k.endsWith('_progress'));
  const text = textKey ? String(metadata[textKey]) : '';
  const stage = p?.stage ?? textKey?.replace(/_progress$/, '');
  if (!stage) return;
  const percent = Number(p?.percent ?? /(\d+)%/.exec(text)?.[1] ?? NaN);
  const processed = Number(p?.processed ?? NaN);
  reportProgress(stage.replace(/_/g, ' '), Number.isFinite(percent) ? percent : 0, Number.isFinite(processed) ? processed : undefined);
}
