// Stress (the k6 report's stress test; docs/strategies.md#the-load-scenarios): steps of
// STEP requests per second (default 500) up to MAX (default 2,000), each held for
// STEP_HOLD (default 1 min), then a ramp down over 30 s;
// where latency and errors break away is the breaking point. The step is reached over
// STEP_RAMP (default 5 s) so each plateau is a clean rate. The report counted concurrent
// users; here the steps are arrival rates (open model), which is what a real crowd does.
// Pass STEP=250 MAX=6000 (or higher) to walk well past the breaking point; the p95 / error
// thresholds then fail on purpose and the summary shows at which rate.
//
//   k6 run -e BASE_URL=... -e EVENT=ns/name -e JWT_SECRET=... \
//          [-e STEP=500 -e MAX=2000 -e STEP_HOLD=1m -e STEP_RAMP=5s] e2e/load/stress.js

import { common, env, issue, num, thresholds } from './lib.js';

const STEP = num('STEP', 500);
const MAX = num('MAX', 2000);
const stages = [];
for (let rate = STEP; rate <= MAX; rate += STEP) {
  stages.push({ target: rate, duration: env('STEP_RAMP', '5s') });
  stages.push({ target: rate, duration: env('STEP_HOLD', '1m') });
}
stages.push({ target: 0, duration: env('RAMP_DOWN', '30s') });

export const options = {
  ...common,
  scenarios: {
    stress: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: num('VUS', 200),
      maxVUs: num('MAX_VUS', 2000),
      stages,
    },
  },
  thresholds: thresholds({ p95: 1000, errorRate: 0.15 }),
};

export default function () {
  issue();
}
