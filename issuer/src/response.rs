//! Every answer the API gives: one JSON shape (`status`, a human `message`, and the
//! fields that outcome has) and one match from outcome to HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API answer. Errors are answers too: each has a `status` word and a message.
#[derive(Debug)]
pub enum Reply {
    Issued {
        seq: u32,
        round: u32,
    },
    AlreadyIssued {
        seq: u32,
        round: u32,
    },
    Queued {
        position: u64,
    },
    SoldOut,
    NotStarted {
        starts_at_ms: i64,
        retry_after_s: u64,
    },
    Ended,
    UnknownEvent,
    Unauthorized(&'static str),
    BadRequest(String),
    TooLarge,
    /// The body did not arrive within the body timeout; the connection is closed.
    BodyTimeout,
    NotFound,
    MethodNotAllowed,
    /// A backend did not answer; nothing was admitted.
    Unavailable,
    /// A backend did not confirm in time: the request may or may not have been admitted.
    /// A retry is safe and tells (the same seq comes back if it was, while the round has
    /// stock); `GET` tells in any case.
    OutcomeUnknown,
    /// The round's state in Redis vanished or went back in time: admissions are paused
    /// until it is recovered, so that no seq is handed out twice. Nothing was admitted.
    RoundPaused,
    /// The event's owner paused admissions (`spec.paused`).
    Paused,
    /// A fault of ours; the body says nothing more (the log does).
    Internal,
    /// `GET …/issue`: what this user holds.
    MyResult {
        seq: Option<u32>,
        persisted: bool,
        round: u32,
    },
    /// `GET` of an event: its public state.
    EventState(EventState),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventState {
    pub event: String,
    pub round: u32,
    pub strategy: &'static str,
    /// NOT_STARTED, LIVE, PAUSED, SOLD_OUT or ENDED.
    pub state: &'static str,
    pub stock: u32,
    pub remaining: u32,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    status: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    round: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    starts_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persisted: Option<bool>,
}

/// RFC 3339 text of an epoch-milliseconds instant.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

impl Reply {
    /// The `status` word of the body, also the metrics label.
    pub fn status_word(&self) -> &'static str {
        match self {
            Reply::Issued { .. } => "ISSUED",
            Reply::AlreadyIssued { .. } => "ALREADY_ISSUED",
            Reply::Queued { .. } => "QUEUED",
            Reply::SoldOut => "SOLD_OUT",
            Reply::NotStarted { .. } => "NOT_STARTED",
            Reply::Ended => "ENDED",
            Reply::UnknownEvent => "UNKNOWN_EVENT",
            Reply::Unauthorized(_) => "UNAUTHORIZED",
            Reply::BadRequest(_) => "BAD_REQUEST",
            Reply::TooLarge => "TOO_LARGE",
            Reply::BodyTimeout => "REQUEST_TIMEOUT",
            Reply::NotFound => "NOT_FOUND",
            Reply::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Reply::Unavailable | Reply::RoundPaused => "UNAVAILABLE",
            Reply::Paused => "PAUSED",
            Reply::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Reply::Internal => "INTERNAL",
            Reply::MyResult { seq: Some(_), .. } => "ISSUED",
            Reply::MyResult { seq: None, .. } => "NOT_ISSUED",
            Reply::EventState(_) => "OK",
        }
    }

    fn status_code(&self) -> StatusCode {
        match self {
            Reply::Issued { .. } => StatusCode::CREATED,
            Reply::AlreadyIssued { .. } | Reply::MyResult { .. } | Reply::EventState(_) => StatusCode::OK,
            Reply::Queued { .. } => StatusCode::ACCEPTED,
            Reply::SoldOut => StatusCode::GONE,
            Reply::NotStarted { .. } | Reply::Ended => StatusCode::CONFLICT,
            Reply::UnknownEvent | Reply::NotFound => StatusCode::NOT_FOUND,
            Reply::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Reply::BadRequest(_) => StatusCode::BAD_REQUEST,
            Reply::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reply::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reply::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reply::Unavailable | Reply::OutcomeUnknown | Reply::RoundPaused | Reply::Paused => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reply::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(self) -> Body {
        let status = self.status_word();
        match self {
            Reply::Issued { seq, round } => {
                Body { status, message: "coupon issued", seq: Some(seq), round: Some(round), ..Body::default() }
            }
            Reply::AlreadyIssued { seq, round } => Body {
                status,
                message: "you already hold a coupon of this round",
                seq: Some(seq),
                round: Some(round),
                ..Body::default()
            },
            Reply::Queued { position } => Body {
                status,
                message: "you are in the queue; poll GET on this URL for the result",
                position: Some(position),
                ..Body::default()
            },
            Reply::SoldOut => Body { status, message: "all coupons of this round have been issued", ..Body::default() },
            Reply::NotStarted { starts_at_ms, .. } => Body {
                status,
                message: "this round has not started yet",
                starts_at: Some(rfc3339(starts_at_ms)),
                ..Body::default()
            },
            Reply::Ended => Body { status, message: "this round has ended", ..Body::default() },
            Reply::UnknownEvent => Body { status, message: "no such event", ..Body::default() },
            Reply::Unauthorized(why) => Body { status, message: why, ..Body::default() },
            Reply::BadRequest(detail) => {
                Body { status, message: "bad request", detail: Some(detail), ..Body::default() }
            }
            Reply::TooLarge => Body { status, message: "request body too large", ..Body::default() },
            Reply::BodyTimeout => Body { status, message: "the request body arrived too slowly", ..Body::default() },
            Reply::NotFound => Body { status, message: "no such resource", ..Body::default() },
            Reply::MethodNotAllowed => {
                Body { status, message: "method not allowed on this resource", ..Body::default() }
            }
            Reply::Unavailable => {
                Body { status, message: "temporarily unavailable; nothing was issued, please retry", ..Body::default() }
            }
            Reply::OutcomeUnknown => Body {
                status,
                message: "the backend did not confirm in time: you may or may not have a coupon; GET this URL to see whether you hold one (a retry returns it too, unless the round has sold out meanwhile: then it answers SOLD_OUT)",
                ..Body::default()
            },
            Reply::RoundPaused => Body {
                status,
                message: "admissions to this round are paused: its state in Redis was lost; nothing was issued, please retry later",
                ..Body::default()
            },
            Reply::Paused => Body {
                status,
                message: "admissions to this round are paused by its organiser; nothing was issued, please retry later",
                ..Body::default()
            },
            Reply::Internal => Body { status, message: "internal error", ..Body::default() },
            Reply::MyResult { seq, persisted, round } => Body {
                status,
                message: if seq.is_some() {
                    "you hold a coupon of this round"
                } else {
                    "you hold no coupon of this round"
                },
                seq,
                round: Some(round),
                persisted: seq.map(|_| persisted),
                ..Body::default()
            },
            Reply::EventState(_) => Body { status, message: "", ..Body::default() },
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let code = self.status_code();
        let extra_header = match &self {
            Reply::NotStarted { retry_after_s, .. } => Some((header::RETRY_AFTER, HeaderValue::from(*retry_after_s))),
            Reply::Unavailable | Reply::OutcomeUnknown => Some((header::RETRY_AFTER, HeaderValue::from_static("1"))),
            Reply::RoundPaused | Reply::Paused => Some((header::RETRY_AFTER, HeaderValue::from_static("5"))),
            Reply::Unauthorized(_) => Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))),
            // The rest of the body may still trickle in: hyper closes after this answer.
            Reply::BodyTimeout => Some((header::CONNECTION, HeaderValue::from_static("close"))),
            _ => None,
        };
        let mut response = match self {
            Reply::EventState(state) => (code, axum::Json(state)).into_response(),
            other => (code, axum::Json(other.body())).into_response(),
        };
        if let Some((name, value)) = extra_header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
