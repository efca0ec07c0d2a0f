/**
 * Waiting for a condition in tests: polled with a generous deadline, since the suite shares a
 * loaded 2-core machine and nothing may assume how fast a guest or a process is.
 */

/** Resolves once `check` holds; fails naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 120_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
