//! The HTTP API: `POST /api/v1/events/{namespace}/{name}/issue` and its `GET`, the
//! event's public state, plus JSON answers for unknown routes and wrong methods.
//! Bad input is turned away before any backend is asked.
//!
//! The router reaches everything behind an answer through [`Backends`], a narrow
//! interface: the issuer implements it with Redis, MySQL and Kafka (`backends.rs`), the
//! unit tests below with rounds in memory, so the whole answer table (status, headers,
//! body) is tested with `oneshot` in milliseconds. The guarantees behind the answers are
//! tested against the real servers (`e2e/tests`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use couponrush_core::event::{EventId, Strategy};
use couponrush_core::message::{Attribution, MAX_AUDIT_ID_BYTES, valid_audit_id};
use couponrush_core::round_store::admission::Admission;
use couponrush_core::round_store::meta::RoundMeta;
use serde::Deserialize;

use crate::auth::Authenticator;
use crate::error::IssueError;
use crate::events::LiveRound;
use crate::metrics::{AnswerLabels, Metrics};
use crate::response::{EventState, Reply, rfc3339};
use crate::strategies::Outcome;

/// Largest request body accepted; an issue request needs at most a few fields.
pub const MAX_BODY_BYTES: usize = 1024;

/// What the API needs from the rest of the issuer.
pub trait Backends: Send + Sync + 'static {
    fn auth(&self) -> &Authenticator;
    fn metrics(&self) -> &Metrics;
    /// How long a request's body may take to arrive.
    fn body_timeout(&self) -> Duration;
    /// The strategy of the event's current round if this issuer knows it is sold out;
    /// no I/O, so the flood after a sell-out costs nothing.
    fn sold_out_from_memory(&self, event: &EventId) -> Option<Strategy>;
    /// The event's current round, or `None` if the event has none.
    fn lookup(&self, event: &EventId) -> impl Future<Output = Result<Option<Arc<LiveRound>>, IssueError>> + Send;
    /// Decides one request with the round's strategy. The decision runs to its end
    /// (publish, roll-back, a place given back) even when the caller stops waiting.
    fn issue(
        self: Arc<Self>,
        live: Arc<LiveRound>,
        user: String,
        attribution: Attribution,
    ) -> impl Future<Output = Result<Outcome, IssueError>> + Send;
    /// What `user` holds in the round.
    fn holding(&self, live: &LiveRound, user: &str) -> impl Future<Output = Result<Holding, IssueError>> + Send;
    /// The round's settings and the coupons left, or `None` if its keys are gone.
    fn counts(&self, live: &LiveRound) -> impl Future<Output = Result<Option<RoundCounts>, IssueError>> + Send;
}

/// What a caller holds in a round (`GET …/issue`).
#[derive(Debug, PartialEq, Eq)]
pub enum Holding {
    /// Their latest coupon, if any, and whether its row is in MySQL yet.
    Coupon { seq: Option<u32>, persisted: bool },
    /// A `queue` round: where the caller stands, if they pressed.
    InQueue(Option<Outcome>),
}

/// A round's public numbers (`GET` of an event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundCounts {
    pub meta: RoundMeta,
    /// Counted where the strategy keeps its counts (Redis or MySQL).
    pub remaining: u32,
}

/// The API router; `run` serves it, the tests drive it with `oneshot`.
pub fn app<B: Backends>(backends: Arc<B>) -> Router {
    Router::new()
        .route("/api/v1/events/{namespace}/{name}/issue", post(issue::<B>).get(my_result::<B>))
        .route("/api/v1/events/{namespace}/{name}", get(event_state::<B>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .method_not_allowed_fallback(|| async { Reply::MethodNotAllowed })
        .fallback(|| async { Reply::NotFound })
        .with_state(backends)
}

/// The optional body of an issue request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssueRequest {
    /// The client's own reference for this attempt, recorded with the coupon (the Kafka
    /// message and the row) and in the log. Without one the issuer makes one.
    #[serde(default)]
    request_id: Option<String>,
}

/// A request id for a request that brought none: 128 random bits in hex, so that every
/// admission decision can be told apart from every other in the audit trail.
fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The request body, read within the body timeout: a client that sends its head and
/// then trickles the body (or never sends it) gets a 408 and its connection closed,
/// instead of holding this request open. A body already received costs no timer.
struct TimedBody(Result<Bytes, Reply>);

impl<B: Backends> FromRequest<Arc<B>> for TimedBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, backends: &Arc<B>) -> Result<Self, Infallible> {
        let read = Bytes::from_request(request, backends);
        Ok(TimedBody(match tokio::time::timeout(backends.body_timeout(), read).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(rejection)) => Err(body_rejected(&rejection)),
            Err(_) => Err(Reply::BodyTimeout),
        }))
    }
}

fn body_rejected(rejection: &BytesRejection) -> Reply {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Reply::TooLarge
    } else {
        Reply::BadRequest(rejection.body_text())
    }
}

fn parse_body(body: Result<Bytes, Reply>) -> Result<Option<IssueRequest>, Reply> {
    let body = body?;
    let body = body.trim_ascii();
    if body.is_empty() {
        return Ok(None);
    }
    // serde would also read a struct from a JSON array; only an object is a request.
    if !body.starts_with(b"{") {
        return Err(Reply::BadRequest("the body must be a JSON object".to_owned()));
    }
    let request: IssueRequest =
        serde_json::from_slice(body).map_err(|error| Reply::BadRequest(format!("invalid JSON body: {error}")))?;
    // The same bounds as the audit columns: refused here, before anything is decided.
    if request.request_id.as_ref().is_some_and(|id| !valid_audit_id(id)) {
        return Err(Reply::BadRequest(format!(
            "requestId must be 1 to {MAX_AUDIT_ID_BYTES} bytes with no control characters"
        )));
    }
    Ok(Some(request))
}

fn event_id(namespace: &str, name: &str) -> Result<EventId, Reply> {
    EventId::new(namespace, name).map_err(|error| Reply::BadRequest(error.to_string()))
}

async fn lookup(backends: &impl Backends, event: &EventId) -> Result<Arc<LiveRound>, Reply> {
    match backends.lookup(event).await {
        Ok(Some(live)) => Ok(live),
        Ok(None) => Err(Reply::UnknownEvent),
        Err(error) => Err(unavailable(backends, &error)),
    }
}

/// The 503 for a failed request, saying only what is known: nothing admitted, outcome
/// unknown, or the round paused.
fn unavailable(backends: &impl Backends, error: &IssueError) -> Reply {
    backends.metrics().backend_errors.get_or_create(&crate::metrics::ErrorLabels { kind: error.kind() }).inc();
    let chain = couponrush_core::error_chain(error);
    if error.round_paused() {
        tracing::error!(error = %chain, "answering 503: round paused");
        Reply::RoundPaused
    } else if error.outcome_unknown() {
        tracing::warn!(error = %chain, "answering 503: outcome unknown");
        Reply::OutcomeUnknown
    } else {
        tracing::warn!(error = %chain, "answering 503");
        Reply::Unavailable
    }
}

async fn issue<B: Backends>(
    State(backends): State<Arc<B>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Reply {
    let started = Instant::now();
    let (reply, strategy) = decide(&backends, &namespace, &name, &headers, body).await;
    let labels = AnswerLabels { status: reply.status_word(), strategy: strategy.map_or("none", Strategy::as_str) };
    let metrics = backends.metrics();
    metrics.admission_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    metrics.answers.get_or_create(&labels).inc();
    reply
}

async fn decide<B: Backends>(
    backends: &Arc<B>,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, Reply>,
) -> (Reply, Option<Strategy>) {
    let event = event_id(namespace, name);
    // A sold-out round is public knowledge (its state is on GET /api/v1/events/...), and
    // after 10:00 it is nearly every request: answer it from memory before spending a
    // signature check on the token. Nothing is admitted or changed either way.
    if let Some(strategy) = event.as_ref().ok().and_then(|event| backends.sold_out_from_memory(event)) {
        return (Reply::SoldOut, Some(strategy));
    }
    let caller = match backends.auth().identify_caller(headers) {
        Ok(caller) => caller,
        Err(why) => return (Reply::Unauthorized(why), None),
    };
    let request = match parse_body(body) {
        Ok(request) => request,
        Err(reply) => return (reply, None),
    };
    let user = caller.user;
    // A jti that is not recordable (too long, control characters) is left out of the
    // record; the token itself was valid, so the request goes on.
    let request_id = request.and_then(|request| request.request_id).unwrap_or_else(new_request_id);
    let attribution = Attribution::new(Some(request_id), caller.jti);
    let event = match event {
        Ok(event) => event,
        Err(reply) => return (reply, None),
    };
    let live = match lookup(backends.as_ref(), &event).await {
        Ok(live) => live,
        Err(reply) => return (reply, None),
    };
    if live.is_sold_out() {
        return (Reply::SoldOut, Some(live.strategy));
    }
    if live.has_vanished() {
        return (unavailable(backends.as_ref(), &IssueError::RoundVanished), Some(live.strategy));
    }
    if live.is_paused() {
        return (Reply::Paused, Some(live.strategy));
    }
    // Early presses (nearly all traffic before the opening) need no Redis call.
    if let Some(starts_at_ms) = live.opens_after(couponrush_core::wall_clock_ms()) {
        return (not_started(starts_at_ms), Some(live.strategy));
    }
    // axum drops this future when the client hangs up; the decision itself runs on
    // whatever happens here (see [`Backends::issue`]).
    let decided = backends.clone().issue(live.clone(), user.clone(), attribution.clone()).await;
    let reply = match decided {
        Ok(outcome) => outcome_reply(outcome, live.round.round),
        Err(error) => unavailable(backends.as_ref(), &error),
    };
    if let Reply::Issued { seq, .. } = &reply {
        let Attribution { request_id, jti } = &attribution;
        tracing::debug!(round = %live.label, user, seq, request_id, jti, "issued");
    }
    (reply, Some(live.strategy))
}

/// 409 NOT_STARTED, with the opening and a Retry-After that ends there.
fn not_started(starts_at_ms: i64) -> Reply {
    let wait_ms = starts_at_ms.saturating_sub(couponrush_core::wall_clock_ms()).max(0);
    Reply::NotStarted { starts_at_ms, retry_after_s: u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1) }
}

fn outcome_reply(outcome: Outcome, round: u32) -> Reply {
    match outcome {
        Outcome::Queued { position } => Reply::Queued { position },
        Outcome::Admission(admission) => match admission {
            Admission::Issued { seq, .. } => Reply::Issued { seq, round },
            Admission::AlreadyIssued { seq } => Reply::AlreadyIssued { seq, round },
            Admission::SoldOut => Reply::SoldOut,
            Admission::NotStarted { starts_at_ms } => not_started(starts_at_ms),
            Admission::Ended => Reply::Ended,
            Admission::UnknownRound => Reply::UnknownEvent,
            Admission::Regressed { .. } => Reply::RoundPaused,
        },
    }
}

/// `GET …/issue`: what the caller holds in the current round, and whether it is in
/// MySQL yet.
async fn my_result<B: Backends>(
    State(backends): State<Arc<B>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let user = match backends.auth().identify(&headers) {
        Ok(user) => user,
        Err(why) => return Reply::Unauthorized(why),
    };
    let event = match event_id(&namespace, &name) {
        Ok(event) => event,
        Err(reply) => return reply,
    };
    let live = match lookup(backends.as_ref(), &event).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let round = live.round.round;
    match backends.holding(&live, &user).await {
        Ok(Holding::Coupon { seq, persisted }) => Reply::MyResult { seq, persisted, round },
        // A queue round's result is decided in MySQL: a held coupon is persisted.
        Ok(Holding::InQueue(Some(Outcome::Admission(Admission::AlreadyIssued { seq })))) => {
            Reply::MyResult { seq: Some(seq), persisted: true, round }
        }
        Ok(Holding::InQueue(Some(outcome))) => outcome_reply(outcome, round),
        Ok(Holding::InQueue(None)) => Reply::MyResult { seq: None, persisted: false, round },
        Err(error) => unavailable(backends.as_ref(), &error),
    }
}

/// `GET /api/v1/events/{namespace}/{name}`: the current round's public state.
async fn event_state<B: Backends>(
    State(backends): State<Arc<B>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Reply {
    let event = match event_id(&namespace, &name) {
        Ok(event) => event,
        Err(reply) => return reply,
    };
    let live = match lookup(backends.as_ref(), &event).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let RoundCounts { meta, remaining } = match backends.counts(&live).await {
        Ok(Some(counts)) => counts,
        Ok(None) => return Reply::UnknownEvent,
        Err(error) => return unavailable(backends.as_ref(), &error),
    };
    let now = couponrush_core::wall_clock_ms();
    let phase = if now < meta.start_ms {
        "NOT_STARTED"
    } else if meta.end_ms.is_some_and(|end| now >= end) {
        "ENDED"
    } else if remaining == 0 {
        "SOLD_OUT"
    } else if meta.paused {
        "PAUSED"
    } else {
        "LIVE"
    };
    Reply::EventState(EventState {
        event: event.to_string(),
        round: live.round.round,
        strategy: live.strategy.as_str(),
        state: phase,
        stock: meta.stock,
        remaining,
        starts_at: rfc3339(meta.start_ms),
        ends_at: meta.end_ms.map(rfc3339),
    })
}

/// The functions that read a request's untrusted parts before any backend is asked —
/// the event named by the path segments, the caller named by the `Authorization`
/// header, the JSON body — run on arbitrary input, each refusal rendered as the
/// response a client would get. `decide` calls these same functions (in its own order:
/// a sold-out round answers before the token is checked); the fuzz target `request`
/// (`issuer/fuzz`) feeds this whatever libFuzzer makes up, and requires every answer
/// to be a 4xx and nothing to panic.
#[doc(hidden)]
pub fn refusals_of_untrusted(
    auth: &crate::auth::Authenticator,
    namespace: &str,
    name: &str,
    authorization: &[u8],
    body: &[u8],
) -> Vec<StatusCode> {
    use axum::response::IntoResponse;
    let mut headers = HeaderMap::new();
    // A header hyper would refuse never reaches the handler.
    if let Ok(value) = axum::http::HeaderValue::from_bytes(authorization) {
        headers.insert(axum::http::header::AUTHORIZATION, value);
    }
    let refusals = [
        event_id(namespace, name).err(),
        auth.identify_caller(&headers).err().map(Reply::Unauthorized),
        parse_body(Ok(Bytes::copy_from_slice(body))).err(),
    ];
    refusals.into_iter().flatten().map(|reply| reply.into_response().status()).collect()
}

/// The README's answer table, row by row, through the router with backends in memory.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use axum::http::{Method, header};
    use couponrush_core::round_store::admission::ScriptError;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::config::ServeConfig;

    const SECRET: &str = "api-test-secret";
    const URL: &str = "/api/v1/events/shop/sale/issue";

    type Decision = Box<dyn Fn() -> Result<Outcome, IssueError> + Send + Sync>;

    /// Rounds in memory and a scripted decision; counts what reached the backends, so a
    /// refusal can be shown to have changed nothing.
    struct Fake {
        auth: Authenticator,
        metrics: Metrics,
        body_timeout: Duration,
        rounds: HashMap<EventId, Arc<LiveRound>>,
        lookup_fails: bool,
        decision: Decision,
        decisions: AtomicUsize,
        holding: Mutex<Option<Result<Holding, IssueError>>>,
        counts: Option<RoundCounts>,
    }

    fn shop_sale() -> EventId {
        EventId::new("shop", "sale").expect("valid name")
    }

    impl Fake {
        /// An open `kafka-async` round of 1,000 coupons for `shop/sale`.
        fn open(decision: impl Fn() -> Result<Outcome, IssueError> + Send + Sync + 'static) -> Self {
            Self::with_round(Strategy::KafkaAsync, 0, decision)
        }

        fn with_round(
            strategy: Strategy,
            start_ms: i64,
            decision: impl Fn() -> Result<Outcome, IssueError> + Send + Sync + 'static,
        ) -> Self {
            let config = ServeConfig { jwt_hs256_secret: Some(SECRET.to_owned()), ..ServeConfig::default() };
            let live = Arc::new(LiveRound::new(shop_sale().round(3), strategy, 1_000, 0, start_ms));
            Self {
                auth: Authenticator::from_config(&config).expect("auth config"),
                metrics: Metrics::register(&mut prometheus_client::registry::Registry::default()),
                body_timeout: Duration::from_millis(100),
                rounds: HashMap::from([(shop_sale(), live)]),
                lookup_fails: false,
                decision: Box::new(decision),
                decisions: AtomicUsize::new(0),
                holding: Mutex::new(None),
                counts: None,
            }
        }

        fn live(&self) -> &LiveRound {
            &self.rounds[&shop_sale()]
        }
    }

    impl Backends for Fake {
        fn auth(&self) -> &Authenticator {
            &self.auth
        }
        fn metrics(&self) -> &Metrics {
            &self.metrics
        }
        fn body_timeout(&self) -> Duration {
            self.body_timeout
        }
        fn sold_out_from_memory(&self, event: &EventId) -> Option<Strategy> {
            self.rounds.get(event).filter(|live| live.is_sold_out()).map(|live| live.strategy)
        }
        async fn lookup(&self, event: &EventId) -> Result<Option<Arc<LiveRound>>, IssueError> {
            if self.lookup_fails {
                return Err(IssueError::LookupEvent(refused()));
            }
            Ok(self.rounds.get(event).cloned())
        }
        async fn issue(
            self: Arc<Self>,
            _live: Arc<LiveRound>,
            _user: String,
            _attribution: Attribution,
        ) -> Result<Outcome, IssueError> {
            self.decisions.fetch_add(1, Ordering::SeqCst);
            (self.decision)()
        }
        async fn holding(&self, _live: &LiveRound, _user: &str) -> Result<Holding, IssueError> {
            self.holding.lock().expect("lock").take().expect("a test that GETs sets the holding")
        }
        async fn counts(&self, _live: &LiveRound) -> Result<Option<RoundCounts>, IssueError> {
            Ok(self.counts.clone())
        }
    }

    fn refused() -> redis::RedisError {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "test").into()
    }

    fn timed_out() -> redis::RedisError {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "test").into()
    }

    fn issued(seq: u32) -> Result<Outcome, IssueError> {
        Ok(Outcome::Admission(Admission::Issued { seq, slot: 1, remaining: 10, at_ms: 0 }))
    }

    fn never() -> Result<Outcome, IssueError> {
        panic!("this request must be answered before any decision")
    }

    fn token(user: &str) -> String {
        let claims = json!({"sub": user, "exp": couponrush_core::wall_clock_ms() / 1000 + 60});
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("token")
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Value,
    }

    impl Answer {
        fn word(&self) -> &str {
            self.body["status"].as_str().unwrap_or_default()
        }
        fn header(&self, name: header::HeaderName) -> Option<&str> {
            self.headers.get(name).and_then(|value| value.to_str().ok())
        }
    }

    async fn send(fake: &Arc<Fake>, method: Method, uri: &str, auth: Option<&str>, body: Body) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(user) = auth {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token(user)));
        }
        let response = app(fake.clone()).oneshot(request.body(body).expect("request")).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.expect("body");
        Answer { status, headers, body: serde_json::from_slice(&bytes).expect("every answer is JSON") }
    }

    async fn press(fake: &Arc<Fake>) -> Answer {
        send(fake, Method::POST, URL, Some("alice"), Body::empty()).await
    }

    #[tokio::test]
    async fn admitted_now_is_201_issued_with_seq_and_round() {
        let fake = Arc::new(Fake::open(|| issued(7)));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::CREATED, "ISSUED"));
        assert_eq!((answer.body["seq"].as_u64(), answer.body["round"].as_u64()), (Some(7), Some(3)));
        let labels = AnswerLabels { status: "ISSUED", strategy: "kafka-async" };
        assert_eq!(fake.metrics.answers.get_or_create(&labels).get(), 1, "the answer is counted");
    }

    #[tokio::test]
    async fn a_user_who_holds_one_gets_200_already_issued_with_the_same_seq() {
        let fake = Arc::new(Fake::open(|| Ok(Outcome::Admission(Admission::AlreadyIssued { seq: 7 }))));
        let answer = press(&fake).await;
        assert_eq!(
            (answer.status, answer.word(), answer.body["seq"].as_u64()),
            (StatusCode::OK, "ALREADY_ISSUED", Some(7))
        );
    }

    #[tokio::test]
    async fn joining_the_queue_is_202_queued_with_the_position() {
        let fake = Arc::new(Fake::with_round(Strategy::Queue, 0, || Ok(Outcome::Queued { position: 42 })));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::ACCEPTED, "QUEUED"));
        assert_eq!(answer.body["position"].as_u64(), Some(42));
    }

    #[tokio::test]
    async fn no_stock_left_is_410_sold_out_and_then_answered_from_memory_before_the_token() {
        let fake = Arc::new(Fake::open(|| Ok(Outcome::Admission(Admission::SoldOut))));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::GONE, "SOLD_OUT"));
        fake.live().mark_sold_out();
        // No token, and a body that would be a 400: a sold-out round still answers 410.
        let answer = send(&fake, Method::POST, URL, None, Body::from("[1]")).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::GONE, "SOLD_OUT"));
        assert_eq!(fake.decisions.load(Ordering::SeqCst), 1, "the second answer came from memory");
    }

    #[tokio::test]
    async fn before_the_start_is_409_not_started_with_starts_at_and_retry_after_from_memory() {
        let start_ms = couponrush_core::wall_clock_ms() + 3_600_000;
        let fake = Arc::new(Fake::with_round(Strategy::KafkaAsync, start_ms, never));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::CONFLICT, "NOT_STARTED"));
        assert_eq!(answer.body["startsAt"].as_str(), Some(rfc3339(start_ms).as_str()));
        let retry_after: u64 = answer.header(header::RETRY_AFTER).and_then(|s| s.parse().ok()).expect("Retry-After");
        assert!((3_590..=3_600).contains(&retry_after), "Retry-After {retry_after} ends at the opening");
        assert_eq!(fake.decisions.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_backends_not_started_and_ended_are_409() {
        let starts_at_ms = couponrush_core::wall_clock_ms() + 50;
        let fake = Arc::new(Fake::open(move || Ok(Outcome::Admission(Admission::NotStarted { starts_at_ms }))));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::CONFLICT, "NOT_STARTED"));
        assert_eq!(answer.header(header::RETRY_AFTER), Some("1"), "at least a second");
        let fake = Arc::new(Fake::open(|| Ok(Outcome::Admission(Admission::Ended))));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::CONFLICT, "ENDED"));
    }

    #[tokio::test]
    async fn an_unknown_event_route_or_method_is_a_json_404_or_405() {
        let fake = Arc::new(Fake::open(never));
        let answer = send(&fake, Method::POST, "/api/v1/events/shop/other/issue", Some("alice"), Body::empty()).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::NOT_FOUND, "UNKNOWN_EVENT"));
        let answer = send(&fake, Method::GET, "/api/v1/nothing-here", None, Body::empty()).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
        let answer = send(&fake, Method::DELETE, URL, Some("alice"), Body::empty()).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"));
    }

    #[tokio::test]
    async fn bad_tokens_and_bad_input_are_4xx_and_decide_nothing() {
        let fake = Arc::new(Fake::open(never));
        let answer = send(&fake, Method::POST, URL, None, Body::empty()).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
        assert_eq!(answer.header(header::WWW_AUTHENTICATE), Some("Bearer"));
        let bad = [
            ("/api/v1/events/shop/Sale/issue", Body::empty()),
            ("/api/v1/events/shop/%7Bsale%7D/issue", Body::empty()),
            (URL, Body::from("[]")),
            (URL, Body::from("{\"requestId\": 5}")),
            (URL, Body::from("{\"requestId\": \"\"}")),
            (URL, Body::from("{\"unknown\": 1}")),
        ];
        for (uri, body) in bad {
            let answer = send(&fake, Method::POST, uri, Some("alice"), body).await;
            assert_eq!((answer.status, answer.word()), (StatusCode::BAD_REQUEST, "BAD_REQUEST"), "{uri}");
        }
        let large = Body::from(format!("{{\"requestId\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES)));
        let answer = send(&fake, Method::POST, URL, Some("alice"), large).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE"));
        assert_eq!(fake.decisions.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_is_408_and_closes_the_connection() {
        let fake = Arc::new(Fake::open(never));
        let stalled = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let answer = send(&fake, Method::POST, URL, Some("alice"), stalled).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"));
        assert_eq!(answer.header(header::CONNECTION), Some("close"));
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_503_unavailable_with_retry_after() {
        let fake = Arc::new(Fake::open(|| Err(IssueError::LockTimeout)));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
        assert_eq!(answer.header(header::RETRY_AFTER), Some("1"));
        assert!(answer.body["message"].as_str().is_some_and(|m| m.contains("nothing was issued")));
        let fake = Arc::new(Fake { lookup_fails: true, ..Fake::open(never) });
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
    }

    #[tokio::test]
    async fn an_unconfirmed_write_is_503_outcome_unknown_never_nothing_issued() {
        let fake = Arc::new(Fake::open(|| Err(IssueError::Admit(ScriptError::Redis(timed_out())))));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::SERVICE_UNAVAILABLE, "OUTCOME_UNKNOWN"));
        assert_eq!(answer.header(header::RETRY_AFTER), Some("1"));
        assert!(answer.body["message"].as_str().is_some_and(|m| !m.contains("nothing was issued")));
    }

    /// A press while another press of the same user takes a coupon from another stock
    /// bucket, or one whose spill a newer press took over: the other press decides.
    #[tokio::test]
    async fn a_press_beside_the_users_spilling_one_is_503_outcome_unknown() {
        let pending = || Err(IssueError::SpillPending { retry_after_ms: 900 });
        for fake in [Fake::open(pending), Fake::open(|| Err(IssueError::SpillSuperseded))] {
            let answer = press(&Arc::new(fake)).await;
            assert_eq!((answer.status, answer.word()), (StatusCode::SERVICE_UNAVAILABLE, "OUTCOME_UNKNOWN"));
            assert_eq!(answer.header(header::RETRY_AFTER), Some("1"));
        }
        assert!(!IssueError::SpillPending { retry_after_ms: 900 }.needs_settling(), "the other press settles");
    }

    #[tokio::test]
    async fn a_round_whose_redis_state_was_lost_is_503_paused_for_five_seconds() {
        let fake = Arc::new(Fake::open(|| Err(IssueError::RoundRegressed { seq_in_redis: 3, seen: 9 })));
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
        assert_eq!(answer.header(header::RETRY_AFTER), Some("5"));
        // Once the issuer knows the keys vanished, it answers so without asking.
        let fake = Arc::new(Fake::open(never));
        fake.live().mark_vanished();
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.header(header::RETRY_AFTER)), (StatusCode::SERVICE_UNAVAILABLE, Some("5")));
    }

    #[tokio::test]
    async fn a_paused_round_is_503_paused_and_a_sold_out_one_stays_410() {
        let fake = Arc::new(Fake::open(never));
        fake.live().set_paused(true);
        let answer = press(&fake).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::SERVICE_UNAVAILABLE, "PAUSED"));
        assert_eq!(answer.header(header::RETRY_AFTER), Some("5"));
        fake.live().mark_sold_out();
        assert_eq!(press(&fake).await.status, StatusCode::GONE);
    }

    #[tokio::test]
    async fn get_tells_what_the_caller_holds() {
        let fake = Arc::new(Fake::open(never));
        let cases = [
            (Holding::Coupon { seq: Some(7), persisted: false }, StatusCode::OK, "ISSUED", json!(false)),
            (Holding::Coupon { seq: None, persisted: false }, StatusCode::OK, "NOT_ISSUED", Value::Null),
            (
                Holding::InQueue(Some(Outcome::Admission(Admission::AlreadyIssued { seq: 4 }))),
                StatusCode::OK,
                "ISSUED",
                json!(true),
            ),
            (Holding::InQueue(Some(Outcome::Queued { position: 9 })), StatusCode::ACCEPTED, "QUEUED", Value::Null),
            (Holding::InQueue(None), StatusCode::OK, "NOT_ISSUED", Value::Null),
        ];
        for (holding, status, word, persisted) in cases {
            let label = format!("{holding:?}");
            *fake.holding.lock().expect("lock") = Some(Ok(holding));
            let answer = send(&fake, Method::GET, URL, Some("alice"), Body::empty()).await;
            assert_eq!((answer.status, answer.word()), (status, word), "{label}");
            assert_eq!(answer.body["persisted"], persisted, "{label}");
        }
        let answer = send(&fake, Method::GET, URL, None, Body::empty()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn get_of_an_event_is_its_public_state() {
        let meta = RoundMeta {
            stock: 1_000,
            remaining: 0,
            seq: 1_000,
            per_user: 1,
            start_ms: 1_700_000_000_000,
            end_ms: None,
            paused: false,
            buckets: 1,
        };
        for (remaining, state) in [(10, "LIVE"), (0, "SOLD_OUT")] {
            let fake =
                Arc::new(Fake { counts: Some(RoundCounts { meta: meta.clone(), remaining }), ..Fake::open(never) });
            let answer = send(&fake, Method::GET, "/api/v1/events/shop/sale", None, Body::empty()).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body["state"].as_str(), Some(state));
            assert_eq!(
                (answer.body["stock"].as_u64(), answer.body["remaining"].as_u64()),
                (Some(1_000), Some(remaining.into()))
            );
            assert_eq!(answer.body["round"].as_u64(), Some(3));
        }
        let fake = Arc::new(Fake::open(never));
        let answer = send(&fake, Method::GET, "/api/v1/events/shop/sale", None, Body::empty()).await;
        assert_eq!((answer.status, answer.word()), (StatusCode::NOT_FOUND, "UNKNOWN_EVENT"), "keys gone");
    }
}
