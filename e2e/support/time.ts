/**
 * Test time limits scale with the machine: under the lab's software-emulated VM (e2e/lab) code runs 10 to
 * 20 times slower, so limits tuned on the host would fail there. FERRY_TEST_TIME_FACTOR (default 1)
 * multiplies every limit the test support sets; the lab's CI step sets it.
 */
const factor = Number(process.env.FERRY_TEST_TIME_FACTOR ?? '1');

export const TIME_FACTOR = Number.isFinite(factor) && factor >= 1 ? factor : 1;

/** A limit of `ms` on the host, scaled for the machine the test runs on. */
export const scaled = (ms: number): number => Math.round(ms * TIME_FACTOR);
