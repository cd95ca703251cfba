// Smoke (the k6 report's smoke test; docs/strategies.md#the-load-scenarios): is the
// issue API up and answering correctly? A trickle of requests (default 1 per second for
// 10 s, i.e. one user at a time), each followed by the user's GET; every answer's body
// is checked against its HTTP status.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e EVENT=default/opening-day \
//          -e JWT_SECRET=... [-e RATE=1 -e DURATION=10s -e USERS=10] e2e/load/smoke.js

import http from 'k6/http';
import { check } from 'k6';
import { ISSUE_URL, common, currentUser, env, issue, num, paramsFor, thresholds } from './lib.js';

const WORDS = { 201: ['ISSUED'], 200: ['ALREADY_ISSUED'], 202: ['QUEUED'], 409: ['NOT_STARTED', 'ENDED'], 410: ['SOLD_OUT'] };

export const options = {
  ...common,
  discardResponseBodies: false,
  scenarios: {
    smoke: {
      executor: 'constant-arrival-rate',
      rate: num('RATE', 1),
      timeUnit: '1s',
      duration: env('DURATION', '10s'),
      preAllocatedVUs: num('VUS', 2),
      maxVUs: num('MAX_VUS', 10),
    },
  },
  // Strict: a smoke test must not see a single error.
  thresholds: { ...thresholds({ p95: 500, errorRate: 0 }), checks: ['rate==1'] },
};

export default function () {
  const user = currentUser();
  const res = issue(user);
  check(res, {
    'issue: a valid answer': (r) => r.status in WORDS,
    'issue: body status matches the code': (r) => {
      try {
        return (WORDS[r.status] || []).includes(r.json('status'));
      } catch (_) {
        return false;
      }
    },
  });
  const mine = http.get(ISSUE_URL, paramsFor(user, { name: 'my-result' }));
  check(mine, {
    'my result: 200 (or 202 while queued)': (r) => r.status === 200 || r.status === 202,
  });
}
