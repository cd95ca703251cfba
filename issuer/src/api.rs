//! The HTTP API: `POST /api/v1/events/{namespace}/{name}/issue` and its `GET`, the
//! event's public state, plus JSON answers for unknown routes and wrong methods.
//! Bad input is turned away before any backend is asked.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use couponrush_core::admission::Admission;
use couponrush_core::db;
use couponrush_core::event::{EventId, Strategy};
use couponrush_core::keys::winner_field;
use couponrush_core::message::{Attribution, MAX_AUDIT_ID_BYTES, valid_audit_id};
use couponrush_core::prewarm::round_meta;
use redis::AsyncCommands;
use serde::Deserialize;

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::metrics::AnswerLabels;
use crate::queue;
use crate::response::{EventState, Reply, rfc3339};
use crate::state::AppState;
use crate::strategies::{self, Outcome};

/// Largest request body accepted; an issue request needs at most a few fields.
pub const MAX_BODY_BYTES: usize = 1024;

/// The API router; tests drive it with `oneshot`, `run` serves it.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/events/{namespace}/{name}/issue", post(issue).get(my_result))
        .route("/api/v1/events/{namespace}/{name}", get(event_state))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .method_not_allowed_fallback(|| async { Reply::MethodNotAllowed })
        .fallback(|| async { Reply::NotFound })
        .with_state(state)
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

impl FromRequest<Arc<AppState>> for TimedBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Infallible> {
        let read = Bytes::from_request(request, state);
        Ok(TimedBody(match tokio::time::timeout(state.body_timeout, read).await {
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

async fn lookup(state: &AppState, event: &EventId) -> Result<Arc<LiveRound>, Reply> {
    match state.events.get(event).await {
        Ok(Some(live)) => Ok(live),
        Ok(None) => Err(Reply::UnknownEvent),
        Err(error) => Err(unavailable(state, &IssueError::LookupEvent(error))),
    }
}

/// The 503 for a failed request, saying only what is known: nothing admitted, outcome
/// unknown, or the round paused.
fn unavailable(state: &AppState, error: &IssueError) -> Reply {
    state.metrics.backend_errors.get_or_create(&crate::metrics::ErrorLabels { kind: error.kind() }).inc();
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

async fn issue(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Reply {
    let started = Instant::now();
    let (reply, strategy) = decide(&state, &namespace, &name, &headers, body).await;
    let labels = AnswerLabels { status: reply.status_word(), strategy: strategy.map_or("none", Strategy::as_str) };
    state.metrics.admission_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    state.metrics.answers.get_or_create(&labels).inc();
    reply
}

async fn decide(
    state: &Arc<AppState>,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, Reply>,
) -> (Reply, Option<Strategy>) {
    let event = event_id(namespace, name);
    // A sold-out round is public knowledge (its state is on GET /api/v1/events/...), and
    // after 10:00 it is nearly every request: answer it from memory before spending a
    // signature check on the token. Nothing is admitted or changed either way.
    if let Some(strategy) = event.as_ref().ok().and_then(|event| state.events.sold_out_from_memory(event)) {
        return (Reply::SoldOut, Some(strategy));
    }
    let caller = match state.auth.identify_caller(headers) {
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
    let live = match lookup(state, &event).await {
        Ok(live) => live,
        Err(reply) => return (reply, None),
    };
    if live.is_sold_out() {
        return (Reply::SoldOut, Some(live.strategy));
    }
    if live.has_vanished() {
        return (unavailable(state, &IssueError::RoundVanished), Some(live.strategy));
    }
    if live.is_paused() {
        return (Reply::Paused, Some(live.strategy));
    }
    // Early presses (nearly all traffic before the opening) need no Redis call.
    if let Some(starts_at_ms) = live.opens_after(couponrush_core::wall_clock_ms()) {
        return (not_started(starts_at_ms), Some(live.strategy));
    }
    // axum drops this future when the client hangs up. Everything from the admission on
    // runs in its own task, so an admitted coupon is always published (or rolled back),
    // a counter place always given back, and an unknown outcome settled, whoever is
    // still listening.
    let admission = {
        let (state, live, user, attribution) = (state.clone(), live.clone(), user.clone(), attribution.clone());
        let guard = state.admissions.enter();
        tokio::spawn(async move {
            let _guard = guard;
            let result = strategies::issue(&state, &live, &user, &attribution).await;
            if let Err(error) = &result
                && error.outcome_unknown()
                && live.strategy == Strategy::KafkaAsync
            {
                let guard = state.admissions.enter();
                tokio::spawn(async move {
                    let _guard = guard;
                    strategies::settle_unknown(&state, &live, &user).await;
                });
            }
            result
        })
    };
    let reply = match admission.await.map_err(IssueError::Panicked).and_then(|issued| issued) {
        Ok(outcome) => outcome_reply(outcome, live.round.round),
        Err(error) => unavailable(state, &error),
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
async fn my_result(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let user = match state.auth.identify(&headers) {
        Ok(user) => user,
        Err(why) => return Reply::Unauthorized(why),
    };
    let event = match event_id(&namespace, &name) {
        Ok(event) => event,
        Err(reply) => return reply,
    };
    let live = match lookup(&state, &event).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    match read_result(&state, &live, &user).await {
        Ok(reply) => reply,
        Err(error) => unavailable(&state, &error),
    }
}

async fn read_result(state: &AppState, live: &LiveRound, user: &str) -> Result<Reply, IssueError> {
    let round = live.round.round;
    if live.strategy == Strategy::Queue {
        match queue::standing(state, live, user).await? {
            Some(Outcome::Admission(Admission::AlreadyIssued { seq })) => {
                return Ok(Reply::MyResult { seq: Some(seq), persisted: true, round });
            }
            Some(outcome) => return Ok(outcome_reply(outcome, round)),
            None => {
                return Ok(Reply::MyResult { seq: None, persisted: false, round });
            }
        }
    }
    let persisted = db::user_seqs(&state.db, &live.round, user).await.map_err(IssueError::Database)?;
    if live.strategy != Strategy::KafkaAsync {
        return Ok(Reply::MyResult { seq: persisted.last().copied(), persisted: true, round });
    }
    // The latest coupon the user holds (the highest slot), as for the other strategies.
    let mut redis = state.redis.clone();
    let per_user: Option<u32> = redis.hget(&live.keys.meta, "per_user").await.map_err(IssueError::ReadResult)?;
    let fields: Vec<String> = (1..=per_user.unwrap_or(1).max(1)).map(|slot| winner_field(user, slot)).collect();
    let held: Vec<Option<u32>> = redis::cmd("HMGET")
        .arg(&live.keys.winners)
        .arg(&fields)
        .query_async(&mut redis)
        .await
        .map_err(IssueError::ReadResult)?;
    Ok(match held.into_iter().flatten().last() {
        Some(seq) => Reply::MyResult { seq: Some(seq), persisted: persisted.contains(&seq), round },
        None => Reply::MyResult { seq: None, persisted: false, round },
    })
}

/// `GET /api/v1/events/{namespace}/{name}`: the current round's public state.
async fn event_state(State(state): State<Arc<AppState>>, Path((namespace, name)): Path<(String, String)>) -> Reply {
    let event = match event_id(&namespace, &name) {
        Ok(event) => event,
        Err(reply) => return reply,
    };
    let live = match lookup(&state, &event).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let mut redis = state.redis.clone();
    let meta = match round_meta(&mut redis, &live.keys).await {
        Ok(Some(meta)) => meta,
        Ok(None) => return Reply::UnknownEvent,
        Err(error) => return unavailable(&state, &IssueError::ReadResult(error)),
    };
    // Where the counts live is a fact of the strategy (the operator reads the same place).
    let remaining = if live.strategy.counts_in_redis() {
        meta.remaining
    } else {
        match db::round_row(&state.db, &live.round).await {
            Ok(Some(row)) => row.stock.saturating_sub(row.issued),
            Ok(None) => return Reply::UnknownEvent,
            Err(error) => return unavailable(&state, &IssueError::Database(error)),
        }
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
