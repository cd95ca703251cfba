// Soak (the endurance test; docs/strategies.md#the-load-scenarios): a steady, moderate
// rate for a long time, to see memory or connection leaks and latency creep. Defaults
// are short (200 requests per second for 2 minutes) so the script can be tried; a real
// soak is DURATION=1h or more (tokens live TOKEN_TTL, 24 h by default). Watch the
// issuer's RSS and /metrics alongside; k6 reports latency and errors.
//
//   k6 run -e BASE_URL=... -e EVENT=ns/name -e JWT_SECRET=... \
//          [-e RATE=200 -e DURATION=2m -e USERS=10000] e2e/load/soak.js

import { common, env, issue, num, thresholds } from './lib.js';

export const options = {
  ...common,
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: num('RATE', 200),
      timeUnit: '1s',
      duration: env('DURATION', '2m'),
      preAllocatedVUs: num('VUS', 50),
      maxVUs: num('MAX_VUS', 1000),
    },
  },
  // Stricter than load, stress and peak: a steady moderate load has no excuse for slow
  // answers.
  thresholds: thresholds({ p95: 100, p99: 500, errorRate: 0.001 }),
};

export default function () {
  issue();
}
