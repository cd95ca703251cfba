//! An open-model HTTP load generator, cheap enough to share two cores with the servers
//! it measures (the benchmark's problem with k6, which costs ~250 µs of CPU per request).
//!
//! The model is wrk2's: request `k` of the run is *due* at `start + k / rate`, whatever
//! happened to the requests before it. A fixed set of keep-alive connections takes the
//! requests in due order; a connection that is free sends the next request when it is
//! due (at once, if it is already late), so when the server stalls the requests wait in
//! the generator and that wait is counted: latency is measured **from the due time**
//! (no coordinated omission), and also, separately, from the moment of sending.
//!
//! Everything per user (JWTs) is prepared before the clock starts, so the run itself
//! costs one HTTP/1.1 request on a raw hyper connection and a few counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// What to send: one POST per entry of `users_by_request`, as that user.
pub struct Plan {
    pub addr: SocketAddr,
    /// The Host header.
    pub host: HeaderValue,
    /// Path (and query) of every request.
    pub path: String,
    /// Requests per second on the schedule.
    pub rate: f64,
    pub connections: usize,
    /// A request unanswered after this counts as a transport error; its connection is replaced.
    pub timeout: Duration,
    /// The header that identifies user `i`: `Authorization: Bearer <jwt>` or `X-User-Id`.
    pub credentials: Vec<(HeaderName, HeaderValue)>,
    /// Index into `credentials` of request `k`; its length is the number of requests.
    pub users_by_request: Vec<u32>,
}

/// One request's outcome, as recorded by the connection that sent it.
struct Outcome {
    /// Microseconds from the request's due time to its answer.
    from_due_us: u32,
    /// Microseconds from sending to the answer.
    service_us: u32,
    /// Sent more than a millisecond after it was due.
    late: bool,
    /// Microseconds from the start of the run to the answer.
    answered_at_us: u64,
    answer: Answer,
}

enum Answer {
    /// An HTTP status and the body's `"status"` word, if it has one.
    Http(u16, Option<String>),
    Transport,
    Timeout,
}

/// Latency quantiles, milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    fn of(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        let at = |q: f64| quantile(&micros, q).map_or(0.0, |us| f64::from(us) / 1000.0);
        Self { p50: at(0.5), p90: at(0.9), p95: at(0.95), p99: at(0.99), p999: at(0.999), max: at(1.0) }
    }
}

/// The `q` quantile (0..=1) of `sorted` (nearest rank), `None` if it is empty. The one
/// definition the open model's report and the spike's tally share.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let index = (last as f64 * q).round() as usize;
    sorted.get(index.min(last)).copied()
}

/// The result of a run (the benchmark's report reads this as JSON).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub requests: u64,
    pub rate: f64,
    pub connections: usize,
    /// Requests that got an HTTP answer.
    pub answered: u64,
    /// Seconds from the first due time to the last HTTP answer.
    pub window_s: f64,
    /// Answered requests per second of the window.
    pub achieved_per_s: f64,
    /// Latency from each request's due time (or from its sending, if that was earlier):
    /// what a user arriving on schedule waited; requests without an answer count with
    /// the time until they were given up.
    pub from_due_ms: Quantiles,
    /// Latency from the moment each request was written: the server's (and the network's) share.
    pub service_ms: Quantiles,
    /// Requests sent more than 1 ms after they were due (every connection was busy, or the
    /// generator itself was behind): a sign of overload, as k6's dropped iterations.
    pub late_sends: u64,
    /// Answers per HTTP status code.
    pub by_code: BTreeMap<u16, u64>,
    /// Answers per `"status"` word of the JSON body (ISSUED, SOLD_OUT, ...).
    pub by_status: BTreeMap<String, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Milliseconds from the start to the first SOLD_OUT answer, if any.
    pub first_sold_out_ms: Option<f64>,
}

impl Report {
    /// 5xx answers, transport errors and timeouts: what couponrush counts as an error (a
    /// 4xx such as SOLD_OUT is an answer).
    pub fn errors(&self) -> u64 {
        self.by_code.iter().filter(|(code, _)| **code >= 500).map(|(_, n)| n).sum::<u64>()
            + self.transport_errors
            + self.timeouts
    }
}

/// The resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Sender> {
    tokio::time::timeout(timeout, async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    })
    .await?
}

/// The `"status"` word of a couponrush JSON answer, found without parsing the whole body.
fn status_word(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = br#""status":""#;
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&body[start..start + len]).into_owned())
}

impl Plan {
    /// Opens the connections, then runs the schedule, starting at `opens_at_ms` (epoch
    /// ms, e.g. a round's opening) if given, else at once: the first request is due then.
    pub async fn run(self, opens_at_ms: Option<i64>) -> anyhow::Result<Report> {
        let plan = Arc::new(self);
        let mut senders = Vec::with_capacity(plan.connections);
        for _ in 0..plan.connections {
            senders.push(connect(plan.addr, plan.timeout).await?);
        }
        if let Some(wait_ms) = opens_at_ms.map(|at| at - couponrush_core::wall_clock_ms()).filter(|ms| *ms > 0) {
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms)?)).await;
        }
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|sender| tokio::spawn(connection_loop(plan.clone(), sender, next.clone(), start)))
            .collect();
        let mut outcomes = Vec::with_capacity(plan.users_by_request.len());
        for task in tasks {
            outcomes.extend(task.await??);
        }
        Ok(plan.report(outcomes))
    }

    fn due(&self, start: Instant, k: u64) -> Instant {
        start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    fn request(&self, k: u64) -> anyhow::Result<Request<Empty<Bytes>>> {
        let (name, value) = &self.credentials[self.users_by_request[k as usize] as usize];
        Ok(Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header(HOST, self.host.clone())
            .header(CONTENT_LENGTH, 0)
            .header(name, value.clone())
            .body(Empty::new())?)
    }

    fn report(&self, outcomes: Vec<Outcome>) -> Report {
        let mut report = Report {
            requests: outcomes.len() as u64,
            rate: self.rate,
            connections: self.connections,
            ..Report::default()
        };
        let mut from_due = Vec::with_capacity(outcomes.len());
        let mut service = Vec::with_capacity(outcomes.len());
        let mut last_answer_us = 0;
        for outcome in outcomes {
            report.late_sends += u64::from(outcome.late);
            // A request that got no answer counts in the latency from the due time as
            // what its user waited before giving up, so errors never make it look better.
            from_due.push(outcome.from_due_us);
            match outcome.answer {
                Answer::Http(code, word) => {
                    report.answered += 1;
                    last_answer_us = last_answer_us.max(outcome.answered_at_us);
                    service.push(outcome.service_us);
                    *report.by_code.entry(code).or_default() += 1;
                    if let Some(word) = word {
                        if word == "SOLD_OUT" {
                            let at = outcome.answered_at_us as f64 / 1000.0;
                            report.first_sold_out_ms = Some(report.first_sold_out_ms.map_or(at, |first| first.min(at)));
                        }
                        *report.by_status.entry(word).or_default() += 1;
                    }
                }
                Answer::Transport => report.transport_errors += 1,
                Answer::Timeout => report.timeouts += 1,
            }
        }
        report.window_s = last_answer_us as f64 / 1e6;
        if report.window_s > 0.0 {
            report.achieved_per_s = report.answered as f64 / report.window_s;
        }
        report.from_due_ms = Quantiles::of(from_due);
        report.service_ms = Quantiles::of(service);
        report
    }
}

/// One connection: takes the next due request, sends it when it is due, waits for the
/// answer, records it; replaces the connection after a transport error or a timeout.
async fn connection_loop(
    plan: Arc<Plan>,
    sender: Sender,
    next: Arc<AtomicU64>,
    start: Instant,
) -> anyhow::Result<Vec<Outcome>> {
    let total = plan.users_by_request.len() as u64;
    let mut sender = Some(sender);
    let mut outcomes = Vec::new();
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= total {
            return Ok(outcomes);
        }
        let due = plan.due(start, k);
        // tokio's timer has millisecond ticks and wakes up to a tick late; aiming a tick
        // early keeps the sends on schedule (to within a millisecond either way).
        tokio::time::sleep_until(due.checked_sub(TIMER_TICK).unwrap_or(due).into()).await;
        let request = plan.request(k)?;
        // A connection the server closed since (idle timeout, `Connection: close`) is
        // replaced before sending, so that is not counted as a failed request.
        let mut current = match sender.take().filter(|current| !current.is_closed()) {
            Some(current) => current,
            None => match connect(plan.addr, plan.timeout).await {
                Ok(fresh) => fresh,
                Err(_) => {
                    let mut failed = outcome(start, due, Instant::now(), Answer::Transport);
                    failed.late = false; // nothing was sent
                    outcomes.push(failed);
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let exchange = async {
            current.ready().await?;
            let response = current.send_request(request).await?;
            let code = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((code, status_word(&body)))
        };
        let answer = match tokio::time::timeout(plan.timeout, exchange).await {
            Ok(Ok((code, word))) => {
                sender = Some(current);
                Answer::Http(code, word)
            }
            Ok(Err(_)) => Answer::Transport,
            Err(_) => Answer::Timeout,
        };
        // A request sent a little early is measured from its sending, so early sends
        // never make latency look shorter.
        let mut recorded = outcome(start, due.min(sent), Instant::now(), answer);
        recorded.service_us = micros(Instant::now().saturating_duration_since(sent));
        recorded.late = sent.saturating_duration_since(due) > TIMER_TICK;
        outcomes.push(recorded);
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn outcome(start: Instant, due: Instant, now: Instant, answer: Answer) -> Outcome {
    Outcome {
        from_due_us: micros(now.saturating_duration_since(due)),
        service_us: 0,
        late: true,
        answered_at_us: u64::try_from(now.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX),
        answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_status_word() {
        assert_eq!(status_word(br#"{"status":"SOLD_OUT","message":"x"}"#).as_deref(), Some("SOLD_OUT"));
        assert_eq!(status_word(br#"{"seq":3,"status":"ISSUED"}"#).as_deref(), Some("ISSUED"));
        assert_eq!(status_word(b"not json"), None);
        assert_eq!(status_word(br#"{"status":"unterminated"#), None);
    }

    #[test]
    fn quantiles_of_known_values() {
        let q = Quantiles::of((1..=1000).map(|ms| ms * 1000).collect());
        assert_eq!((q.p50, q.p99, q.max), (501.0, 990.0, 1000.0));
        assert_eq!(Quantiles::of(Vec::new()).p99, 0.0);
    }
}
