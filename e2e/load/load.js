// Load (the k6 report's load test; docs/strategies.md#the-load-scenarios): ramp up to
// 1,000 requests per second over 30 s, hold it for a minute, ramp down over 30 s. Open
// model: requests arrive at the set rate whether or not earlier ones were answered
// (ramping-arrival-rate); iterations k6 could not start for want of a free VU are
// reported as dropped_iterations, a sign of overload.
// Thresholds (the report's): p95 < 1 s, errors (5xx or no answer) < 15 %.
//
//   k6 run -e BASE_URL=... -e EVENT=ns/name -e JWT_SECRET=... \
//          [-e RATE=1000 -e RAMP_UP=30s -e HOLD=1m -e RAMP_DOWN=30s -e USERS=10000] e2e/load/load.js

import { common, env, issue, num, thresholds } from './lib.js';

const RATE = num('RATE', 1000);

export const options = {
  ...common,
  scenarios: {
    load: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: num('VUS', 100),
      maxVUs: num('MAX_VUS', 1000),
      stages: [
        { target: RATE, duration: env('RAMP_UP', '30s') },
        { target: RATE, duration: env('HOLD', '1m') },
        { target: 0, duration: env('RAMP_DOWN', '30s') },
      ],
    },
  },
  thresholds: thresholds({ p95: 1000, errorRate: 0.15 }),
};

export default function () {
  issue();
}
