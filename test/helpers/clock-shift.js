/**
 * A preload (`node -r`, or NODE_OPTIONS=--require) that moves a child process's wall clock by
 * LXQ_TEST_CLOCK_SHIFT_MS: `Date.now()` and `new Date()` read that much later. The schedule tests
 * give it to `lxq system serve` so that its next minute begins seconds after it starts instead of
 * up to a minute later (clock.ts chooses the shift). Timers run on the monotonic clock: unchanged.
 */
'use strict';
const shift = Number(process.env.LXQ_TEST_CLOCK_SHIFT_MS ?? 0);
if (shift) {
  const Real = Date;
  class ShiftedDate extends Real {
    constructor(...args) {
      if (args.length === 0) super(Real.now() + shift);
      else super(...args);
    }
    static now() {
      return Real.now() + shift;
    }
    // Node's own Dates (fs.Stats' times) are Dates too.
    static [Symbol.hasInstance](x) {
      return x instanceof Real;
    }
  }
  globalThis.Date = ShiftedDate;
}
