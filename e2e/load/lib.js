// Shared pieces of the k6 scripts in this folder: parameters from the environment,
// HS256 JWTs for many distinct users (minted once, shared by every VU), the issue
// request, and the tally of answers.
//
// What counts as an error here: a 5xx answer or no answer at all (transport error,
// timeout). 201 ISSUED, 200 ALREADY_ISSUED, 202 QUEUED, 409 NOT_STARTED/ENDED and
// 410 SOLD_OUT are all valid answers of a coupon round. Any other 4xx (401, 400, 404,
// ...) means the test itself is wrong and fails the `http_req_failed` threshold.

import http from 'k6/http';
import { sleep } from 'k6';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';

// ---------------------------------------------------------------- parameters

/** A string parameter from the environment (k6 `-e NAME=value` or the process env). */
export function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

/** A numeric parameter; a malformed value stops the test at init rather than later. */
export function num(name, fallback) {
  const raw = env(name, undefined);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name}=${raw} is not a number`);
  return value;
}

export const BASE_URL = env('BASE_URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');
/** `namespace/name` of the event. */
export const EVENT = env('EVENT', 'default/opening-day');
export const JWT_SECRET = env('JWT_SECRET', 'e2e-test-secret');
/** `jwt` (Authorization: Bearer, needs the issuer's JWT_HS256_SECRET) or `header`
 * (X-User-Id, needs the issuer's TRUST_USER_HEADER=true). */
export const AUTH = env('AUTH', 'jwt');
/** Distinct users the requests are spread over. */
export const USERS = num('USERS', 1000);
/** Prefix of user ids; change it to get a fresh set of users against the same round. */
export const USER_PREFIX = env('USER_PREFIX', 'k6-user-');
/** Token lifetime, seconds (a soak needs more than its duration). */
export const TOKEN_TTL = num('TOKEN_TTL', 24 * 3600);
/** Answers slower than this are abandoned and count as transport errors. */
export const TIMEOUT = env('TIMEOUT', '10s');

const [NAMESPACE, NAME] = EVENT.split('/');
if (!NAMESPACE || !NAME) throw new Error(`EVENT=${EVENT}: expected namespace/name`);
export const ISSUE_URL = `${BASE_URL}/api/v1/events/${NAMESPACE}/${NAME}/issue`;

if (AUTH !== 'jwt' && AUTH !== 'header') throw new Error(`AUTH=${AUTH}: expected jwt or header`);
if (!(USERS >= 1)) throw new Error(`USERS=${USERS}: expected at least 1`);

// ---------------------------------------------------------------- users and tokens
//
// What a request costs the generator matters here: on a small machine k6 shares the
// CPU with the server, and every microsecond it spends is one the server does not get.
// Measured on the benchmark machine (2 vCPU, 3,000 requests/s, answers from a trivial
// server): a bare POST costs k6 about 150 µs of CPU; minting a fresh HS256 token per
// request adds about 15 µs; reading a pre-minted token from a SharedArray adds about
// 130 µs (each read decodes the element) and reading `k6/execution`'s
// `scenario.iterationInTest` about 85 µs. So tokens are minted per request, and the
// user is picked from the cheap globals __VU and __ITER.

/** The user id of user number `i`. */
export function userName(i) {
  return USER_PREFIX + String(i).padStart(6, '0');
}

const JWT_HEADER = encoding.b64encode('{"alg":"HS256","typ":"JWT"}', 'rawurl');
const EXP = Math.floor(Date.now() / 1000) + TOKEN_TTL;

/** An HS256 JWT (`sub`, `exp`) signed with JWT_SECRET, as the issuer verifies it. */
export function mintJwt(sub, exp) {
  // User ids here are plain ASCII, so the JSON needs no escaping.
  const payload = encoding.b64encode(`{"sub":"${sub}","exp":${exp === undefined ? EXP : exp}}`, 'rawurl');
  const signingInput = `${JWT_HEADER}.${payload}`;
  return `${signingInput}.${crypto.hmac('sha256', JWT_SECRET, signingInput, 'base64rawurl')}`;
}

/** Request headers that make the issuer see `user`. */
export function headersFor(user) {
  return AUTH === 'jwt' ? { Authorization: `Bearer ${mintJwt(user)}` } : { 'X-User-Id': user };
}

// murmur3's 32-bit finaliser: spreads (VU, iteration) pairs evenly over the users.
function mix32(h) {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
const SEED = num('SEED', 1);
export const DISTINCT = !['', '0', 'false'].includes(env('DISTINCT', ''));

/**
 * The user of this iteration. DISTINCT=1: a new user every request (`<prefix><vu>-<iter>`),
 * the "every user once" load of a sustained-admission run. Otherwise one of USERS users,
 * picked by a hash of (VU, iteration): like people pressing the button at random, each
 * of the USERS users sends about REQUESTS/USERS requests (Poisson; with 100,000 requests
 * over 10,000 users all but about one user send at least one).
 */
export function currentUser() {
  if (DISTINCT) return `${USER_PREFIX}${__VU}-${__ITER}`;
  return userName(mix32(Math.imul(__VU, 0x9e3779b1) ^ Math.imul(__ITER + SEED, 0x85ebca77)) % USERS);
}

/** Request params for `user`. */
export function paramsFor(user, tags) {
  return { headers: headersFor(user), timeout: TIMEOUT, tags: tags || {} };
}

// ---------------------------------------------------------------- answers

// Each counter also carries the scenario tag, so a mixed test can be split later.
export const answers = {
  issued: new Counter('answer_issued'), // 201
  already: new Counter('answer_already_issued'), // 200
  queued: new Counter('answer_queued'), // 202
  notStarted: new Counter('answer_not_started'), // 409
  soldOut: new Counter('answer_sold_out'), // 410
  otherClient: new Counter('answer_other_4xx'), // any other 4xx: the test is wrong
  server: new Counter('answer_5xx'),
  transport: new Counter('answer_transport_error'), // no HTTP answer (status 0)
};
/** 5xx or transport error: the error rate. */
export const errors = new Rate('errors');
/** Latency from the moment the generator *meant* to send (see intendedLatency). */
export const latencyFromIntended = new Trend('latency_from_intended', true);

// Only the valid answers count as "expected" for k6's own http_req_failed.
http.setResponseCallback(http.expectedStatuses(200, 201, 202, 409, 410));

/** Sends one issue request as `user` (default: this iteration's user); returns the response. */
export function issue(user) {
  const res = http.post(ISSUE_URL, null, paramsFor(user || currentUser()));
  tally(res);
  return res;
}

/** Records one answer in the counters above. */
export function tally(res) {
  const s = res.status;
  if (s === 201) answers.issued.add(1);
  else if (s === 200) answers.already.add(1);
  else if (s === 202) answers.queued.add(1);
  else if (s === 409) answers.notStarted.add(1);
  else if (s === 410) answers.soldOut.add(1);
  else if (s >= 500) answers.server.add(1);
  else if (s === 0) answers.transport.add(1);
  else answers.otherClient.add(1);
  errors.add(s === 0 || s >= 500);
}

/**
 * k6 starts the clock of http_req_duration when the request is written, so a generator
 * that falls behind its schedule (too busy to start iterations on time) hides that
 * delay. For a constant arrival rate the schedule is known: iteration k of the scenario
 * is due at startTime + k / rate. This records "answer time minus due time" (ms
 * resolution), which includes any lag of the generator itself. It reads `k6/execution`,
 * which costs k6 about 85 µs per request, so the scripts only call it when asked
 * (INTENDED_LATENCY=1).
 */
export function intendedLatency(ratePerSecond) {
  const due = exec.scenario.startTime + (exec.scenario.iterationInTest * 1000) / ratePerSecond;
  latencyFromIntended.add(Math.max(0, Date.now() - due));
}

// ---------------------------------------------------------------- thresholds, setup

/** The thresholds every script shares; P95_MS, P99_MS and ERROR_RATE (0: none at all)
 * override them. */
export function thresholds({ p95, p99, errorRate }) {
  const maxRate = num('ERROR_RATE', errorRate);
  const rate = maxRate > 0 ? `rate<${maxRate}` : 'rate==0';
  const t = {
    http_req_duration: [`p(95)<${num('P95_MS', p95)}`],
    errors: [rate],
    // A token or URL mistake shows up as 401/404 here, not as an "error".
    http_req_failed: [rate],
  };
  const p99Limit = num('P99_MS', p99);
  if (p99Limit !== undefined) t.http_req_duration.push(`p(99)<${p99Limit}`);
  return t;
}

/** Options every script shares. */
export const common = {
  discardResponseBodies: env('KEEP_BODIES', '') === '',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

/**
 * setup(): if OPENS_AT_MS is given (epoch ms of the round's opening), waits for it so
 * the first request arrives when the button is enabled, as at 10:00 on the day.
 */
export function waitForOpening() {
  const opensAt = num('OPENS_AT_MS', 0);
  const wait = opensAt - Date.now();
  if (wait > 0) {
    sleep(wait / 1000);
  }
  return { startedAt: Date.now(), opensAt };
}
