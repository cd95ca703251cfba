// Peak (the k6 report's peak test; docs/strategies.md#the-load-scenarios): 10 s of
// baseline traffic (100 requests per second), a sudden climb to 2,000 per second over
// 20 s, back down to 100 over 10 s, then 20 s to zero: the shape of a
// first-come-first-served opening.
// Thresholds (the report's): p95 < 1 s, errors (5xx or no answer) < 15 %.
//
//   k6 run -e BASE_URL=... -e EVENT=ns/name -e JWT_SECRET=... \
//          [-e BASE_RATE=100 -e PEAK_RATE=2000 -e BASELINE=10s -e CLIMB=20s -e FALL=10s -e TAIL=20s] \
//          e2e/load/peak.js

import { common, env, issue, num, thresholds } from './lib.js';

const BASE = num('BASE_RATE', 100);
const PEAK = num('PEAK_RATE', 2000);

export const options = {
  ...common,
  scenarios: {
    peak: {
      executor: 'ramping-arrival-rate',
      startRate: BASE,
      timeUnit: '1s',
      preAllocatedVUs: num('VUS', 200),
      maxVUs: num('MAX_VUS', 2000),
      stages: [
        { target: BASE, duration: env('BASELINE', '10s') },
        { target: PEAK, duration: env('CLIMB', '20s') },
        { target: BASE, duration: env('FALL', '10s') },
        { target: 0, duration: env('TAIL', '20s') },
      ],
    },
  },
  thresholds: thresholds({ p95: 1000, errorRate: 0.15 }),
};

export default function () {
  issue();
}
