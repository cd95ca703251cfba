// Spike (the 10:00 opening of docs/strategies.md#the-seed-scenario): REQUESTS requests
// (default 100,000) spread over USERS distinct users (default 10,000, so about ten
// presses each), sent at a constant arrival rate RATE (open model:
// constant-arrival-rate). With OPENS_AT_MS, setup() waits for the round's opening, so
// the first request arrives as the button is enabled.
//
// With DISTINCT=1 (every request a new user) against a round with more stock than
// requests it is a sustained-admission run. (The benchmark, bench/run.sh, uses
// couponrush-load instead: on a 2-core machine k6's own CPU is the limit; see BENCH.md.)
//
// Latency: k6's http_req_duration runs from the moment the request is written, so time
// an overloaded generator spends before sending is not in it. dropped_iterations counts
// requests that never had a free VU; with INTENDED_LATENCY=1, `latency_from_intended`
// measures from each request's due time on the constant-rate schedule (ms resolution;
// costs the generator about 85 µs per request, so it is off by default).
//
//   k6 run -e BASE_URL=... -e EVENT=ns/name -e JWT_SECRET=... \
//          [-e RATE=2000 -e REQUESTS=100000 -e USERS=10000 -e OPENS_AT_MS=...] e2e/load/spike.js

import { common, env, issue, intendedLatency, num, thresholds, waitForOpening } from './lib.js';

const RATE = num('RATE', 2000);
const REQUESTS = num('REQUESTS', 100000);
const SECONDS = REQUESTS / RATE;

export const options = {
  ...common,
  setupTimeout: '300s',
  scenarios: {
    spike: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      // k6 accepts fractional durations; rate × duration = REQUESTS.
      duration: `${SECONDS}s`,
      preAllocatedVUs: num('VUS', 200),
      maxVUs: num('MAX_VUS', 2000),
      gracefulStop: '30s',
    },
  },
  // The project's target for kafka-async: no errors, p99 under 25 ms.
  thresholds: thresholds({ p95: 25, p99: 25, errorRate: 0 }),
};

export function setup() {
  return waitForOpening();
}

const INTENDED = env('INTENDED_LATENCY', '') === '1';

export default function () {
  issue();
  if (INTENDED) intendedLatency(RATE);
}

// These two instants in the console output give the rate actually achieved: requests
// answered ÷ (teardown − end of setup). Teardown runs once every iteration has finished
// (or was cut off by gracefulStop).
export function teardown(data) {
  console.log(`BENCH_WINDOW_MS ${data.startedAt} ${Date.now()}`);
}
