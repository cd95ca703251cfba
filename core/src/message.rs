//! The Kafka message that carries an admitted coupon from the issuer to the consumer:
//! small, versioned JSON, keyed by user id.
//!
//! Version 2 adds the audit trail: the id of the admitted request and its token's `jti`,
//! both optional (a re-published coupon has neither). Why a version bump rather than
//! optional fields in version 1: a version-1 reader refuses unknown fields
//! (`deny_unknown_fields`), so it would dead-letter a v1 message carrying them all the
//! same, only under a vaguer reason. This build writes 2 and reads 1 and 2 (a v1 message
//! has no audit fields; its row gets NULLs), so a rolling upgrade works when readers go
//! first: consumers, and the operator (its Redis recovery reads the topic), then the
//! issuers. A v1 consumer that meets a v2 message dead-letters it with "message version
//! 2 is not supported"; the dead letter keeps the payload.

use serde::{Deserialize, Serialize};

use crate::event::{EventId, NameError, RoundId, check_user_id};

/// The message version this build writes.
pub const VERSION: u8 = 2;
/// The oldest version this build still reads; the consumer dead-letters anything
/// outside `OLDEST_READABLE..=VERSION`.
pub const OLDEST_READABLE: u8 = 1;

/// Longest request id or `jti` recorded, in bytes (the `VARBINARY(64)` columns).
pub const MAX_AUDIT_ID_BYTES: usize = 64;

/// Whether `id` may be recorded as a request id or `jti`: 1 to [`MAX_AUDIT_ID_BYTES`]
/// bytes, no control characters (nothing that could forge a log line or a CSV row).
pub fn valid_audit_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_AUDIT_ID_BYTES && !id.chars().any(char::is_control)
}

/// Who asked for an admission: the request id and the token's `jti`, each only if it
/// passes [`valid_audit_id`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub request_id: Option<String>,
    pub jti: Option<String>,
}

impl Attribution {
    /// Keeps each id only if it is recordable.
    pub fn new(request_id: Option<String>, jti: Option<String>) -> Self {
        Self { request_id: request_id.filter(|id| valid_audit_id(id)), jti: jti.filter(|id| valid_audit_id(id)) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCoupon {
    pub v: u8,
    /// `namespace/name`
    pub event: String,
    pub round: u32,
    pub user: String,
    pub seq: u32,
    /// Which of the user's `per_user` coupons this is (1-based).
    pub slot: u32,
    /// Admission time on the Redis clock, milliseconds since the epoch.
    pub issued_at_ms: i64,
    /// v2: the admitted request's id (the client's `requestId`, or one the issuer made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// v2: the `jti` of the admitted request's token, when it had a recordable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a coupon message")]
    Json(#[from] serde_json::Error),
    #[error("message version {0} is not supported (expected {OLDEST_READABLE} to {VERSION})")]
    Version(u8),
    #[error("invalid field")]
    Field(#[from] NameError),
    #[error("seq and slot must be at least 1")]
    ZeroCounter,
}

impl IssuedCoupon {
    pub fn new(round: &RoundId, user: &str, seq: u32, slot: u32, issued_at_ms: i64) -> Self {
        Self {
            v: VERSION,
            event: round.event.to_string(),
            round: round.round,
            user: user.to_owned(),
            seq,
            slot,
            issued_at_ms,
            request_id: None,
            jti: None,
        }
    }

    /// The same coupon, attributed to the request that was admitted.
    pub fn attributed(self, attribution: Attribution) -> Self {
        Self { request_id: attribution.request_id, jti: attribution.jti, ..self }
    }

    pub fn attribution(&self) -> Attribution {
        Attribution { request_id: self.request_id.clone(), jti: self.jti.clone() }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and validates a message; anything that fails goes to the dead-letter topic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut message: IssuedCoupon = serde_json::from_slice(bytes)?;
        if !(OLDEST_READABLE..=VERSION).contains(&message.v) {
            return Err(DecodeError::Version(message.v));
        }
        // The coupon is what matters: an audit id out of bounds (no issuer writes one) is
        // dropped rather than costing the row, and never reaches the bounded columns.
        let attribution = Attribution::new(message.request_id.take(), message.jti.take());
        (message.request_id, message.jti) = (attribution.request_id, attribution.jti);
        EventId::parse_qualified(&message.event)?;
        check_user_id(&message.user)?;
        if message.seq == 0 || message.slot == 0 {
            return Err(DecodeError::ZeroCounter);
        }
        Ok(message)
    }

    pub fn round_id(&self) -> Result<RoundId, NameError> {
        Ok(EventId::parse_qualified(&self.event)?.round(self.round))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_validates() -> anyhow::Result<()> {
        let round = EventId::new("ns", "sale")?.round(2);
        let message = IssuedCoupon::new(&round, "u-1", 5, 1, 1_700_000_000_000);
        assert_eq!(IssuedCoupon::decode(&message.encode())?, message);
        assert_eq!(message.round_id()?, round);

        assert!(IssuedCoupon::decode(b"not json").is_err());
        for version in [0, 3] {
            let mut bad = message.clone();
            bad.v = version;
            assert!(matches!(IssuedCoupon::decode(&bad.encode()), Err(DecodeError::Version(v)) if v == version));
        }
        let mut bad = message.clone();
        bad.user = "a\u{0}b".into();
        assert!(IssuedCoupon::decode(&bad.encode()).is_err());
        let mut bad = message;
        bad.seq = 0;
        assert!(IssuedCoupon::decode(&bad.encode()).is_err());
        Ok(())
    }

    /// What a version-1 issuer (before the audit trail) wrote: still read, unattributed.
    #[test]
    fn reads_version_1_as_older_issuers_write_it() -> anyhow::Result<()> {
        let v1 = br#"{"v":1,"event":"ns/sale","round":2,"user":"u-1","seq":5,"slot":1,"issued_at_ms":1700000000000}"#;
        let message = IssuedCoupon::decode(v1)?;
        assert_eq!(message.v, 1);
        assert_eq!((message.seq, message.user.as_str()), (5, "u-1"));
        assert_eq!(message.attribution(), Attribution::default());
        Ok(())
    }

    #[test]
    fn version_2_carries_the_attribution_and_omits_what_is_absent() -> anyhow::Result<()> {
        let round = EventId::new("ns", "sale")?.round(2);
        let attributed = IssuedCoupon::new(&round, "u-1", 5, 1, 1_700_000_000_000)
            .attributed(Attribution::new(Some("req-1".into()), Some("jti-1".into())));
        let json: serde_json::Value = serde_json::from_slice(&attributed.encode())?;
        assert_eq!(json["v"], 2);
        assert_eq!((json["request_id"].as_str(), json["jti"].as_str()), (Some("req-1"), Some("jti-1")));
        assert_eq!(IssuedCoupon::decode(&attributed.encode())?, attributed);

        // A re-published coupon (reconciliation) has no request: the fields are left out.
        let unattributed = IssuedCoupon::new(&round, "u-1", 5, 1, 1_700_000_000_000);
        let json: serde_json::Value = serde_json::from_slice(&unattributed.encode())?;
        assert!(json.get("request_id").is_none() && json.get("jti").is_none(), "{json}");
        assert_eq!(IssuedCoupon::decode(&unattributed.encode())?.attribution(), Attribution::default());
        Ok(())
    }

    #[test]
    fn audit_ids_are_bounded_and_an_unrecordable_one_is_dropped_not_the_coupon() -> anyhow::Result<()> {
        assert!(valid_audit_id("req-1"));
        assert!(valid_audit_id(&"x".repeat(MAX_AUDIT_ID_BYTES)));
        assert!(valid_audit_id("주문-1"));
        assert!(!valid_audit_id(""));
        assert!(!valid_audit_id(&"x".repeat(MAX_AUDIT_ID_BYTES + 1)));
        assert!(!valid_audit_id(&"한".repeat(22)), "66 bytes, though 22 characters");
        assert!(!valid_audit_id("a\nb"));
        assert!(!valid_audit_id("a\u{7f}"));
        assert_eq!(
            Attribution::new(Some("a\rb".into()), Some("j".into())),
            Attribution { request_id: None, jti: Some("j".into()) }
        );

        let round = EventId::new("ns", "sale")?.round(1);
        let mut message = IssuedCoupon::new(&round, "u-1", 1, 1, 0);
        message.request_id = Some("x".repeat(1000));
        message.jti = Some("j\u{0}".into());
        let decoded = IssuedCoupon::decode(&message.encode())?;
        assert_eq!(decoded.attribution(), Attribution::default());
        assert_eq!(decoded.seq, 1);
        Ok(())
    }
}
