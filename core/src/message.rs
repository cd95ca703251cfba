//! The Kafka message that carries an admitted coupon from the issuer to the consumer:
//! small, versioned JSON, keyed by user id.

use serde::{Deserialize, Serialize};

use crate::event::{EventId, NameError, RoundId, check_user_id};

/// The only message version this build writes; the consumer dead-letters others.
pub const VERSION: u8 = 1;

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
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a coupon message")]
    Json(#[from] serde_json::Error),
    #[error("message version {0} is not supported (expected {VERSION})")]
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
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and validates a message; anything that fails goes to the dead-letter topic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: IssuedCoupon = serde_json::from_slice(bytes)?;
        if message.v != VERSION {
            return Err(DecodeError::Version(message.v));
        }
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
        let mut bad = message.clone();
        bad.v = 2;
        assert!(matches!(IssuedCoupon::decode(&bad.encode()), Err(DecodeError::Version(2))));
        let mut bad = message.clone();
        bad.user = "a\u{0}b".into();
        assert!(IssuedCoupon::decode(&bad.encode()).is_err());
        let mut bad = message;
        bad.seq = 0;
        assert!(IssuedCoupon::decode(&bad.encode()).is_err());
        Ok(())
    }
}
